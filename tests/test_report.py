"""memf.report: the stratified paired bootstrap, tables recomputed from pooled fold predictions, verdicts,
ceilings, entity importance, the tuning record and the figures."""

import json

import numpy as np
import polars as pl
import pytest
import torch
from scipy.stats import spearmanr
from sklearn import metrics as skm

from memf.core.io import read_json, write_json, write_parquet
from memf.core.metrics import METRICS, regression_metrics
from memf.data.folds import split_of
from memf.padding.store import write_padded
from memf.report.bootstrap import Interval, paired_differences, resample_chunks, resampled_metrics, verdict
from memf.report.budget import expected_max
from memf.report.figures import draw_figures
from memf.report.tables import ORACLE_LABEL, build_tables, settings_summary
from memf.training.fit import JobSpec, fit_experiment
from memf.training.matrix import experiments_from_config, run_dir, tuning_dir
from memf.training.neural import NeuralFitter
from memf.training.runs import predictions_frame, write_run
from memf.training.settings import TuningSettings, parse_space
from train_support import tiny_builder, tiny_padded

torch.set_num_threads(1)
SK = {
    "mae": skm.mean_absolute_error, "mse": skm.mean_squared_error, "mape": skm.mean_absolute_percentage_error,
    "r2": skm.r2_score, "evs": skm.explained_variance_score,
    "spearman": lambda y, p: spearmanr(y, p).statistic,
}
FOLDS = [0, 1, 2, 3, 4]


def resample_indices(groups, n_boot, seed):
    """The resamples as one [n_boot, N] matrix, as the bootstrap drew them before it went by chunks (commit
    7df2306): the reference the chunks are checked against."""
    groups = np.asarray(groups)
    rng = np.random.default_rng(seed)
    idx = np.empty((n_boot, len(groups)), dtype=np.int64)
    for g in np.unique(groups):
        members = np.flatnonzero(groups == g)
        idx[:, members] = members[rng.integers(0, len(members), size=(n_boot, len(members)))]
    return idx


def paired_difference_at_once(y_true, preds_a, preds_b, idx, level=0.95):
    """Commit 7df2306's paired difference on a [n_boot, N] matrix of resamples (every model's resampled metrics
    recomputed per comparison): the reference the chunked pass is checked against."""
    point_a = [regression_metrics(y_true, p) for p in preds_a]
    point_b = [regression_metrics(y_true, p) for p in preds_b]
    boot_a = [resampled_metrics(y_true, p, idx) for p in preds_a]
    boot_b = [resampled_metrics(y_true, p, idx) for p in preds_b]
    tail = (1 - level) / 2 * 100
    out = {}
    for name in METRICS:
        diff = float(np.mean([m[name] for m in point_a]) - np.mean([m[name] for m in point_b]))
        boot = np.mean([b[name] for b in boot_a], axis=0) - np.mean([b[name] for b in boot_b], axis=0)
        lo, hi = np.percentile(boot, [tail, 100 - tail])
        out[name] = Interval(diff, float(lo), float(hi))
    return out


def test_resampled_metrics_equal_the_point_functions_on_every_resample():
    rng = np.random.default_rng(0)
    y = rng.normal(5, 1, 30)
    p = y + rng.normal(0, 0.5, 30)
    idx = resample_indices(np.arange(30) % 3, 25, seed=1)
    got = resampled_metrics(y, p, idx)
    for name, fn in SK.items():
        np.testing.assert_allclose(got[name], [fn(y[i], p[i]) for i in idx], rtol=1e-10, atol=1e-12)


def test_resamples_stay_within_their_fold_and_chunks_draw_what_one_matrix_draws():
    groups = np.repeat([0, 1, 2], [5, 10, 15])[np.random.default_rng(3).permutation(30)]
    idx = resample_indices(groups, 50, seed=0)
    assert (groups[idx] == groups[None, :]).all()  # every position draws from its own fold
    assert len(np.unique(idx[:, groups == 0])) > 1
    for chunk in (1, 7, 50, 80):
        chunks = list(resample_chunks(groups, 50, 0, chunk))
        assert max(len(c) for c in chunks) == min(chunk, 50)
        np.testing.assert_array_equal(np.concatenate(chunks), idx)
    with pytest.raises(ValueError, match="1 streams, 5 resamples"):
        next(resample_chunks(np.zeros(1), 5, 0, 2))


def test_the_chunked_pass_gives_the_intervals_of_the_one_matrix_bootstrap():
    """Every row against one reference in one chunked pass: exactly the intervals of commit 7df2306's bootstrap."""
    rng = np.random.default_rng(4)
    n = 150
    y = np.round(rng.normal(5, 1, n), 1)  # ties, as log sales of equal counts have
    groups = np.arange(n) % 5
    reference = y[None, :] + rng.normal(0, 0.4, (3, n))
    rows = {"a": y[None, :] + rng.normal(0, 0.5, (2, n)), "b": y[None, :] + rng.normal(0, 0.3, (1, n)),
            "c": np.round(y[None, :] + rng.normal(0, 0.6, (2, n)), 0)}
    idx = resample_indices(groups, 120, seed=9)
    for chunk in (None, 1, 13):
        got = paired_differences(y, groups, rows, reference, 120, 9, chunk=chunk)
        for name, preds in rows.items():
            assert got[name] == paired_difference_at_once(y, preds, reference, idx), (name, chunk)


def test_bootstrap_interval_covers_the_true_difference():
    """A's errors have sd 0.5, B's 0.3: the true MSE difference is 0.25 - 0.09 = 0.16 and the MAE difference
    (0.5 - 0.3) * sqrt(2 / pi). Over independent test sets the 95% interval should cover them about 95% of the time."""
    true = {"mse": 0.25 - 0.09, "mae": 0.2 * np.sqrt(2 / np.pi)}
    rng = np.random.default_rng(0)
    covered = {name: 0 for name in true}
    n_rep, n = 40, 200
    for rep in range(n_rep):
        y = rng.normal(5, 1, n)
        a = y[None, :] + rng.normal(0, 0.5, (2, n))  # two seeds
        b = y[None, :] + rng.normal(0, 0.3, (3, n))  # three seeds
        diffs = paired_differences(y, np.arange(n) % 5, {"a": a}, b, 300, seed=rep)["a"]
        for name in true:
            iv = diffs[name]
            assert iv.lo <= iv.diff <= iv.hi
            covered[name] += iv.lo <= true[name] <= iv.hi
    for name, count in covered.items():
        assert count / n_rep >= 0.85, (name, count)


def test_identical_models_give_an_interval_around_zero_and_no_verdict():
    rng = np.random.default_rng(2)
    y = rng.normal(5, 1, 100)
    p = y + rng.normal(0, 0.4, (1, 100))
    for iv in paired_differences(y, np.zeros(100), {"p": p}, p, 200, 0)["p"].values():
        assert iv.diff == iv.lo == iv.hi == 0.0
    assert verdict(Interval(0.0, 0.0, 0.0), True) == "not separable"
    assert verdict(Interval(0.1, 0.02, 0.2), True, 0.01) == "better"
    assert verdict(Interval(0.1, 0.02, 0.2), False, 0.01) == "worse"
    assert verdict(Interval(-0.1, -0.2, -0.02), True, 0.01) == "worse"


@pytest.mark.parametrize(("lo", "hi", "expected"), [
    (0.012, 0.2, "better"), (0.008, 0.2, "borderline"), (-0.008, 0.2, "borderline"), (-0.2, -0.012, "worse"),
    (-0.2, -0.008, "borderline"), (-0.2, 0.008, "borderline"), (-0.2, 0.2, "not separable"),
])
def test_a_verdict_whose_interval_ends_within_the_tolerance_of_zero_is_borderline(lo, hi, expected):
    assert verdict(Interval((lo + hi) / 2, lo, hi), True, tolerance=0.01) == expected


def test_the_readmes_verdict_that_flipped_between_two_machines_reads_borderline_on_both():
    # Gradient boosting on mean-pooled features against MEMF: the README's run, and a fresh clone elsewhere (issue 23).
    assert verdict(Interval(0.035, -0.002, 0.073), True) == verdict(Interval(0.038, 0.0004, 0.077), True) == "borderline"


def test_expected_max_is_the_dodge_estimator():
    scores = np.array([0.1, 0.5, 0.3])
    assert expected_max(scores, 1) == pytest.approx(scores.mean())
    # Brute force over every draw of 2 trials with replacement.
    draws = [max(a, b) for a in scores for b in scores]
    assert expected_max(scores, 2) == pytest.approx(np.mean(draws))
    assert expected_max(scores, 50) == pytest.approx(0.5, abs=1e-6)


def test_settings_summary():
    params = {0: {"train.lr": 0.001, "model.width": 32}, 1: {"train.lr": 0.004, "model.width": 32},
              2: {"train.lr": 0.002, "model.width": 16}}
    assert settings_summary(params) == "width=32 (2/3), lr 0.001-0.004"
    assert settings_summary({0: {}, 1: {}}) == ""


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A small matrix over 5 folds: a trained and tuned 'full' model (2 seeds), leave-one-out runs with synthetic
    predictions whose quality follows a known entity order, a reference, a latent row and the ground-truth files."""
    root = tmp_path_factory.mktemp("report")
    padded = tiny_padded(100)
    write_padded(root / "demo.h5", padded)
    rng = np.random.default_rng(0)
    expected = padded.target + rng.normal(0, 0.2, len(padded))
    gt = root / "ground_truth.parquet"
    write_parquet(gt, pl.DataFrame({"stream_id": padded.stream_id, "expected_log_sales": expected}))
    truth = {"commodity": 0.4, "anchor": 0.3, "room": 0.2, "video": 0.1}
    write_json(root / "ground_truth.json", {"importance": {"entity_covariance_share": truth}})
    entries = {
        "full": {"model": "tiny", "feature_set": "demo", "seeds": [0, 1], "search": "s"},
        "ridge": {"model": "ridge", "feature_set": "demo", "seeds": [0]},
        "latent": {"model": "ridge", "feature_set": "latent", "seeds": [0]},
    }
    space = parse_space("s", {"train.lr": {"log_uniform": [1e-3, 1e-2]}})
    noise = rng.normal(0, 1, (2, len(padded)))  # one noise pattern per seed, scaled per entity
    for fold in FOLDS:
        job = JobSpec(experiment="full", model="tiny", feature_set="demo", fold=fold, seeds=(0, 1), space=space,
                      source="s")
        fit_experiment(root / "demo.h5", run_dir("full", fold, root / "runs"), job, {"epochs": 3, "device": "cpu"},
                       fitter=NeuralFitter.with_builder(tiny_builder), tuning=TuningSettings(trials=2, startup_trials=1),
                       tuning_dir=tuning_dir("full", fold, root / "tuning"), ground_truth=gt)
        split = split_of(padded.fold, fold, padded.folds)
        # Leave-one-out runs: noise grows with the dropped entity's true importance (the true ranking is recoverable).
        for entity, share in truth.items():
            name = f"no-{entity}"
            entries[name] = {"model": "tiny", "feature_set": "demo", "options": {"drop_entities": [entity]},
                             "seeds": [0, 1]}
            frames = [predictions_frame(padded.stream_id, split, padded.target,
                                        padded.target + (0.3 + 2 * share) * noise[seed], seed) for seed in (0, 1)]
            write_run(run_dir(name, fold, root / "runs"), pl.concat(frames), {}, {"params": {}}, gt)
        for name, sd in (("ridge", 0.9), ("latent", 0.1)):
            pred = padded.target + rng.normal(0, sd, len(padded))
            write_run(run_dir(name, fold, root / "runs"),
                      predictions_frame(padded.stream_id, split, padded.target, pred, 0), {}, {"params": {}}, gt)
    return root, experiments_from_config(entries, [0, 1]), truth, padded


def pooled_predictions(root, name, seed):
    """[100] every stream's prediction from the fold whose test part holds it (stream 'sNNNN' at row NNNN)."""
    out = np.full(100, np.nan)
    for fold in FOLDS:
        frame = pl.read_parquet(run_dir(name, fold, root / "runs") / "predictions.parquet")
        part = frame.filter((pl.col("split") == "test") & (pl.col("seed") == seed))
        out[[int(i[1:]) for i in part["stream_id"].to_list()]] = part["y_pred"].to_numpy()
    assert np.isfinite(out).all()
    return out


def test_tables_pool_the_folds_and_recompute_every_number(runs):
    root, experiments, truth, padded = runs
    tables = {
        "t9": {"title": "T9", "rows": {"ridge": "Ridge", "full": "Full"}},
        "t8": {"title": "T8", "rows": {f"no-{e}": f"w/o {e}" for e in truth} | {"full": "All"}},
    }
    records = [tuning_dir("full", k, root / "tuning") / "trials.parquet" for k in FOLDS]
    written = build_tables(
        tables, experiments, root / "tables", folds=FOLDS, compare_to={"demo": "full"}, n_boot=300,
        runs_root=root / "runs", ground_truth=root / "ground_truth.parquet",
        ground_truth_json=root / "ground_truth.json", latent_ceiling=["latent"], importance_table="t8",
        tuning_records=records,
    )
    assert {p.name for p in written} >= {"t9.csv", "t9.md", "t9.html", "t8.csv", "entity_importance.md",
                                         "entity_importance.json", "tuning.csv", "tuning.html"}
    t9 = pl.read_csv(root / "tables" / "t9.csv")
    assert t9["label"].to_list() == ["Ridge", "Full", ORACLE_LABEL]
    full = t9.filter(pl.col("experiment") == "full").row(0, named=True)
    # Pooled: every stream once, each metric per seed over all 100 streams, then the mean over seeds.
    preds = {s: pooled_predictions(root, "full", s) for s in (0, 1)}
    per_run = []
    for fold in FOLDS:
        frame = pl.read_parquet(run_dir("full", fold, root / "runs") / "predictions.parquet").filter(pl.col("split") == "test")
        for s in (0, 1):
            part = frame.filter(pl.col("seed") == s)
            per_run.append(regression_metrics(part["y_true"].to_numpy(), part["y_pred"].to_numpy()))
    y = padded.target.astype(np.float64)
    for m in METRICS:
        pooled = np.mean([regression_metrics(y, preds[s])[m] for s in (0, 1)])
        assert full[m] == pytest.approx(pooled, abs=1e-9)
        assert full[f"{m}_sd"] == pytest.approx(np.std([r[m] for r in per_run], ddof=1), abs=1e-9)
    assert full["n_streams"] == 100 and full["n_folds"] == 5 and full["verdict"] == "reference"
    sales = np.exp(y) - 1  # the target is log(sales + 1)
    assert full["sales_mae"] == pytest.approx(np.mean([np.abs(np.maximum(np.exp(preds[s]) - 1, 0) - sales).mean()
                                                       for s in (0, 1)]), rel=1e-9)
    assert full["settings"].startswith("lr ")
    oracle = t9.filter(pl.col("experiment") == "oracle").row(0, named=True)
    truth_pred = pl.read_parquet(root / "ground_truth.parquet")["expected_log_sales"].to_numpy()
    assert oracle["r2"] == pytest.approx(regression_metrics(y, truth_pred)["r2"], abs=1e-9)
    assert full["frac_oracle"] == pytest.approx(full["r2"] / oracle["r2"])
    latent_r2 = regression_metrics(y, pooled_predictions(root, "latent", 0))["r2"]
    assert full["frac_latent"] == pytest.approx(full["r2"] / latent_r2)
    ridge = t9.filter(pl.col("experiment") == "ridge").row(0, named=True)
    assert ridge["compared_to"] == "full" and ridge["r2_lo"] <= ridge["r2_diff"] <= ridge["r2_hi"]
    # The budget: the mean over folds of the last doubling's gain; the untuned ridge's verdict rests on 'full'.
    gains = [expected_max(s, len(s)) - expected_max(s, len(s) // 2) for s in
             (pl.read_parquet(p).filter(pl.col("val_r2").is_not_null())["val_r2"].to_numpy() for p in records)]
    assert full["budget_gain"] == pytest.approx(np.mean(gains)) and ridge["budget_gain"] is None
    interval = verdict(Interval(ridge["r2_diff"], ridge["r2_lo"], ridge["r2_hi"]), higher_is_better=True)
    # The untuned ridge's verdict rests on 'full' unless ridge is the side that loses.
    assert ridge["verdict"] == ("under-tuned" if np.mean(gains) > 0.005 and interval != "worse" else interval)
    html = (root / "tables" / "t9.html").read_text()
    assert "<table>" in html and "<td>Ridge</td>" in html and f"<td>{ridge['verdict']}</td>" in html
    tuning = pl.read_csv(root / "tables" / "tuning.csv")
    assert tuning["trials"].to_list() == [2] * 5


def test_a_row_naming_no_experiment_is_refused(runs):
    root, experiments, truth, _ = runs
    with pytest.raises(ValueError, match="not an experiment"):
        build_tables({"t": {"rows": {"nope": "x", "full": "y"}}}, experiments, root / "t2", folds=FOLDS,
                     compare_to={"demo": "full"}, runs_root=root / "runs")


def test_entity_importance_compares_rankings(runs):
    root = runs[0]
    summary = read_json(root / "tables" / "entity_importance.json")
    imp = pl.read_csv(root / "tables" / "entity_importance.csv")
    assert summary["true_ranking"] == ["commodity", "anchor", "room", "video"]
    assert summary["loo_ranking"] == imp.sort("loo_rank")["entity"].to_list()
    assert summary["spearman_rho"] == pytest.approx(1.0)
    assert "agree exactly" in summary["statement"]


def test_figures_are_drawn(runs):
    root = runs[0]
    records = [tuning_dir("full", k, root / "tuning") / "trials.parquet" for k in FOLDS]
    written = draw_figures(
        root / "figures", run_dir=run_dir("full", 0, root / "runs"), run_seed=1, run_label="full fold 0 seed 1",
        bars={"t9_bars": (root / "tables" / "t9.csv", "Table 9")}, tuning_records=records, attention_streams=4,
    )
    assert [p.name for p in written] == ["fig3_training_curves.png", "fig4_scatter_density.png", "fig6_attention.png",
                                         "t9_bars.png", "tuning_budget.png"]
    for path in written:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
    assert json.loads((run_dir("full", 0, root / "runs") / "metrics.json").read_text())["seeds"]["1"]["epoch"] >= 1


def test_worlds_summary_states_the_fusion_order_verdict_per_world(tmp_path):
    from memf.report.worlds import summarise

    def world(name: str, diff: float, lo: float, hi: float, verdict: str) -> None:
        folder = tmp_path / "worlds" / name / "results" / "tables"
        folder.mkdir(parents=True)
        pl.DataFrame({
            "label": ["Modality first", "MEMF (entity first)", ORACLE_LABEL],
            "experiment": ["memf-modality-first", "memf", "oracle"],
            "r2": [0.5 + diff, 0.5, 0.8], "r2_sd": [0.01, 0.01, None], "r2_diff": [diff, None, None],
            "r2_lo": [lo, None, None], "r2_hi": [hi, None, None], "verdict": [verdict, "reference", None],
            "frac_oracle": [0.6, 0.6, 1.0], "frac_latent": [0.7, 0.7, None], "n_parameters": [10, 20, None],
            "feature_set": ["demo", "demo", None], "n_streams": [500] * 3, "n_folds": [5] * 3, "n_seeds": [1] * 3,
            "settings": ["", "", None],
        }).write_csv(folder / "worlds.csv")
        # A latent-ceiling row that beats every row on features: not the "best on features".
        pl.DataFrame({"label": ["MEMF (latents)", ORACLE_LABEL], "experiment": ["memf-latent", "oracle"],
                      "feature_set": ["latent", None], "r2": [0.75, 0.8], "verdict": ["reference", None]}
                     ).write_csv(folder / "ceilings.csv")

    world("default", 0.01, -0.02, 0.04, "not separable")
    world("cross_modal", -0.10, -0.15, -0.05, "worse")
    readme = tmp_path / "README.md"
    readme.write_text("# x\n<!-- worlds:begin -->\nOLD\n<!-- worlds:end -->\nafter\n")
    sentences = summarise(tmp_path / "worlds", tmp_path / "tables", readme)
    assert sentences[0].startswith("default:") and "not separable" in sentences[0]
    assert "cross_modal" in sentences[1] and "entity-first MEMF wins" in sentences[1] and "Δ +0.100" in sentences[1]
    assert "best on features Modality first (R² 0.510)" in sentences[0]
    table = pl.read_csv(tmp_path / "tables" / "worlds.csv")
    assert table["world"].unique().sort().to_list() == ["cross_modal", "default"] and table.height == 8
    assert "<table>" in (tmp_path / "tables" / "worlds.html").read_text()
    text = readme.read_text()
    assert "OLD" not in text and text.endswith("<!-- worlds:end -->\nafter\n") and "500 streams per world" in text
    assert "| model | `default` | `cross_modal` |" in text
    assert "| Modality first | 0.510 (+0.010 [-0.020, +0.040], not separable) | 0.400 (-0.100 [-0.150, -0.050], worse) |" in text
    assert "| MEMF (latents) | 0.750 | 0.750 |" in text and "- cross_modal: MEMF R² 0.500" in text


def test_readme_section_is_regenerated_between_its_markers(runs, tmp_path):
    from memf.report.readme import BEGIN, END, results_section, update_readme

    root, experiments, truth, _ = runs
    tables = {"table9": {"title": "T9", "rows": {"ridge": "Ridge", "full": "MEMF"}},
              "ceilings": {"title": "C", "rows": {"latent": "Latent ridge", "full": "MEMF"}}}
    build_tables(tables, experiments, tmp_path / "t", folds=FOLDS, compare_to={"demo": "full", "latent": "latent"},
                 n_boot=100, runs_root=root / "runs", ground_truth=root / "ground_truth.parquet",
                 latent_ceiling=["latent"])
    for name in ("table9", "ceilings"):  # the readme names MEMF's experiment `memf`
        frame = pl.read_csv(tmp_path / "t" / f"{name}.csv", infer_schema_length=None)
        frame.with_columns(pl.col("experiment").replace({"full": "memf"})).write_csv(tmp_path / "t" / f"{name}.csv")
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\nbefore\n{BEGIN}\nOLD SECTION\n{END}\nafter\n")
    update_readme(readme, results_section(tmp_path / "t", "It took 1 minute."))
    text = readme.read_text()
    assert text.startswith("# x\n\nbefore\n") and text.endswith("after\n") and "OLD SECTION" not in text
    assert "| Ridge | demo |" in text and "**MEMF**" in text and "It took 1 minute." in text
    assert "latent ceiling" in text and "The best tuned reference, Ridge, reaches" in text
