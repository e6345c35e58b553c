"""The learning curves (memf.report.curves) and the budget check (memf.report.budget): R² equals scikit-learn's, the
paired comparison uses the shared test streams, the signal coefficient reads what a prediction carries, a row still
gaining from its last doubling of trials is under-tuned, and the summary says from which size MEMF wins."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml
from sklearn.metrics import r2_score

from memf.core.io import write_json, write_parquet
from memf.data.folds import FoldPlan
from memf.report.budget import (
    BUDGET_TOLERANCE,
    UNDER_TUNED,
    budget_verdict,
    cap_bound,
    doubling_gain,
    expected_max,
)
from memf.report.curves import (
    SCHEMA,
    Curves,
    Truth,
    curve_table,
    phases,
    signal_coefficient,
    smallest_winning_size,
    summarise,
)
from memf.training.matrix import experiments_from_config

PLAN = FoldPlan.from_config({"seed": 0, "mode": "fixed", "validation": 20, "test": 60, "train_sizes": [30, 90],
                             "replicates": [2, 1]})
ROWS = {"hgb-set": "Boosting", "memf": "MEMF"}
EXPERIMENTS = experiments_from_config({"memf": {"model": "memf", "feature_set": "latent", "search": "memf-demo"},
                                       "hgb-set": {"model": "hgb", "feature_set": "latent", "search": "hgb"}}, [0])
CLIMBING = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]  # every trial better than the last: far from flat
FLAT = [0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5]


def write_study(root: Path, rng: np.random.Generator, noise: dict[str, float], scores: dict[str, list[float]],
                epochs_run: int) -> tuple[np.ndarray, dict[tuple[str, int], np.ndarray]]:
    """Runs of ROWS in every run fold of PLAN on 60 shared test streams: y = expected + noise; each run predicts the
    expected log sales plus its own noise. Returns y and (experiment, fold) -> predictions."""
    ids = np.array([f"s{i:03d}" for i in range(60)])
    match = rng.normal(0, 0.5, 60)
    expected = 5 + match + rng.normal(0, 0.8, 60)
    y = expected + rng.normal(0, 0.3, 60)
    write_parquet(root / "truth.parquet", pl.DataFrame({"stream_id": ids, "expected_log_sales": expected,
                                                        "contrib_match": match, "contrib_anchor": expected - match}))
    write_json(root / "truth.json", {"world": {"name": "cross_modal", "credit": {"match": {"commodity": 1.0}}}})
    preds = {}
    for name in ROWS:
        for fold in range(PLAN.k):
            run = EXPERIMENTS[name].run_dir(fold, root / "runs")
            preds[(name, fold)] = expected + rng.normal(0, noise[name], 60)
            write_parquet(run / "predictions.parquet", pl.DataFrame({
                "stream_id": ids, "seed": 0, "split": "test", "y_true": y, "y_pred": preds[(name, fold)]}))
            write_json(run / "model.json", {"params": {}})
            write_json(run / "metrics.json", {"seeds": {"0": {"epochs_run": epochs_run}} if name == "memf" else {}})
            trials = root / "tuning" / name / f"fold{fold}" / "trials.parquet"
            write_parquet(trials, pl.DataFrame({"number": range(8), "state": "COMPLETE", "val_r2": scores[name]}))
    return y, preds


def curves(root: Path) -> Curves:
    return Curves(EXPERIMENTS, PLAN, list(range(PLAN.k)), {"latent": "memf"}, root / "truth.parquet",
                  root / "truth.json", epochs_cap=40,
                  tuning_records=sorted(str(p) for p in (root / "tuning").rglob("trials.parquet")),
                  n_boot=300, runs_root=root / "runs")


def test_each_size_pools_its_replicates_on_the_shared_test_streams(tmp_path):
    y, preds = write_study(tmp_path, np.random.default_rng(0), {"memf": 0.2, "hgb-set": 0.6},
                           {"memf": FLAT, "hgb-set": FLAT}, epochs_run=40)
    frame = curve_table(curves(tmp_path), ROWS)
    assert frame.columns == list(SCHEMA) and frame["train_size"].to_list() == [30, 30, 90, 90]
    small = {r["experiment"]: r for r in frame.filter(pl.col("train_size") == 30).iter_rows(named=True)}
    for name in ROWS:  # the mean over replicates of scikit-learn's R²
        assert small[name]["r2"] == pytest.approx(np.mean([r2_score(y, preds[(name, f)]) for f in (0, 1)]))
        assert small[name]["replicates"] == 2 and small[name]["n_test"] == 60
        assert small[name]["r2_ci_lo"] < small[name]["r2"] < small[name]["r2_ci_hi"]
    hgb = small["hgb-set"]
    assert hgb["r2_diff"] == pytest.approx(hgb["r2"] - small["memf"]["r2"])
    assert hgb["r2_hi"] < 0 and hgb["verdict"] == "worse" and small["memf"]["verdict"] == "reference"
    assert hgb["oracle_r2"] == pytest.approx(r2_score(y, pl.read_parquet(tmp_path / "truth.parquet")
                                                      ["expected_log_sales"].to_numpy()))
    assert small["memf"]["cap_bound"] == 1.0 and small["memf"]["early_stopped"] == 0.0
    assert hgb["cap_bound"] is None and hgb["budget"] == "enough" and hgb["budget_gain"] == pytest.approx(0)


def test_a_verdict_resting_on_a_row_still_climbing_reads_under_tuned(tmp_path):
    write_study(tmp_path, np.random.default_rng(1), {"memf": 0.2, "hgb-set": 0.6},
                {"memf": FLAT, "hgb-set": CLIMBING}, epochs_run=12)
    frame = curve_table(curves(tmp_path), ROWS)
    hgb = frame.filter(pl.col("experiment") == "hgb-set")
    assert hgb["budget"].to_list() == [UNDER_TUNED, UNDER_TUNED] and hgb["verdict"].to_list() == [UNDER_TUNED] * 2
    assert hgb["r2_hi"].max() < 0  # the interval alone would have said "worse"
    assert frame.filter(pl.col("experiment") == "memf")["cap_bound"].to_list() == [0.0, 0.0]


def test_the_signal_coefficient_is_one_for_a_prediction_carrying_the_signal_and_zero_without_it():
    rng = np.random.default_rng(2)
    signal, rest = rng.normal(0, 1, 500), rng.normal(5, 1, 500)
    truth = Truth(expected=signal + rest, signal=signal, name="match")
    with_signal = np.stack([signal + rest, 0.5 * (signal + rest)])
    assert signal_coefficient(with_signal, truth) == pytest.approx(0.75)
    assert signal_coefficient((rest + rng.normal(0, 0.1, 500))[None], truth) == pytest.approx(0, abs=0.02)
    assert signal_coefficient(with_signal, Truth(signal + rest, None, None)) is None


def test_the_last_doubling_gain_is_the_dodge_curve_at_all_trials_minus_at_half():
    scores = np.array(CLIMBING)
    assert doubling_gain(scores) == pytest.approx(expected_max(scores, 8) - expected_max(scores, 4))
    assert doubling_gain(np.array(FLAT)) == pytest.approx(0) and doubling_gain(np.array([0.3])) is None
    assert budget_verdict("worse", BUDGET_TOLERANCE * 2, 0.0) == UNDER_TUNED  # the loser still climbs
    assert budget_verdict("better", 0.0, BUDGET_TOLERANCE * 2) == UNDER_TUNED
    assert budget_verdict("worse", 0.0, BUDGET_TOLERANCE * 2) == "worse"  # the winner climbing only widens the gap
    assert budget_verdict("better", BUDGET_TOLERANCE * 2, None) == "better"
    assert budget_verdict("not separable", 0.0, BUDGET_TOLERANCE * 2) == UNDER_TUNED
    assert budget_verdict("borderline", BUDGET_TOLERANCE * 2, 0.0) == UNDER_TUNED
    assert budget_verdict("worse", BUDGET_TOLERANCE, None) == "worse"
    assert budget_verdict("reference", 1.0, 1.0) == "reference"


def test_the_epoch_cap_counts_the_seeds_that_trained_to_it(tmp_path):
    write_json(tmp_path / "m.json", {"seeds": {"0": {"epochs_run": 40}, "1": {"epochs_run": 17}, "2": {}}})
    assert cap_bound(tmp_path / "m.json", 40) == (1, 1, 2)


def test_phases_run_the_small_sizes_first_replicate_everywhere_first():
    plan = FoldPlan.from_config({"seed": 0, "mode": "fixed", "validation": 500, "test": 2000,
                                 "train_sizes": [300, 1000, 3000, 10000], "replicates": [3, 3, 1, 1]})
    assert phases(plan) == [[0, 3, 6], [0, 1, 2, 3, 4, 5, 6], list(range(8))]


def frame_of(verdicts: dict[int, dict[str, str]]) -> pl.DataFrame:
    return pl.DataFrame([{"train_size": size, "experiment": name, "verdict": v, "r2": 0.5}
                         for size, per in verdicts.items() for name, v in per.items()])


def test_memf_wins_from_the_smallest_size_after_which_every_verdict_is_worse_for_the_other():
    frame = frame_of({300: {"hgb-set": "better"}, 1000: {"hgb-set": "worse"}, 3000: {"hgb-set": "worse"}})
    assert smallest_winning_size(frame, ["hgb-set"]) == (1000, 3000)
    frame = frame_of({300: {"hgb-set": "worse"}, 1000: {"hgb-set": "not separable"}, 3000: {"hgb-set": "worse"}})
    assert smallest_winning_size(frame, ["hgb-set"]) == (3000, 3000)
    frame = frame_of({300: {"hgb-set": "worse"}, 1000: {"hgb-set": UNDER_TUNED}})
    assert smallest_winning_size(frame, ["hgb-set"]) == (None, 1000)


def test_the_summary_writes_the_table_the_figure_and_the_readme_block(tmp_path):
    world = tmp_path / "study" / "cross_modal"
    write_study(world, np.random.default_rng(3), {"memf": 0.2, "hgb-set": 0.6}, {"memf": FLAT, "hgb-set": FLAT}, 20)
    c = curves(world)
    frame = curve_table(c, ROWS)
    (world / "results" / "tables").mkdir(parents=True)
    frame.write_csv(world / "results" / "tables" / "curves.csv")
    pl.DataFrame({"train_size": [90, 90], "experiment": "memf", "entity": ["anchor", "commodity"],
                  "probe_r2": [0.9, 0.6], "probe_r2_untrained": [0.8, 0.1], "runs": 1, "contribution_sd": 0.5}
                 ).write_csv(world / "results" / "tables" / "curves_probes.csv")
    readme = tmp_path / "README.md"
    readme.write_text("# x\n<!-- curves:begin -->\nOLD BLOCK\n<!-- curves:end -->\n")
    sentences = summarise(tmp_path / "study", tmp_path / "tables", tmp_path / "figures", readme)
    assert (tmp_path / "figures" / "curves.png").stat().st_size > 10_000
    table = pl.read_csv(tmp_path / "tables" / "curves.csv")
    assert table["world"].unique().to_list() == ["cross_modal"] and table.height == 4
    assert sentences[0].startswith("cross_modal: at 90 training streams MEMF R²")
    assert "MEMF better from 30 streams" in sentences[0]
    text = readme.read_text()
    assert "OLD BLOCK" not in text and "![Learning curves](figures/curves.png)" in text  # relative to the README
    assert json.dumps(sentences[0])[1:40] in json.dumps(text)
    assert "| `cross_modal` | 90 | 0.90 (0.80) | 0.60 (0.10) |" in text
    assert pl.read_csv(tmp_path / "tables" / "curves_probes.csv")["world"].to_list() == ["cross_modal"] * 2


def test_a_one_size_study_gets_its_own_readme_block_and_no_figure(tmp_path):
    """The point on extracted features (one size): its block between its own markers, the curves block untouched,
    and no figure (a curve needs two sizes)."""
    world = tmp_path / "features" / "cross_modal"
    write_study(world, np.random.default_rng(3), {"memf": 0.2, "hgb-set": 0.6}, {"memf": FLAT, "hgb-set": FLAT}, 20)
    frame = curve_table(curves(world), ROWS)
    (world / "results" / "tables").mkdir(parents=True)
    largest = frame["train_size"].max()
    frame.filter(pl.col("train_size") == largest).write_csv(world / "results" / "tables" / "curves.csv")
    readme = tmp_path / "README.md"
    readme.write_text("<!-- curves:begin -->\nCURVES\n<!-- curves:end -->\n"
                      "<!-- curves-features:begin -->\nOLD\n<!-- curves-features:end -->\n")
    summarise(tmp_path / "features", tmp_path / "tables", tmp_path / "figures", readme, "curves-features")
    text = readme.read_text()
    assert "CURVES" in text and "OLD" not in text and "![Learning curves]" not in text
    assert f"| `cross_modal` | {largest:,} | " in text and "--marker curves-features" in text
    assert not (tmp_path / "figures").exists()


def test_run_goes_phase_by_phase_over_every_world_with_the_worlds_overlay(tmp_path, monkeypatch):
    from memf.report import curves as module
    from memf.report import worlds

    calls = []
    monkeypatch.setattr(worlds.subprocess, "run", lambda cmd: calls.append(cmd) or type("Done", (), {"returncode": 0}))
    config = tmp_path / "c.yaml"
    config.write_text("simulator: {n_streams: 900, media: false}\nsplit: {mode: fixed, validation: 50, test: 100, "
                      "train_sizes: [100, 700], replicates: [2, 1]}\n")
    module.run_curves(config, tmp_path / "out", ["cross_modal", "fit"], "2", ["--quiet"])
    worlds = [Path(c[c.index("--directory") + 1]).name for c in calls]
    assert worlds == ["cross_modal", "fit"] * 3 and all(c[-1] == "--quiet" for c in calls)
    overlay = yaml.safe_load((tmp_path / "out" / "fit" / "world.yaml").read_text())
    assert overlay["simulator"] == {"n_streams": 900, "media": False, "world": "fit"}
    assert overlay["split"]["run_folds"] == [0, 1, 2] and overlay["split"]["train_sizes"] == [100, 700]
