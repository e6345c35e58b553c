"""memf.training: one (experiment, fold) job: the run folder, determinism, validation-only choices (the tuning
included), resume of epochs, seeds and studies, safetensors round trip."""

import json

import numpy as np
import polars as pl
import pytest
import torch
from safetensors.torch import load_file

from memf.core.io import DataError, read_json
from memf.core.metrics import METRICS, regression_metrics
from memf.padding.padded import Padded
from memf.padding.store import write_padded
from memf.training.fit import JobSpec, fit_experiment
from memf.training.loop import predict, train_model
from memf.training.matrix import TRAINED_FILES
from memf.training.members import load_models
from memf.training.neural import NeuralFitter
from memf.training.reference_fit import ReferenceFitter
from memf.training.runs import read_predictions
from memf.training.settings import TrainConfig, TuningSettings, parse_space
from train_support import tiny_builder, tiny_fold, tiny_padded

torch.set_num_threads(1)
CFG = {"epochs": 12, "batch_size": 16, "lr": 3e-3, "patience": 4, "checkpoint_every": 1, "device": "cpu"}
SPACE = parse_space("t", {"train.lr": {"log_uniform": [1e-3, 1e-2]}, "model.width": {"choice": [8, 16]}})
TUNING = TuningSettings(trials=3, startup_trials=1, prune_warmup_epochs=2)


def _job(tmp_path, padded: Padded, name="run", cfg=CFG, seeds=(0,), model="tiny", fold=0, space=None,
         builder=tiny_builder, **spec):
    path = tmp_path / f"{name}.h5"
    write_padded(path, padded)
    job = JobSpec(experiment=name, model=model, feature_set="demo", fold=fold, seeds=tuple(seeds),
                  options={"dropout": 0.2}, space=space, **spec)
    fitter = ReferenceFitter if job.is_reference else NeuralFitter.with_builder(builder)
    return fit_experiment(path, tmp_path / name, job, cfg, fitter=fitter, tuning_dir=tmp_path / "tuning" / name,
                          tuning=TUNING)


def test_job_writes_every_file_and_metrics_match_predictions(tmp_path):
    _job(tmp_path, tiny_padded(100), seeds=(0, 1))
    run = tmp_path / "run"
    assert sorted(p.name for p in run.iterdir()) == sorted(TRAINED_FILES)  # the .partial folder is gone
    preds = read_predictions(run / "predictions.parquet")
    assert preds.height == 200 and set(preds["seed"]) == {0, 1} and set(preds["split"]) == {"train", "val", "test"}
    on_disk = read_json(run / "metrics.json")
    hist = pl.read_parquet(run / "history.parquet")
    for seed in (0, 1):
        part = preds.filter(pl.col("seed") == seed)
        test = part.filter(pl.col("split") == "test")
        again = regression_metrics(test["y_true"].to_numpy(), test["y_pred"].to_numpy())
        for name in METRICS:
            assert on_disk["seeds"][str(seed)]["test"][name] == pytest.approx(again[name], abs=1e-12)
        h = hist.filter(pl.col("seed") == seed)
        # The chosen epoch is the one with the lowest validation MSE; the test curves are there for Fig. 3.
        assert h["epoch"][int(h["val_mse"].arg_min())] == on_disk["seeds"][str(seed)]["epoch"]
        assert {f"test_{m}" for m in METRICS} <= set(h.columns)
    assert on_disk["n"] == {"train": 60, "val": 20, "test": 20}
    attn = pl.read_parquet(run / "attention.parquet")
    assert attn.height == 2 * 20 * 25
    sums = attn.group_by("seed", "stream_id", "query").agg(pl.col("weight").sum())["weight"].to_numpy()
    np.testing.assert_allclose(sums, 1.0, rtol=1e-5)
    meta = read_json(run / "model.json")
    assert meta["model"] == "tiny" and meta["fold"] == 0 and meta["attention_labels"][0] == "anchor"
    assert set(meta["numeric_scaler"]) == {"anchor/numeric", "room/numeric", "commodity/numeric"}
    best = read_json(tmp_path / "tuning" / "run" / "best.json")
    assert best["params"] == {} and best["source"] == "fixed" and best["trials"] == 0


def test_same_seed_same_metrics_and_other_seed_differs(tmp_path):
    padded = tiny_padded(80)
    a = _job(tmp_path, padded, "a", seeds=(3,))["seeds"]["3"]["test"]
    b = _job(tmp_path, padded, "b", seeds=(3,))["seeds"]["3"]["test"]
    c = _job(tmp_path, padded, "c", seeds=(4,))["seeds"]["4"]["test"]
    assert a == b
    assert a != c


def test_tuning_and_selection_never_read_test_targets(tmp_path):
    """Corrupting the fold's test targets leaves every trial, the choice and the weights as they were."""
    clean = tiny_padded(80)
    corrupt = tiny_padded(80)
    test = corrupt.fold == 0
    corrupt.target[test] = np.random.default_rng(1).normal(50.0, 30.0, size=test.sum()).astype(np.float32)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = _job(tmp_path / "a", clean, space=SPACE, source="t")
    b = _job(tmp_path / "b", corrupt, space=SPACE, source="t")
    ta = pl.read_parquet(tmp_path / "a/tuning/run/trials.parquet").drop("seconds")
    tb = pl.read_parquet(tmp_path / "b/tuning/run/trials.parquet").drop("seconds")
    assert ta.height == 3 and ta.equals(tb)
    assert read_json(tmp_path / "a/tuning/run/best.json")["params"] == read_json(tmp_path / "b/tuning/run/best.json")["params"]
    assert a["seeds"]["0"]["epoch"] == b["seeds"]["0"]["epoch"]
    wa = load_file(tmp_path / "a/run/weights.safetensors")
    wb = load_file(tmp_path / "b/run/weights.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert a["seeds"]["0"]["test"]["mse"] != b["seeds"]["0"]["test"]["mse"]  # the test score did see them


def test_numeric_standardisation_is_fitted_on_the_training_part_only(tmp_path):
    padded = tiny_padded(60)
    other = tiny_padded(60)
    data = tiny_fold(padded, tmp_path / "a.h5", 1)  # fold 1: test = fold id 1, validation = fold id 2, train = the rest
    train = data.rows["train"]
    mask = np.ones(60, bool)
    mask[train] = False
    for key in ("anchor/numeric", "room/numeric", "commodity/numeric"):
        other.arrays[key][mask] += 100.0  # every validation and test stream changes
    moved = tiny_fold(other, tmp_path / "b.h5", 1)
    trained = data.arrays(train)  # the training streams as the model reads them
    for key, (mean, sd) in data.scaler.stats.items():
        np.testing.assert_allclose(moved.scaler.stats[key][0], mean)
        np.testing.assert_allclose(moved.scaler.stats[key][1], sd)
        z = trained[key]
        if key != "commodity/numeric":
            np.testing.assert_allclose(z.mean(0), 0.0, atol=1e-5)
            np.testing.assert_allclose(z.std(0), 1.0, atol=1e-5)
        else:
            real = z[trained["commodity/mask"]]  # [n_items, L]: the statistics are over the real items
            np.testing.assert_allclose(real.mean(0), 0.0, atol=1e-5)
            np.testing.assert_allclose(real.std(0), 1.0, atol=1e-5)
        # the same statistics as over every training row at once (the fit streams over blocks)
        raw = padded.arrays[key][train]
        raw = raw[padded.arrays["commodity/mask"][train]] if key == "commodity/numeric" else raw
        np.testing.assert_allclose(mean, raw.astype(np.float64).mean(0), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(sd, raw.astype(np.float64).std(0), rtol=1e-12)
    # Padded items stay zero after standardisation.
    every = data.arrays(np.arange(60))
    assert (every["commodity/numeric"][~every["commodity/mask"]] == 0).all()


class Interrupt(Exception):
    pass


def test_epoch_checkpoint_resume_gives_the_same_result(tmp_path):
    data = tiny_fold(tiny_padded(80), tmp_path / "p.h5")
    cfg = TrainConfig.from_dict(CFG)

    def run(ckpt, hook=None):
        torch.manual_seed(0)
        model = tiny_builder("tiny", data.dims(), dropout=0.2)
        result = train_model(model, data, cfg, 0, "cpu", checkpoint_dir=ckpt, run_fingerprint="fp", on_epoch_end=hook)
        return model, result

    full_model, full = run(tmp_path / "full")

    def stop(epoch, row):
        if epoch == 4:
            raise Interrupt

    with pytest.raises(Interrupt):
        run(tmp_path / "cut", stop)
    assert read_json(tmp_path / "cut" / "state.json")["progress"]["epoch"] == 4
    model, resumed = run(tmp_path / "cut")
    assert resumed.resumed_from == 4 and resumed.best_epoch == full.best_epoch
    assert resumed.history == full.history
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), full_model.state_dict().values()))


def test_a_finished_seed_is_kept_when_the_job_dies_later(tmp_path):
    padded = tiny_padded(60)
    built = []

    def dies_on_second_seed(name, dims, **options):
        built.append(options)
        if len(built) == 2:
            raise Interrupt
        return tiny_builder(name, dims, **options)

    with pytest.raises(Interrupt):
        _job(tmp_path, padded, "x", seeds=(0, 1), builder=dies_on_second_seed)
    assert (tmp_path / "x" / ".partial" / "seed0" / "done.json").exists()
    built.clear()
    again = _job(tmp_path, padded, "x", seeds=(0, 1), builder=lambda *a, **k: built.append(k) or tiny_builder(*a, **k))
    assert len(built) == 1  # seed 0 came back from .partial; only seed 1 trained
    reference = _job(tmp_path, padded, "y", seeds=(0, 1))
    for seed in ("0", "1"):
        assert again["seeds"][seed]["test"] == reference["seeds"][seed]["test"]


def test_safetensors_round_trip_reproduces_predictions(tmp_path):
    padded = tiny_padded(60)
    _job(tmp_path, padded, cfg={**CFG, "epochs": 3}, seeds=(0, 1))
    models, meta = load_models(tmp_path / "run", builder=tiny_builder)
    assert (tmp_path / "run" / "weights.safetensors").read_bytes()[:8] != b"\x80\x04"  # not a pickle
    data = tiny_fold(padded, tmp_path / "again.h5")
    saved = read_predictions(tmp_path / "run" / "predictions.parquet")
    for seed, model in models.items():
        scale = meta["per_seed"][str(seed)]
        pred, _ = predict(model, data, np.arange(len(padded)), "cpu", 7, scale["target_mean"], scale["target_sd"])
        np.testing.assert_allclose(pred, saved.filter(pl.col("seed") == seed)["y_pred"].to_numpy(), rtol=1e-6, atol=1e-6)
    from safetensors import safe_open

    header = json.loads(safe_open(str(tmp_path / "run" / "weights.safetensors"), "pt").metadata()["memf"])
    assert header["model"] == "tiny" and header["dims"] == meta["dims"]


def test_bad_config_and_bad_data_are_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown keys"):
        TrainConfig.from_dict({"epoch": 3})
    with pytest.raises(ValueError, match="epochs"):
        TrainConfig.from_dict({"epochs": 0})
    with pytest.raises(DataError, match="the val part has 0 streams"):
        tiny_fold(_no_val(tiny_padded(30)), tmp_path / "no-val.h5")


def _no_val(padded: Padded) -> Padded:
    padded.fold[padded.fold == 1] = 2  # fold 0's validation part (fold 1) is empty
    return padded


def test_real_memf_model_trains_and_reports_entity_attention(tmp_path):
    path = tmp_path / "p.h5"
    write_padded(path, tiny_padded(40))
    job = JobSpec(experiment="memf", model="memf", feature_set="demo", fold=2, seeds=(0,),
                  options={"width": 16, "heads": 2, "layers": 1, "dropout": 0.0, "drop_entities": ["audio"]})
    metrics = fit_experiment(path, tmp_path / "memf", job, {**CFG, "epochs": 2}, fitter=NeuralFitter,
                             tuning_dir=tmp_path / "t")
    assert np.isfinite(metrics["seeds"]["0"]["test"]["r2"]) and metrics["seeds"]["0"]["n_parameters"] > 0
    attn = pl.read_parquet(tmp_path / "memf" / "attention.parquet")
    assert attn["query"].unique(maintain_order=True).to_list() == ["anchor", "commodity", "room", "video"]


def test_input_norm_makes_memf_robust_to_a_modality_scale(tmp_path):
    """Image features x 100 (a ResNet-50 vector's norm is ~100 times a tiny BERT's) moves the validation R² of MEMF
    with ``input_norm: layernorm`` by at most 0.02."""
    from memf.core.metrics import regression_metrics
    from memf.models import build_model

    def val_r2(scale: float, norm: str) -> float:
        padded = tiny_padded(120)
        for key in ("anchor/image", "room/image", "commodity/image"):
            padded.arrays[key] = padded.arrays[key] * scale
        data = tiny_fold(padded, tmp_path / f"{scale}-{norm}.h5")
        torch.manual_seed(0)
        model = build_model("memf", data.dims(), width=16, heads=2, layers=1, dropout=0.0, input_norm=norm)
        result = train_model(model, data, TrainConfig.from_dict({**CFG, "epochs": 15, "patience": 15}), 0, "cpu")
        pred, _ = predict(model, data, data.rows["val"], "cpu", 64, result.target_mean, result.target_sd)
        return regression_metrics(data.target("val"), pred)["r2"]

    assert abs(val_r2(100.0, "layernorm") - val_r2(1.0, "layernorm")) <= 0.02
    assert abs(val_r2(100.0, "none") - val_r2(1.0, "none")) > 0.02  # the paper's bare projection does move
