"""memf.report: bootstrap, tables recomputed from predictions, entity importance, figures."""

import numpy as np
import polars as pl
import pytest
import torch
from sklearn import metrics as skm
from train_support import tiny_builder, tiny_padded

from memf.core.io import read_json, write_json, write_parquet
from memf.core.metrics import METRICS
from memf.training.padded import write_padded
from memf.report.bootstrap import paired_difference, resample_indices, resampled_metrics
from memf.report.figures import draw_figures
from memf.training.matrix import experiments_from_config, run_dir
from memf.report.tables import ORACLE_LABEL, build_tables
from memf.training.runs import predictions_frame, write_run_core
from memf.training.train import run_training

torch.set_num_threads(1)
SK = {
    "mae": skm.mean_absolute_error, "mse": skm.mean_squared_error, "mape": skm.mean_absolute_percentage_error,
    "r2": skm.r2_score, "evs": skm.explained_variance_score,
}


def test_resampled_metrics_equal_scikit_learn_on_every_resample():
    rng = np.random.default_rng(0)
    y = rng.normal(5, 1, 30)
    p = y + rng.normal(0, 0.5, 30)
    idx = resample_indices(30, 25, seed=1)
    got = resampled_metrics(y, p, idx)
    for name, fn in SK.items():
        np.testing.assert_allclose(got[name], [fn(y[i], p[i]) for i in idx], rtol=1e-10, atol=1e-12)


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
        diffs = paired_difference(y, a, b, resample_indices(n, 300, seed=rep))
        for name in true:
            iv = diffs[name]
            assert iv.lo <= iv.diff <= iv.hi
            covered[name] += iv.lo <= true[name] <= iv.hi
    for name, count in covered.items():
        assert count / n_rep >= 0.85, (name, count)


def test_identical_models_give_an_interval_around_zero():
    rng = np.random.default_rng(2)
    y = rng.normal(5, 1, 100)
    p = y + rng.normal(0, 0.4, (1, 100))
    for iv in paired_difference(y, p, p, resample_indices(100, 200, 0)).values():
        assert iv.diff == iv.lo == iv.hi == 0.0


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A small matrix: a trained 'full' model (2 seeds), leave-one-out runs with synthetic predictions whose
    quality follows a known entity order, a reference, and the simulator's ground-truth files."""
    root = tmp_path_factory.mktemp("report")
    padded = tiny_padded(80)
    write_padded(root / "demo.h5", padded)
    rng = np.random.default_rng(0)
    expected = padded.target + rng.normal(0, 0.2, len(padded))
    gt = root / "ground_truth.parquet"
    write_parquet(gt, pl.DataFrame({"stream_id": padded.stream_id, "expected_log_sales": expected}))
    truth = {"commodity": 0.4, "anchor": 0.3, "room": 0.2, "video": 0.1}
    write_json(root / "ground_truth.json", {"importance": {"entity_covariance_share": truth}})
    entries = {
        "full": {"model": "tiny", "feature_set": "demo", "seeds": [0, 1]},
        "ridge": {"model": "ridge", "feature_set": "demo", "seeds": [0]},
    }
    for seed in (0, 1):
        run_training(root / "demo.h5", run_dir("full", seed, root / "runs"), experiment="full", model_name="tiny",
                     options={}, feature_set="demo", seed=seed, train_cfg={"epochs": 3, "device": "cpu"},
                     builder=tiny_builder, ground_truth=gt)
    # Leave-one-out runs: noise grows with the dropped entity's true importance (so the true ranking is recoverable).
    noise = rng.normal(0, 1, (2, len(padded)))  # one noise pattern per seed, scaled per entity
    for entity, share in truth.items():
        name = f"no-{entity}"
        entries[name] = {"model": "tiny", "feature_set": "demo", "options": {"drop_entities": [entity]}, "seeds": [0, 1]}
        for seed in (0, 1):
            pred = padded.target + (0.3 + 2 * share) * noise[seed]
            write_run_core(run_dir(name, seed, root / "runs"), predictions_frame(padded.stream_id, padded.split, padded.target, pred),
                           {"seed": seed}, {}, gt)
    pred = np.full(len(padded), padded.target[padded.split == 0].mean()) + rng.normal(0, 0.1, len(padded))
    write_run_core(run_dir("ridge", 0, root / "runs"), predictions_frame(padded.stream_id, padded.split, padded.target, pred), {}, {}, gt)
    return root, experiments_from_config(entries, [0, 1]), truth


def test_tables_recomputed_from_predictions_equal_metrics_json(runs):
    root, experiments, truth = runs
    tables = {
        "t9": {"title": "T9", "rows": {"ridge": "Ridge", "full": "Full"}},
        "t8": {"title": "T8", "rows": {f"no-{e}": f"w/o {e}" for e in truth} | {"full": "All"}},
    }
    written = build_tables(
        tables, experiments, root / "tables", compare_to={"demo": "full"}, n_boot=300, runs_root=root / "runs",
        ground_truth=root / "ground_truth.parquet", ground_truth_json=root / "ground_truth.json", importance_table="t8",
    )
    assert {p.name for p in written} >= {"t9.csv", "t9.md", "t8.csv", "t8.md", "entity_importance.md", "entity_importance.json"}
    t9 = pl.read_csv(root / "tables" / "t9.csv")
    assert t9["label"].to_list() == ["Ridge", "Full", ORACLE_LABEL]
    for row in t9.filter(pl.col("experiment") != "oracle").iter_rows(named=True):
        exp = experiments[row["experiment"]]
        on_disk = [read_json(exp.run_dir(s, root / "runs") / "metrics.json") for s in exp.seeds]
        for m in METRICS:
            values = [d[m] for d in on_disk]
            assert row[f"{m}_mean"] == pytest.approx(np.mean(values), abs=1e-12)
            if len(values) > 1:
                assert row[f"{m}_sd"] == pytest.approx(np.std(values, ddof=1), abs=1e-12)
    oracle = t9.filter(pl.col("experiment") == "oracle").row(0, named=True)
    assert oracle["r2_mean"] == pytest.approx(read_json(root / "runs" / "full" / "seed0" / "metrics.json")["oracle_r2"], abs=1e-12)
    ridge = t9.filter(pl.col("experiment") == "ridge").row(0, named=True)
    assert ridge["compared_to"] == "full" and ridge["mse_lo"] <= ridge["mse_diff"] <= ridge["mse_hi"]
    full = t9.filter(pl.col("experiment") == "full").row(0, named=True)
    assert full["mse_diff"] is None  # the reference row is not compared with itself
    md = (root / "tables" / "t9.md").read_text()
    assert "| Ridge | demo | 1 |" in md and "± " in md


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
    written = draw_figures(
        root / "figures", run_dir=run_dir("full", 0, root / "runs"), run_label="full seed 0",
        bars={"t9_bars": (root / "tables" / "t9.csv", "Table 9")}, attention_streams=4, sample_seed=0,
    )
    assert len(written) == 4
    for path in written:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
