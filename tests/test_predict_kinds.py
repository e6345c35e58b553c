"""Every kind of bundle (docs/predict.md): reference models and the bundle ``best``. The tiny run's ridge and mean
runs, and a gradient boosting run on set statistics fitted here on the tiny run's padded store (the tiny config has no
hgb row), are exported with their skops files; each reproduces its run's test predictions to 1e-5 from the features
of the workflow's prediction of the dataset, and the boosting bundle does so end to end on a copy of fold 0's test
streams without sales; a changed code version and a changed column mapping are refused in one line. The bundle
``best`` of the tiny run (its ensemble of the demo feature set's six experiments, or the single one that wins on the
validation parts) reproduces the ensemble runs' (or that experiment's) test predictions."""

from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from memf.core.io import DataError, read_json
from memf.data.layout import validated_dir
from memf.features.layout import STORE, shard_path, store_dir
from memf.features.spec import FEATURE_MODALITIES
from memf.padding.layout import padded_path
from memf.predict.datasets import copy_streams
from memf.predict.export import export_best, export_bundle
from memf.predict.predictor import load_bundle, predict_features
from memf.training.fit import JobSpec, fit_experiment
from memf.training.reference_fit import ReferenceFitter

FOLDS = (0, 1, 2)
TOL = 1e-5


def export(tiny_run: Path, run_dirs: dict[int, Path], experiment: str, out: Path) -> Path:
    """Export as the workflow and the CLI do: in the working folder (the store records the local models' paths, such
    as results/models/bert-tiny, relative to it; the bundle copies them)."""
    with contextlib.chdir(tiny_run):
        export_bundle(experiment=experiment, run_dirs=run_dirs, padded_path=padded_path("demo"),
                      data_dir=validated_dir(), features_dir=store_dir(), out=out)
    return out


@pytest.fixture(scope="module")
def hgb_run(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A gradient boosting run on set statistics (fold 0), fitted by the reference fit on the tiny run's store."""
    root = tmp_path_factory.mktemp("runs")
    spec = JobSpec(experiment="hgb-set", model="hgb", feature_set="demo", fold=0, seeds=(0,),
                   options={"pooling": "set", "max_iter": 30, "min_samples_leaf": 3})
    out = root / "hgb-set" / "fold0"
    fit_experiment(tiny_run / padded_path("demo"), out, spec, {"device": "cpu"}, fitter=ReferenceFitter,
                   tuning_dir=root / "tuning")
    return out


@pytest.fixture(scope="module")
def bundles(tiny_run: Path, hgb_run: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bundles")
    runs = {name: {k: tiny_run / f"results/runs/{name}/fold{k}" for k in FOLDS} for name in ("ridge", "mean")}
    out = {name: export(tiny_run, dirs, name, root / name) for name, dirs in runs.items()}
    out["hgb-set"] = export(tiny_run, {0: hgb_run}, "hgb-set", root / "hgb-set")
    return out


def run_test(run: Path) -> pl.DataFrame:
    preds = pl.read_parquet(run / "predictions.parquet")
    return preds.filter((pl.col("split") == "test") & (pl.col("seed") == 0)).select("stream_id", "y_true", "y_pred")


def shards_of(folder: Path, bundle: dict) -> dict[str, list[str]]:
    """The dataset's feature shards of the bundle's extractors (the tiny config's two shards)."""
    return {m: [shard_path(folder / STORE, m, bundle["extractors"][m]["name"], k) for k in range(2)]
            for m in FEATURE_MODALITIES}


def test_a_reference_bundle_holds_its_skops_models_and_no_pickle(bundles):
    for name, folder in bundles.items():
        meta = read_json(folder / "bundle.json")
        assert meta["model"] in ("ridge", "mean", "hgb") and "reference_model" in meta["code_versions"]
        assert all((folder / m["dir"] / "reference.skops").is_file() for m in meta["members"])
        assert not list(folder.rglob("*.pkl")) and not list(folder.rglob("weights.safetensors")), name


@pytest.mark.parametrize("name", ["ridge", "mean", "hgb-set"])
def test_a_reference_bundle_reproduces_its_runs_test_predictions(tiny_run, bundles, hgb_run, name, tmp_path):
    folder = tiny_run / "results/predict/demo"  # the workflow's features of the simulated dataset
    bundle = load_bundle(bundles[name])
    frame = predict_features(bundle, folder / "data", shards_of(folder, bundle.meta), tmp_path / "out")
    runs = {0: hgb_run} if name == "hgb-set" else {k: tiny_run / f"results/runs/{name}/fold{k}" for k in FOLDS}
    for fold, run in runs.items():
        joined = run_test(run).join(frame, on="stream_id")
        assert joined.height == run_test(run).height > 5
        np.testing.assert_allclose(joined[f"pred_fold{fold}_seed0"], joined["y_pred"], atol=TOL, rtol=0)
    drivers = pl.read_parquet(tmp_path / "out/drivers.parquet")
    assert drivers.height == 5 * frame.height and drivers["contribution"].is_finite().all()
    assert drivers["attention"].null_count() == drivers.height  # a reference has no attention
    if name == "mean":  # a constant: nothing drives it
        assert (drivers["contribution"].abs() < 1e-9).all()


def test_the_boosting_bundle_predicts_a_copy_of_fold_0_s_test_streams_without_sales(tiny_run, bundles, hgb_run,
                                                                                      tmp_path):
    test = run_test(hgb_run)
    columns = read_json(tiny_run / "results/data/dataset.json")["columns"]
    root = copy_streams(tiny_run / "results/demo/raw", tmp_path / "next_week", test["stream_id"].to_list(),
                        columns=columns)
    frame = load_bundle(bundles["hgb-set"]).predict(root, tmp_path / "out", workers=1)
    joined = test.join(frame, on="stream_id")
    assert joined.height == test.height
    np.testing.assert_allclose(joined["log_sales_pred"], joined["y_pred"], atol=TOL, rtol=0)
    assert frame["log_sales"].null_count() == frame.height


def test_a_reference_bundle_refuses_other_code_and_another_column_mapping_in_one_line(tiny_run, bundles, tmp_path):
    spoilt = Path(shutil.copytree(bundles["hgb-set"], tmp_path / "bundle"))
    meta = read_json(spoilt / "bundle.json")
    meta["code_versions"]["reference_model"] = "000000000000"
    (spoilt / "bundle.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match=r"made by code version 000000000000 of stage 'reference_model'") as caught:
        load_bundle(spoilt)
    assert "\n" not in str(caught.value)
    columns = read_json(tiny_run / "results/data/dataset.json")["columns"]
    root = copy_streams(tiny_run / "results/demo/raw", tmp_path / "renamed", ["s0000", "s0001"], columns=columns)
    items = pl.read_parquet(root / "items.parquet")
    items.rename({"price": "listPrice"}).write_parquet(root / "items.parquet")
    with pytest.raises(DataError, match=r"missing column 'price'.*the model bundle was trained with") as caught:
        load_bundle(bundles["hgb-set"]).predict(root, tmp_path / "out", workers=1)
    assert "\n" not in str(caught.value)


def test_the_bundle_best_reproduces_the_ensemble_runs_test_predictions(tiny_run, tmp_path):
    runs = tiny_run / "results/runs"
    candidates = list(read_json(runs / "ensemble/fold0/model.json")["weights"])
    assert len(candidates) == 6  # every experiment of the demo feature set
    out = tmp_path / "best"
    with contextlib.chdir(tiny_run):  # as the workflow exports (see export)
        meta = export_best(ensemble_dirs={k: runs / f"ensemble/fold{k}" for k in FOLDS},
                           candidate_dirs={n: {k: runs / f"{n}/fold{k}" for k in FOLDS} for n in candidates},
                           padded_path=padded_path("demo"), data_dir=validated_dir(), features_dir=store_dir(),
                           out=out)
    assert not list(out.rglob("*.pkl"))
    assert all((out / d / "bundle.json").is_file() for d in meta.get("components", {}).values())
    choice = meta["choice"]
    assert set(choice["val_mse"]) == {*candidates, "ensemble"} and choice["choice"] == min(
        choice["val_mse"], key=lambda c: (choice["val_mse"][c], c == "ensemble"))
    folder = tiny_run / "results/predict/demo"
    bundle = load_bundle(out)
    frame = predict_features(bundle, folder / "data", shards_of(folder, bundle.meta), tmp_path / "out")
    source = "ensemble" if choice["choice"] == "ensemble" else choice["choice"]
    for fold in FOLDS:
        test = run_test(runs / f"{source}/fold{fold}")
        joined = test.join(frame, on="stream_id")
        assert joined.height == test.height
        np.testing.assert_allclose(joined[f"pred_fold{fold}_seed0"], joined["y_pred"], atol=TOL, rtol=0)
    drivers = pl.read_parquet(tmp_path / "out/drivers.parquet")
    assert drivers.height == 5 * frame.height and drivers["contribution"].is_finite().all()
    if choice["choice"] == "ensemble":
        assert sorted(p.name for p in (out / "components").iterdir()) == sorted(meta["components"])
        assert all(abs(sum(w.values()) - 1) < 1e-9 for w in meta["weights"].values())
