"""The ensemble (memf.training.ensemble): weights fitted on the validation part only, a run folder the tables read
like any other, the choice of the best model on the validation parts, and its config section checked at load."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from memf.config import ConfigError, evaluation_plan, load_config
from memf.core.io import read_json
from memf.report.tables import TableBuilder, ensemble_comparison
from memf.training.ensemble import choose_best, fit_ensemble, fit_weights
from memf.training.matrix import ENSEMBLE, Experiment, ensemble_experiment

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "workflow" / "schemas" / "config.schema.yaml"
SPLITS = ("train", "val", "test")


def write_runs(root: Path, folds=(0, 1), n=120, seed=0, corrupt_test=False) -> dict[str, dict[int, Path]]:
    """Three candidates' run folders per fold on one synthetic target: 'good' (small noise), 'biased' (shifted),
    'noisy' (large noise), two seeds each."""
    rng = np.random.default_rng(seed)
    out: dict[str, dict[int, Path]] = {"good": {}, "biased": {}, "noisy": {}}
    for fold in folds:
        ids = [f"f{fold}-s{i:03d}" for i in range(n)]
        split = [SPLITS[i % 3] for i in range(n)]
        y = rng.normal(5.0, 1.0, n)
        preds = {"good": y + rng.normal(0, 0.3, n), "biased": y + 0.8 + rng.normal(0, 0.3, n),
                 "noisy": y + rng.normal(0, 1.0, n)}
        junk = np.random.default_rng(99).normal(0, 50, n)
        y_true = np.where(np.array(split) == "test", junk, y) if corrupt_test else y
        for name, p in preds.items():
            folder = root / name / f"fold{fold}"
            folder.mkdir(parents=True)
            rows = [{"stream_id": ids[i], "seed": s, "split": split[i], "y_true": float(y_true[i]),
                     "y_pred": float(p[i] + (0.01 if s else -0.01))} for s in (0, 1) for i in range(n)]
            pl.DataFrame(rows).write_parquet(folder / "predictions.parquet")
            (folder / "model.json").write_text("{}")
            out[name][fold] = folder
    return out


def test_weights_are_non_negative_sum_to_one_and_recover_a_convex_mix():
    rng = np.random.default_rng(1)
    p = rng.normal(size=(400, 3))
    y = p @ np.array([0.7, 0.3, 0.0])
    w = fit_weights(p, y)
    assert (w >= 0).all() and w.sum() == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(w, [0.7, 0.3, 0.0], atol=1e-6)


def test_the_ensemble_is_fitted_on_validation_only_and_written_as_a_run(tmp_path):
    runs = write_runs(tmp_path / "a")
    corrupt = write_runs(tmp_path / "b", corrupt_test=True)
    for fold in (0, 1):
        meta = fit_ensemble({n: d[fold] for n, d in runs.items()}, fold, tmp_path / "ens_a" / f"fold{fold}", "demo")
        other = fit_ensemble({n: d[fold] for n, d in corrupt.items()}, fold, tmp_path / "ens_b" / f"fold{fold}", "demo")
        assert meta["weights"] == other["weights"]  # the test targets decide nothing
        assert meta["weights"]["good"] > 0.5 and sum(meta["weights"].values()) == pytest.approx(1.0)
        preds = pl.read_parquet(tmp_path / "ens_a" / f"fold{fold}" / "predictions.parquet")
        assert preds.columns == ["stream_id", "seed", "split", "y_true", "y_pred"] and preds.height == 120
        means = {n: pl.read_parquet(d[fold] / "predictions.parquet").group_by("stream_id").agg(pl.col("y_pred").mean())
                 .sort("stream_id")["y_pred"].to_numpy() for n, d in runs.items()}
        expected = sum(meta["weights"][n] * means[n] for n in means)
        np.testing.assert_allclose(preds.sort("stream_id")["y_pred"].to_numpy(), expected, rtol=1e-12)
        assert read_json(tmp_path / "ens_a" / f"fold{fold}" / "metrics.json")["test"]["r2"] > 0.5


def test_the_best_model_is_chosen_on_validation_and_a_single_model_wins_a_tie(tmp_path):
    runs = write_runs(tmp_path / "a")
    dirs = {}
    for fold in (0, 1):
        dirs[fold] = tmp_path / "ens" / f"fold{fold}"
        fit_ensemble({n: d[fold] for n, d in runs.items()}, fold, dirs[fold], "demo")
    best = choose_best(dirs)
    assert best["choice"] in ("ensemble", "good") and best["val_mse"]["good"] < best["val_mse"]["noisy"]
    # A candidate that is the validation target itself: nothing beats it, the ensemble at best ties it.
    for fold in (0, 1):
        path = runs["good"][fold] / "predictions.parquet"
        pl.read_parquet(path).with_columns(pl.col("y_true").alias("y_pred")).write_parquet(path)
        fit_ensemble({n: d[fold] for n, d in runs.items()}, fold, dirs[fold], "demo")
    best = choose_best(dirs)
    assert best["choice"] == "good" and best["weights"] == {0: {"good": 1.0}, 1: {"good": 1.0}}


def test_the_tables_compare_the_ensemble_with_the_best_single_model(tmp_path):
    runs = write_runs(tmp_path / "runs")
    for fold in (0, 1):
        fit_ensemble({n: d[fold] for n, d in runs.items()}, fold, tmp_path / "runs" / ENSEMBLE / f"fold{fold}", "demo")
    experiments = {n: Experiment(n, "ridge", "demo", {}, (0, 1)) for n in runs}
    experiments[ENSEMBLE] = Experiment(ENSEMBLE, ENSEMBLE, "demo", {}, (0,))
    builder = TableBuilder(experiments, [0, 1], {"demo": "noisy"}, 200, 0, 0.95, tmp_path / "runs")
    table = builder.table({"good": "Good", ENSEMBLE: "Ensemble", "noisy": "Noisy"})
    row = table.filter(pl.col("experiment") == ENSEMBLE).row(0, named=True)
    assert row["verdict"] == "better" and row["r2_lo"] > 0  # against the table's reference
    frame, summary = ensemble_comparison(builder)
    assert summary["best_single"] == "good" and frame.height == 2
    assert summary["r2_lo"] <= summary["r2_diff"] <= summary["r2_hi"] and summary["verdict"] in (
        "better", "worse", "borderline", "not separable")


def test_the_ensemble_section_is_checked_at_load_and_adds_a_table_row(tmp_path):
    experiments = {"memf": {"model": "memf", "feature_set": "demo"}, "ridge": {"model": "ridge", "feature_set": "demo"},
                   "ridge-latent": {"model": "ridge", "feature_set": "latent"}}
    config = {"experiments": experiments}
    load_config(config, SCHEMA, tmp_path)
    assert list(ensemble_experiment(config)) == [ENSEMBLE]
    assert ENSEMBLE in evaluation_plan(config)[0]["tables"]["table9"]["rows"]
    cases = {
        "config key 'ensemble.candidates': 'ridge-latent' is not an experiment on feature set 'demo'":
            {"ensemble": {"candidates": ["memf", "ridge-latent"]}},
        "config key 'ensemble.feature_set': 'nope' is not a feature set": {"ensemble": {"feature_set": "nope"}},
        "config key 'experiments.ensemble': the name is the ensemble's":
            {"experiments": {**experiments, "ensemble": {"model": "ridge", "feature_set": "demo"}}},
    }
    for expected, extra in cases.items():
        with pytest.raises(ConfigError) as caught:
            load_config({"experiments": experiments, **extra}, SCHEMA, tmp_path)
        assert len(caught.value.problems) == 1 and caught.value.problems[0].startswith(expected), caught.value.problems
    one = {"experiments": {"memf": experiments["memf"], "ridge-latent": experiments["ridge-latent"]}}
    load_config(one, SCHEMA, tmp_path)
    assert ensemble_experiment(one) == {}  # one candidate: no ensemble, no row
