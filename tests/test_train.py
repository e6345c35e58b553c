"""memf.training.train: determinism, validation-only model selection, resume, safetensors round trip, run folder contents."""

import json

import numpy as np
import polars as pl
import pytest
import torch
from safetensors.torch import load_file
from train_support import tiny_builder, tiny_padded

from memf.core.io import DataError, read_json
from memf.core.metrics import METRICS, regression_metrics
from memf.training.padded import Padded, write_padded
from memf.training.runs import TRAINED_FILES, read_predictions
from memf.training.train import CHECKPOINT_DIR, TrainConfig, load_model, predict, run_training

torch.set_num_threads(1)
CFG = {"epochs": 12, "batch_size": 16, "lr": 3e-3, "patience": 4, "checkpoint_every": 1, "device": "cpu"}


def _run(tmp_path, padded: Padded, name="run", cfg=CFG, seed=0, model="tiny", **kwargs):
    path = tmp_path / f"{name}.h5"
    write_padded(path, padded)
    return run_training(
        path, tmp_path / name, experiment=name, model_name=model, options={"dropout": 0.2}, feature_set="demo",
        seed=seed, train_cfg=cfg, builder=tiny_builder, **kwargs,
    )


def test_run_writes_every_file_and_metrics_match_predictions(tmp_path):
    metrics = _run(tmp_path, tiny_padded(100))
    run = tmp_path / "run"
    assert sorted(p.name for p in run.iterdir()) == sorted(TRAINED_FILES)  # the checkpoint folder is removed at the end
    preds = read_predictions(run / "predictions.parquet")
    assert preds.height == 100 and set(preds["split"]) == {"train", "val", "test"}
    test = preds.filter(pl.col("split") == "test")
    again = regression_metrics(test["y_true"].to_numpy(), test["y_pred"].to_numpy())
    on_disk = read_json(run / "metrics.json")
    for name in METRICS:
        assert on_disk[name] == pytest.approx(again[name], abs=1e-12) == metrics[name]
    hist = pl.read_parquet(run / "history.parquet")
    assert hist.height == on_disk["epochs_run"] and 1 <= on_disk["epoch"] <= on_disk["epochs_run"]
    assert {f"test_{m}" for m in METRICS} | {f"val_{m}" for m in METRICS} | {"train_loss", "lr", "epoch"} <= set(hist.columns)
    # The chosen epoch is the one with the lowest validation MSE.
    assert hist["epoch"][int(hist["val_mse"].arg_min())] == on_disk["epoch"]
    attn = pl.read_parquet(run / "attention.parquet")
    assert attn.height == test.height * 25
    sums = attn.group_by("stream_id", "query").agg(pl.col("weight").sum())["weight"].to_numpy()
    np.testing.assert_allclose(sums, 1.0, rtol=1e-5)
    meta = read_json(run / "model.json")
    assert meta["model"] == "tiny" and meta["epoch"] == on_disk["epoch"] and meta["attention_labels"][0] == "anchor"
    assert set(meta["metrics"]) == set(METRICS)


def test_model_without_attention_writes_an_empty_attention_table(tmp_path):
    _run(tmp_path, tiny_padded(60), model="tiny_noattn", cfg={**CFG, "epochs": 2})
    attn = pl.read_parquet(tmp_path / "run" / "attention.parquet")
    assert attn.height == 0 and attn.columns == ["stream_id", "query", "key", "weight"]


def test_same_seed_same_metrics_and_other_seed_differs(tmp_path):
    padded = tiny_padded(80)
    a = _run(tmp_path, padded, "a", seed=3)
    b = _run(tmp_path, padded, "b", seed=3)
    c = _run(tmp_path, padded, "c", seed=4)
    assert all(a[m] == b[m] for m in METRICS)
    assert any(a[m] != c[m] for m in METRICS)


def test_selection_never_looks_at_test(tmp_path):
    clean = tiny_padded(80)
    corrupt = tiny_padded(80)
    test = corrupt.split == 2
    corrupt.target[test] = np.random.default_rng(1).normal(50.0, 30.0, size=test.sum()).astype(np.float32)
    a = _run(tmp_path, clean, "clean")
    b = _run(tmp_path, corrupt, "corrupt")
    assert a["epoch"] == b["epoch"] and a["epochs_run"] == b["epochs_run"]
    wa, wb = load_file(tmp_path / "clean" / "model.safetensors"), load_file(tmp_path / "corrupt" / "model.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert a["mse"] != b["mse"]  # the test metrics themselves did see the corrupted targets


class Interrupt(Exception):
    pass


def test_resume_after_interruption_gives_the_same_result(tmp_path):
    padded = tiny_padded(80)
    full = _run(tmp_path, padded, "full")

    def stop(epoch, row):
        if epoch == 4:
            raise Interrupt

    with pytest.raises(Interrupt):
        _run(tmp_path, padded, "cut", on_epoch_end=stop)
    state = read_json(tmp_path / "cut" / CHECKPOINT_DIR / "state.json")
    assert state["progress"]["epoch"] == 4
    resumed = _run(tmp_path, padded, "cut")
    assert resumed["resumed_from_epoch"] == 4
    assert all(full[m] == resumed[m] for m in METRICS) and full["epoch"] == resumed["epoch"]
    wa, wb = load_file(tmp_path / "full" / "model.safetensors"), load_file(tmp_path / "cut" / "model.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert not (tmp_path / "cut" / CHECKPOINT_DIR).exists()


def test_checkpoint_of_another_run_is_not_resumed(tmp_path):
    padded = tiny_padded(60)

    def stop(epoch, row):
        if epoch == 2:
            raise Interrupt

    with pytest.raises(Interrupt):
        _run(tmp_path, padded, "x", on_epoch_end=stop)
    metrics = _run(tmp_path, padded, "x", cfg={**CFG, "lr": 1e-3})  # other settings: a different fingerprint
    assert metrics["resumed_from_epoch"] is None


def test_safetensors_round_trip_reproduces_predictions(tmp_path):
    padded = tiny_padded(60)
    _run(tmp_path, padded, cfg={**CFG, "epochs": 3})
    model, meta = load_model(tmp_path / "run", builder=tiny_builder)
    assert (tmp_path / "run" / "model.safetensors").read_bytes()[:8] != b"\x80\x04"  # not a pickle
    rows = np.arange(len(padded))
    pred, _ = predict(model, padded, rows, "cpu", 7, meta["target_mean"], meta["target_sd"])
    saved = read_predictions(tmp_path / "run" / "predictions.parquet")["y_pred"].to_numpy()
    np.testing.assert_allclose(pred, saved, rtol=1e-6, atol=1e-6)
    header = json.loads(__import__("safetensors").safe_open(str(tmp_path / "run" / "model.safetensors"), "pt").metadata()["memf"])
    assert header["model"] == "tiny" and header["dims"] == meta["dims"]


def test_bad_config_and_bad_data_are_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown keys"):
        TrainConfig.from_dict({"epoch": 3})
    with pytest.raises(ValueError, match="epochs"):
        TrainConfig.from_dict({"epochs": 0})
    padded = tiny_padded(30)
    padded.split[:] = 0
    with pytest.raises(DataError, match="val split"):
        _run(tmp_path, padded)


def test_real_memf_model_trains_and_reports_entity_attention(tmp_path):
    from memf.models import build_model

    path = tmp_path / "p.h5"
    write_padded(path, tiny_padded(40))
    metrics = run_training(
        path, tmp_path / "memf", experiment="memf", model_name="memf",
        options={"width": 16, "heads": 2, "layers": 1, "dropout": 0.0, "drop_entities": ["audio"]},
        feature_set="demo", seed=0, train_cfg={**CFG, "epochs": 2}, builder=build_model,
    )
    assert np.isfinite(metrics["r2"])
    attn = pl.read_parquet(tmp_path / "memf" / "attention.parquet")
    assert attn["query"].unique(maintain_order=True).to_list() == ["anchor", "commodity", "room", "video"]
