"""Predicting upcoming streams on the tiny run (tests/configs/tiny.yaml exports MEMF's bundle of every fold and
predicts the simulated dataset): the workflow's files, a copy of a run's test streams without sales predicted through
the bundle in another folder (their test predictions to 1e-5, new anchors, a corrupt clip and a missing image),
the CLI against the workflow, and the refusals (docs/predict.md)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from memf.core.io import DataError, read_json
from memf.predict.datasets import copy_streams
from memf.predict.intervals import conformal_quantile
from memf.predict.predictor import check_features, load_bundle

FOLDS = (0, 1, 2)
TOL = 1e-5


def run_test(tiny_run: Path, fold: int) -> pl.DataFrame:
    preds = pl.read_parquet(tiny_run / f"results/runs/memf/fold{fold}/predictions.parquet")
    return preds.filter((pl.col("split") == "test") & (pl.col("seed") == 0)).select("stream_id", "y_true", "y_pred")


@pytest.fixture(scope="module")
def bundle_dir(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The workflow's bundle, moved to a folder of its own: it must not need the run's files."""
    return Path(shutil.copytree(tiny_run / "results/bundles/memf", tmp_path_factory.mktemp("bundle") / "memf"))


def test_the_bundle_holds_every_fold_and_names_nothing_outside_itself(tiny_run, bundle_dir):
    meta = read_json(bundle_dir / "bundle.json")
    assert [m["fold"] for m in meta["members"]] == list(FOLDS) and all(m["seeds"] == [0] for m in meta["members"])
    # What it loads is inside it (provenance, such as the training dataset's folder, is only recorded).
    for config in load_bundle(bundle_dir).extractor_configs().values():
        for ref in (config["model"], config["options"].get("weights")):
            assert ref in (None, "none", "resnet18") or Path(ref).is_relative_to(bundle_dir.resolve()), ref
    assert all(not Path(m["dir"]).is_absolute() for m in meta["members"])
    assert {e["copy"] for e in meta["extractors"].values() if e["copy"]} == {
        "extractors/bert-tiny", "extractors/videomae-tiny", "extractors/wav2vec2-tiny"}
    assert meta["extractors"]["image"]["init_digest"].startswith("sha256:")  # resnet18 with weights: none
    assert not list(bundle_dir.rglob("*.pt")) and not list(bundle_dir.rglob("*.pkl"))


def test_the_interval_coverage_on_the_test_parts_is_computed_from_the_run_files(tiny_run, bundle_dir):
    calib = read_json(bundle_dir / "metrics.json")["interval"]
    covered = total = 0
    for fold in FOLDS:
        preds = pl.read_parquet(tiny_run / f"results/runs/memf/fold{fold}/predictions.parquet")
        res = {s: preds.filter(pl.col("split") == s).select((pl.col("y_true") - pl.col("y_pred")).abs())
               .to_series().to_numpy() for s in ("val", "test")}
        q = conformal_quantile(res["val"], 0.9, f"fold {fold}")
        assert calib["per_fold"][str(fold)]["q"] == pytest.approx(q)
        covered += int((res["test"] <= q).sum())
        total += len(res["test"])
    assert calib["test_coverage"] == pytest.approx(covered / total) and calib["test_streams"] == total == 40


def test_the_workflow_prediction_of_the_dataset_gives_each_fold_its_test_predictions(tiny_run):
    out = tiny_run / "results/predict/demo"
    preds = pl.read_parquet(out / "predictions.parquet")
    assert preds.height == 40 and pl.read_csv(out / "unpredicted.csv").height == 0
    for fold in FOLDS:
        joined = run_test(tiny_run, fold).join(preds, on="stream_id")
        np.testing.assert_allclose(joined[f"pred_fold{fold}_seed0"], joined["y_pred"], atol=TOL, rtol=0)
        np.testing.assert_allclose(joined["log_sales"], joined["y_true"], atol=TOL, rtol=0)
    mean = preds.select([f"pred_fold{k}_seed0" for k in FOLDS]).to_numpy().mean(axis=1)
    np.testing.assert_allclose(preds["log_sales_pred"], mean, rtol=1e-12)
    q = read_json(tiny_run / "results/bundles/memf/bundle.json")["intervals"]["q"]
    np.testing.assert_allclose(preds["log_sales_upper"] - preds["log_sales_pred"], q, rtol=1e-9)
    metrics = read_json(out / "metrics.json")
    assert metrics["sales_known"] == 40 and 0 <= metrics["interval"]["coverage"] <= 1 and "r2" in metrics["test"]
    drivers = pl.read_parquet(out / "drivers.parquet")
    assert drivers.height == 5 * 40 and drivers["contribution"].is_finite().all()
    attention = drivers.group_by("stream_id").agg(pl.col("attention").sum())["attention"].to_numpy()
    np.testing.assert_allclose(attention, 1.0, rtol=1e-5)
    truth = read_json(out / "drivers_vs_truth.json")
    assert truth["streams"] == 40 and set(truth["per_entity"]) == {"anchor", "commodity", "room", "video", "audio"}
    assert (out / "drivers.png").stat().st_size > 5000 and (out / "drivers_vs_truth.png").stat().st_size > 5000


@pytest.fixture(scope="module")
def upcoming(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Fold 0's test streams as a dataset of upcoming streams: no sales, every anchor renamed to one never seen,
    one stream's only video clip corrupt, and one item image of a stream with several items missing."""
    root = tmp_path_factory.mktemp("upcoming") / "next_week"
    columns = read_json(tiny_run / "results/data/dataset.json")["columns"]
    test = run_test(tiny_run, 0)
    copy_streams(tiny_run / "results/demo/raw", root, test["stream_id"].to_list(), columns=columns)
    assert "sales" not in pl.read_parquet(root / "streams.parquet").columns
    for table in ("streams", "anchors"):
        frame = pl.read_parquet(root / f"{table}.parquet")
        frame.with_columns(pl.lit("new-") + pl.col("anchor_id")).write_parquet(root / f"{table}.parquet")
    clips = pl.read_parquet(root / "clips.parquet")
    video = clips.filter(pl.col("kind") == "video").group_by("stream_id").agg(pl.col("path"))
    corrupt_stream, paths = next(r for r in video.sort("stream_id").iter_rows() if len(r[1]) == 1)
    (root / paths[0]).write_bytes(b"\x00\x00\x00\x18ftypmp42 this is not a video")
    items = pl.read_parquet(root / "items.parquet")
    several = items.group_by("stream_id").len().filter(pl.col("len") > 1)["stream_id"].sort()
    lost_stream = next(s for s in several if s != corrupt_stream)
    lost = items.filter(pl.col("stream_id") == lost_stream).sort("position").row(0, named=True)
    (root / lost["image"]).unlink()
    return {"root": root, "test": test, "corrupt": corrupt_stream, "lost_stream": lost_stream,
            "lost_item": lost["item_id"]}


@pytest.fixture(scope="module")
def predicted(bundle_dir: Path, upcoming: dict, tmp_path_factory: pytest.TempPathFactory) -> tuple[pl.DataFrame, Path]:
    out = tmp_path_factory.mktemp("predicted") / "next_week"
    frame = load_bundle(bundle_dir).predict(upcoming["root"], out, workers=1)
    return frame, out


def test_upcoming_streams_without_sales_get_the_run_s_test_predictions(predicted, upcoming):
    frame, out = predicted
    test = upcoming["test"]
    untouched = test.filter(~pl.col("stream_id").is_in([upcoming["corrupt"], upcoming["lost_stream"]]))
    joined = untouched.join(frame, on="stream_id")
    assert joined.height == untouched.height > 5  # new anchors are no obstacle: the model reads features, not ids
    np.testing.assert_allclose(joined["pred_fold0_seed0"], joined["y_pred"], atol=TOL, rtol=0)
    assert frame["log_sales"].null_count() == frame.height and frame["sales"].null_count() == frame.height
    metrics = read_json(out / "metrics.json")
    assert metrics["sales_known"] == 0 and metrics["test"] is None and metrics["interval"]["coverage"] is None
    assert (frame["sales_lower"] <= frame["sales_pred"]).all() and (frame["sales_pred"] <= frame["sales_upper"]).all()


def test_a_corrupt_clip_and_a_missing_image_follow_the_drop_rules_and_are_listed(predicted, upcoming):
    frame, out = predicted
    unpredicted = pl.read_csv(out / "unpredicted.csv")
    assert unpredicted["stream_id"].to_list() == [upcoming["corrupt"]]
    assert unpredicted["stage"].to_list() == ["validate"] and "no valid video clip" in unpredicted["reason"][0]
    excluded = pl.read_csv(out / "data/excluded.csv")
    clip = excluded.filter((pl.col("level") == "clip") & (pl.col("stream_id") == upcoming["corrupt"]))
    assert "video does not decode" in clip["reason"][0]
    item = excluded.filter(pl.col("object_id") == upcoming["lost_item"])
    assert item["level"].to_list() == ["item"] and item["reason"][0].startswith("image file not found: ")
    # The stream that lost an item is predicted from its other items.
    assert upcoming["lost_stream"] in frame["stream_id"].to_list()
    assert upcoming["corrupt"] not in frame["stream_id"].to_list()


def test_the_cli_gives_the_workflow_s_result(tiny_run, bundle_dir, tmp_path):
    out = tmp_path / "demo"
    cmd = [sys.executable, "-m", "memf.predict", str(bundle_dir), str(tiny_run / "results/demo/raw"), str(out),
           "--workers", "1"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "40 streams predicted" in done.stdout and "predict (models x streams)" in done.stderr  # progress bars
    ours = pl.read_parquet(out / "predictions.parquet")
    theirs = pl.read_parquet(tiny_run / "results/predict/demo/predictions.parquet")
    assert ours.columns == theirs.columns and ours["stream_id"].to_list() == theirs["stream_id"].to_list()
    for column in ours.columns[1:]:  # log scale to 1e-5; sales (exp of it) to 1e-5 relative
        tol = {"rtol": TOL, "atol": 0} if column.startswith("sales") else {"atol": TOL, "rtol": 0}
        np.testing.assert_allclose(ours[column].to_numpy().astype(float), theirs[column].to_numpy().astype(float),
                                   err_msg=column, **tol)
    drivers = pl.read_parquet(out / "drivers.parquet").join(
        pl.read_parquet(tiny_run / "results/predict/demo/drivers.parquet"), on=["stream_id", "entity"])
    np.testing.assert_allclose(drivers["contribution"], drivers["contribution_right"], atol=TOL)


def test_a_dataset_written_by_another_program_is_predicted_end_to_end(bundle_dir, tmp_path):
    from fakedata import write_dataset

    root = write_dataset(tmp_path / "theirs", n_streams=6)
    frame = load_bundle(bundle_dir).predict(root, tmp_path / "out", workers=1)
    assert sorted(frame["stream_id"].to_list()) == [f"s{i:03d}" for i in range(6)]
    assert frame["log_sales_pred"].is_finite().all() and frame["sales"].null_count() == 0
    metrics = read_json(tmp_path / "out" / "metrics.json")
    assert metrics["unpredicted"] == 0 and metrics["sales_known"] == 6 and 0 <= metrics["interval"]["coverage"] <= 1
    assert not (tmp_path / "out" / "drivers_vs_truth.json").exists()  # not simulated: no truth to compare with


def test_a_bundle_folder_predicts_a_dataset_in_the_workflow_without_training(bundle_dir, tmp_path):
    import yaml

    from fakedata import write_dataset
    from test_workflow import job_counts, snakemake

    write_dataset(tmp_path / "theirs", n_streams=4)
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump({
        "dataset": {"root": "theirs", "simulate": False}, "split": {"folds": 2},
        "experiments": {"memf": {"model": "memf", "feature_set": "demo"}},
        "predict": {"bundle": str(bundle_dir), "datasets": {"theirs": "theirs"}},
    }))
    jobs = job_counts(snakemake("-n", "results/predict/theirs/predictions.parquet", "--configfile", "cfg.yaml",
                                cwd=tmp_path))
    assert jobs == {"validate": 1, "predict": 1, **{f"extract_{m}": 2 for m in ("text", "image", "numeric", "video",
                                                                                  "audio")}}


# --- refusals ----------------------------------------------------------------------------------------------------------


@pytest.fixture
def spoilt(bundle_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(bundle_dir, tmp_path / "bundle"))


def edit(bundle: Path, change) -> None:
    meta = read_json(bundle / "bundle.json")
    change(meta)
    (bundle / "bundle.json").write_text(json.dumps(meta))


def test_a_missing_bundle_file_is_refused_in_one_line(spoilt):
    (spoilt / "members/fold1/weights.safetensors").unlink()
    with pytest.raises(DataError, match=r"bundle file members/fold1/weights.safetensors is missing"):
        load_bundle(spoilt)
    with pytest.raises(DataError, match=r"not a model bundle \(no bundle.json\)"):
        load_bundle(spoilt / "members")


def test_a_bundle_of_another_code_version_is_refused(spoilt):
    edit(spoilt, lambda m: m["code_versions"].update(model="000000000000"))
    with pytest.raises(DataError, match=r"made by code version 000000000000 of stage 'model', this checkout has"):
        load_bundle(spoilt)


def test_a_changed_copied_model_is_refused(spoilt):
    with open(spoilt / "extractors/bert-tiny/vocab.txt", "a") as fh:
        fh.write("extra\n")
    with pytest.raises(DataError, match=r"bundle file extractors/bert-tiny \(extractor bert-tiny\) changed since export"):
        load_bundle(spoilt)


def test_features_of_another_extractor_do_not_fit_the_bundle(tiny_run, bundle_dir):
    bundle = load_bundle(bundle_dir)
    other = sorted((tiny_run / "results/features/image/resnet50").glob("shard-*[0-9].parquet"))
    with pytest.raises(DataError, match=r"made by extractor resnet50 with dim 2048, but the bundle's image extractor "
                                        r"resnet18 has 512"):
        check_features(bundle, {"image": other})


def test_the_cli_refuses_in_one_line(tmp_path, upcoming, bundle_dir):
    done = subprocess.run([sys.executable, "-m", "memf.predict", str(tmp_path / "nowhere"), str(upcoming["root"]),
                           str(tmp_path / "out")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("memf error: ") and "not a model bundle" in done.stderr
    renamed = Path(shutil.copytree(upcoming["root"], tmp_path / "renamed"))
    items = pl.read_parquet(renamed / "items.parquet")
    items.rename({"price": "listPrice"}).write_parquet(renamed / "items.parquet")
    done = subprocess.run([sys.executable, "-m", "memf.predict", str(bundle_dir), str(renamed), str(tmp_path / "o")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "missing column 'price'" in done.stderr and "the model bundle was trained with" in done.stderr
