"""Prediction's parts without a trained run: a dataset to predict through validation, the interval's calibration, the
neutral reference of the drivers and their comparison with a truth, fitting new data to a model's axes, and the
config's predict section (docs/predict.md). The whole chain on the tiny run is in test_predict_workflow.py."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from fakedata import write_dataset
from memf.config import ConfigError, load_config
from memf.core.io import DataError, read_json
from memf.data.contract import DEFAULT_COLUMNS
from memf.data.validate import validate_dataset
from memf.padding.padded import RaggedBlock
from memf.predict.drivers import compare_with_truth, drivers_frame, true_entity_contributions
from memf.predict.intervals import calibrate, conformal_quantile, coverage
from memf.predict.neutral import neutral_reference, neutralise
from memf.predict.plan import extractor_signature
from memf.predict.predictor import check_fits
from train_support import tiny_padded

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "workflow" / "schemas" / "config.schema.yaml"


# --- a dataset to predict through validation -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("raw") / "raw", n_streams=4)


@pytest.fixture
def raw(pristine: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(pristine, tmp_path / "raw"))


def validate_for_prediction(raw: Path, out: Path):
    return validate_dataset(raw, out, columns=DEFAULT_COLUMNS, target_offset=1.0, max_drop_fraction=1.0, split_seed=0,
                            folds=0, probe_workers=1, probe_timeout_s=20)


def test_a_dataset_without_sales_is_validated_for_prediction_without_folds(raw, tmp_path):
    path = raw / "streams.parquet"
    pl.read_parquet(path).drop("sales").write_parquet(path)
    result = validate_for_prediction(raw, tmp_path / "out")
    streams = pl.read_parquet(tmp_path / "out" / "streams.parquet")
    assert result.n_kept == 4 and result.fold_sizes == []
    assert streams["fold"].to_list() == [-1] * 4 and streams["target"].is_nan().all()
    meta = read_json(tmp_path / "out" / "dataset.json")
    assert meta["folds"]["k"] == 0 and meta["sales_known"] == 0 and meta["purpose"] == "predict"
    assert meta["target_offset"] == 1.0
    assert pl.read_csv(tmp_path / "out" / "summary.csv")["part"].to_list() == ["to predict"]


def test_unknown_sales_are_predicted_and_bad_ones_still_dropped(raw, tmp_path):
    path = raw / "streams.parquet"
    frame = pl.read_parquet(path).sort("stream_id")
    frame.with_columns(sales=pl.Series([None, -3.0, 10.0, 0.0])).write_parquet(path)
    validate_for_prediction(raw, tmp_path / "out")
    streams = pl.read_parquet(tmp_path / "out" / "streams.parquet").sort("stream_id")
    ids = frame["stream_id"].to_list()
    assert streams["stream_id"].to_list() == [ids[0], ids[2], ids[3]]  # the negative one is a recorded drop
    target = streams["target"].to_numpy()
    assert math.isnan(target[0]) and target[1] == pytest.approx(math.log(11.0)) and target[2] == 0.0
    excluded = pl.read_parquet(tmp_path / "out" / "excluded.parquet").filter(pl.col("level") == "stream")
    assert excluded["reason"].to_list() == ["sales is negative"]
    # Training data still needs every sale.
    frame.with_columns(sales=pl.Series([None, 1.0, 10.0, 0.0])).write_parquet(path)
    validate_dataset(raw, tmp_path / "train", columns=DEFAULT_COLUMNS, target_offset=1.0, max_drop_fraction=1.0,
                     split_seed=0, folds=2, probe_workers=1)
    assert pl.read_parquet(tmp_path / "train" / "streams.parquet").height == 3


def test_a_column_of_the_bundle_missing_from_the_data_is_named_with_the_bundle(raw, tmp_path):
    path = raw / "items.parquet"
    pl.read_parquet(path).rename({"price": "listPrice"}).write_parquet(path)
    with pytest.raises(DataError, match=r"missing column 'price'.*the model bundle was trained with the commodity's "
                                        r"numeric in a column named 'price'"):
        validate_for_prediction(raw, tmp_path / "out")


# --- intervals -------------------------------------------------------------------------------------------------------


def test_the_conformal_quantile_is_the_ceil_n_plus_1_rank():
    residuals = np.arange(1.0, 20.0)  # 19 residuals: rank ceil(20 * 0.9) = 18
    assert conformal_quantile(-residuals, 0.9, "x") == 18.0
    with pytest.raises(DataError, match="8 validation streams cannot calibrate a 90% interval"):
        conformal_quantile(np.ones(8), 0.9, "fold 0")


def _run_predictions(fold: int, rng: np.random.Generator, n: int = 40) -> pl.DataFrame:
    y = rng.normal(size=n)
    rows = []
    for seed in (0, 1):
        pred = y + rng.normal(scale=0.5, size=n)
        split = np.array(["train"] * (n - 20) + ["val"] * 10 + ["test"] * 10)
        rows.append(pl.DataFrame({"stream_id": [f"f{fold}s{i}" for i in range(n)], "seed": seed, "split": split,
                                  "y_true": y, "y_pred": pred}))
    return pl.concat(rows)


def test_calibration_uses_validation_residuals_of_the_seed_mean_and_scores_the_test_part():
    rng = np.random.default_rng(0)
    runs = {0: _run_predictions(0, rng), 1: _run_predictions(1, rng)}
    calib = calibrate(runs, {0: [0, 1], 1: [0, 1]}, 0.9)
    for fold, frame in runs.items():
        mean = frame.group_by("stream_id", maintain_order=True).agg(pl.col("split").first(), pl.col("y_true").first(),
                                                                    pl.col("y_pred").mean())
        part = {s: mean.filter(pl.col("split") == s) for s in ("val", "test")}
        q = np.sort((part["val"]["y_true"] - part["val"]["y_pred"]).abs().to_numpy())[math.ceil(11 * 0.9) - 1]
        assert calib.per_fold[fold]["q"] == pytest.approx(q)
        test_res = (part["test"]["y_true"] - part["test"]["y_pred"]).abs().to_numpy()
        assert calib.per_fold[fold]["test_coverage"] == pytest.approx(np.mean(test_res <= q))
    assert calib.n_calibration == 20 and calib.test_coverage == pytest.approx(
        np.mean([calib.per_fold[k]["test_coverage"] for k in (0, 1)]))
    one = calibrate({0: runs[0]}, {0: [1]}, 0.9)  # one fold, one seed: plain split conformal of that seed
    assert one.q == one.per_fold[0]["q"]
    assert coverage(np.array([0.0, 1.0, np.nan]), np.array([-1.0, 2.0, 0.0]), np.array([1.0, 3.0, 0.0])) == 0.5


# --- drivers ---------------------------------------------------------------------------------------------------------


def test_neutralising_an_entity_replaces_only_its_inputs_and_keeps_masks_valid():
    padded = tiny_padded(30)
    arrays = padded.arrays
    rows = np.arange(20)
    neutral = neutral_reference([{k: v[rows] for k, v in arrays.items()}])
    real_items = arrays["commodity/text"][rows][arrays["commodity/mask"][rows]]
    np.testing.assert_allclose(neutral["commodity/text"], real_items.mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(neutral["anchor/text"], arrays["anchor/text"][rows].mean(axis=0), rtol=1e-5)
    assert int(neutral["commodity/count"]) == round(arrays["commodity/mask"][rows].sum(1).mean())
    # Accumulated over batches padded to their own lists (as the export reads the store), it is the same reference.
    ragged = RaggedBlock.from_padded(padded)
    batches = [ragged.take(np.arange(start, min(start + 3, 20))).padded() for start in range(0, 20, 3)]
    for key, value in neutral_reference(batches).items():
        np.testing.assert_allclose(value, neutral[key], rtol=1e-6, err_msg=key)
    for entity in ("anchor", "commodity", "room", "video", "audio"):
        out = neutralise(arrays, entity, neutral)
        changed = {k for k in arrays if not np.array_equal(out[k], arrays[k])}
        assert changed and all(k.startswith(entity + "/") for k in changed), (entity, changed)
    out = neutralise(arrays, "video", neutral)
    count = int(neutral["video/count"])
    assert out["video/mask"][:, :count].all() and not out["video/mask"][:, count:].any()
    assert (out["video/x"][:, :count] == neutral["video/x"]).all() and (out["video/x"][:, count:] == 0).all()
    np.testing.assert_array_equal(neutralise(arrays, "anchor", neutral)["anchor/numeric"][3], neutral["anchor/numeric"])
    # A batch whose own item axis is shorter than the neutral count gets the whole neutral set.
    short = {k: v[:, :1] if k.startswith("commodity/") else v for k, v in arrays.items()}
    count = int(neutral["commodity/count"])
    assert count > 1
    out = neutralise(short, "commodity", neutral)
    assert out["commodity/mask"].shape[1] == count and out["commodity/mask"].all()
    assert out["commodity/text"].shape[1:] == (count, *arrays["commodity/text"].shape[2:])


def test_the_comparison_with_the_truth_credits_the_interaction_and_ranks():
    rng = np.random.default_rng(1)
    truth = pl.DataFrame({"stream_id": [f"s{i}" for i in range(12)],
                          **{f"contrib_{e}": rng.normal(size=12) for e in ("anchor", "commodity", "room", "video",
                                                                           "audio", "interaction", "fit")}})
    credited = true_entity_contributions(truth, {"world": {"credit": {"fit": {"anchor": 0.5, "commodity": 0.5}}}})
    expected = truth["contrib_anchor"] + 0.5 * truth["contrib_interaction"] + 0.5 * truth["contrib_fit"]
    np.testing.assert_allclose(credited["anchor"].to_numpy(), expected.to_numpy())
    np.testing.assert_allclose(credited["room"].to_numpy(), truth["contrib_room"].to_numpy())
    entities = ["anchor", "commodity", "room", "video", "audio"]
    model = credited.select(entities).to_numpy() * 3.0  # the truth rescaled: every rank and every sign agrees
    drivers = drivers_frame(credited["stream_id"].to_numpy(), entities, model, None)
    result = compare_with_truth(drivers, credited)
    assert all(r == pytest.approx(1.0) for r in result["per_entity"].values())
    assert result["per_stream"]["mean"] == pytest.approx(1.0) and result["per_stream"]["top_entity_agrees"] == 1.0
    assert drivers["attention"].null_count() == drivers.height  # a model without attention leaves it null


# --- new data against the model ----------------------------------------------------------------------------------------


def test_new_data_may_have_shorter_item_and_clip_axes_than_the_model_and_other_shapes_are_refused():
    padded = tiny_padded(10)
    dims = padded.dims()
    model = {k: list(v) for k, v in dims.items()}
    model["commodity/mask"][0] = model["commodity/text"][0] = model["commodity/image"][0] = 5
    model["commodity/numeric"][0] = 5
    check_fits(dims, model, "new.h5")  # 3 items against the model's 5: every batch is padded to its own lists
    with pytest.raises(DataError, match=r"'commodity/text' has per-stream shape \(3, 2, 6\), the bundle's model "
                                        r"reads \(2, 2, 6\)"):
        check_fits(dims, {**model, "commodity/text": [2, 2, 6]}, "new.h5")
    model["anchor/text"] = [2, 7]
    with pytest.raises(DataError, match=r"'anchor/text' has per-stream shape \(2, 6\), the bundle's model reads \(2, 7\)"):
        check_fits(dims, model, "new.h5")


def test_an_extractor_signature_ignores_where_the_files_are():
    entry = {"kind": "torchvision", "options": {"weights": "results/models/w.safetensors", "resize": 32},
             "precision": "bf16", "code_version": "abc", "weights": "sha256:1", "dim": 512,
             "preprocessing": {"values": {"resize": 32}, "from": {"resize": "option"}, "reference": "at /a"}}
    moved = {**entry, "options": {**entry["options"], "weights": "/b/extractors/rn/w.safetensors"},
             "preprocessing": {**entry["preprocessing"], "reference": "at /b"}}
    assert extractor_signature(entry) == extractor_signature(moved)
    assert extractor_signature(entry) != extractor_signature({**entry, "dim": 2048})


# --- the config ------------------------------------------------------------------------------------------------------


def problems(tmp_path: Path, predict: dict, **extra) -> list[str]:
    config = {"predict": predict, **extra}
    try:
        load_config(config, SCHEMA, tmp_path)
    except ConfigError as exc:
        return exc.problems
    return []


def test_the_predict_section_is_checked_at_load_one_line_each(tmp_path):
    memf = {"memf": {"model": "memf", "feature_set": "demo"}, "ridge": {"model": "ridge", "feature_set": "demo"},
            "ridge-latent": {"model": "ridge", "feature_set": "latent"}}
    assert problems(tmp_path, {}, experiments=memf) == []
    assert problems(tmp_path, {"bundle": "memf", "datasets": {"sim": "results/demo/raw"}}, experiments=memf) == []
    cases = {
        "config key 'predict.bundle': 'nope' is neither an experiment (known: memf, ridge, ridge-latent) nor a bundle "
        "folder": {"bundle": "nope"},
        "config key 'predict.bundle': 'ridge-latent' reads the simulator's latent factors": {"bundle": "ridge-latent"},
        "config key 'predict.bundle': null, but predict.datasets names datasets": {"datasets": {"x": "results/demo/raw"}},
        "config key 'predict.datasets.next': 'missing' is not a folder": {"bundle": "memf", "datasets": {"next": "missing"}},
        "config key 'predict.fold': 7 is not a fold that runs": {"bundle": "memf", "fold": 7},
        "config key 'predict.seeds': [5] are not all seeds of experiment 'memf'": {"bundle": "memf", "seeds": [5]},
        "config key 'predict.whatif.x': 'x' is not a dataset of predict.datasets":
            {"bundle": "memf", "whatif": {"x": "v.csv"}},
        "config key 'predict.fold': 0; the bundle best keeps every fold": {"bundle": "best", "fold": 0},
    }
    for expected, predict in cases.items():
        lines = problems(tmp_path, predict, experiments=memf)
        assert len(lines) == 1 and lines[0].startswith(expected), (expected, lines)
    (tmp_path / "empty").mkdir()
    lines = problems(tmp_path, {"bundle": "memf", "datasets": {"next": "empty"}}, experiments=memf)
    assert lines == ["config key 'predict.datasets.next': 'empty' has no streams.parquet, anchors.parquet, "
                     "items.parquet, clips.parquet (docs/data-format.md)"]
    assert problems(tmp_path, {"bundle": "memf", "datasets": {"bad name": "x"}}, experiments=memf) == [
        "config key 'predict.datasets': 'bad name' does not match '^[A-Za-z0-9][A-Za-z0-9_.-]*$'"]


def test_importing_memf_and_the_workflow_s_predict_plan_stays_cheap():
    import subprocess
    import sys

    heavy = "sorted(m for m in ('numpy', 'polars', 'torch', 'pyarrow') if m in sys.modules)"
    code = f"import sys, memf, memf.predict.plan; print({heavy}); memf.load_bundle; print({heavy})"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    # Nothing heavy when memf is imported or load_bundle looked up; numpy, polars and torch only when a bundle loads.
    assert out.stdout.split("\n")[:2] == ["[]", "[]"]
