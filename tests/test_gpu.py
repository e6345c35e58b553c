"""The CUDA paths (marker ``gpu``: skipped without a CUDA device, kept out of the default run; bench/gpu.sh runs them
on a GPU machine): extractors on the GPU give the CPU's vectors in fp32 (uint8 inputs moved through pinned memory and
normalised on the device, the CNN channels-last, decoding workers forked beside a CUDA context), bf16 autocast
really computes in bf16 and stays close to fp32, a training step on the GPU gives the CPU's and training there is
deterministic, a job's run folder says it trained on the GPU and loads on the CPU, and claim_device hands out each
visible GPU once."""

from __future__ import annotations

import contextlib
import dataclasses

import numpy as np
import polars as pl
import pytest
import torch

from features_support import TinyEnv
from memf.core import gpu
from memf.core.io import read_json
from memf.data.contract import DEFAULT_COLUMNS
from memf.data.dataset import load_clean
from memf.features.base import Extractor, build_extractor
from memf.features.extract import embed_files, field_rows
from memf.features.spec import ExtractionSettings, ExtractorSpec
from memf.models import build_model
from memf.padding.store import write_padded
from memf.training.fit import JobSpec, fit_experiment
from memf.training.loop import deterministic_algorithms, predict, train_model
from memf.training.members import load_models
from memf.training.neural import NeuralFitter
from memf.training.settings import TrainConfig
from train_support import tiny_fold, tiny_padded

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

SETTINGS = ExtractionSettings(device="cuda", workers=2, timeout_s=60, batch_size=4, precision="fp32")
#: Extractor name in TinyEnv.extractors() -> its modality.
EXTRACTORS = {"bert": "text", "rn": "image", "vm": "video", "w2v": "audio"}
SMALL_MEMF = {"width": 16, "heads": 2, "layers": 1}


def inputs(env: TinyEnv, modality: str) -> list[str]:
    """Texts, image files or clip files of the tiny dataset (at most 8)."""
    ds = load_clean(env.data)
    if modality in ("text", "image"):
        values = field_rows(ds, DEFAULT_COLUMNS, modality)["value"].to_list()
        return values[:8] if modality == "text" else sorted({str(ds.media_path(p)) for p in values})[:8]
    return [str(ds.media_path(p)) for p in ds.clips.filter(pl.col("kind") == modality)["path"].to_list()][:8]


def make(env: TinyEnv, name: str, device: str, precision: str = "fp32") -> Extractor:
    spec = ExtractorSpec.from_config(name, env.extractors())
    settings = dataclasses.replace(SETTINGS, device=device, precision=precision)
    return build_extractor(spec, settings, torch.device(device))


def vectors(ext: Extractor, items: list[str]) -> np.ndarray:
    """The extractor's real path: texts embedded in batches, files decoded in forked workers and embedded."""
    if ext.modality == "text":
        return ext.embed_texts(items)
    out, reasons = embed_files(ext, items)
    assert reasons == [None] * len(items)
    return out


@pytest.fixture
def exact_fp32(monkeypatch):
    """fp32 without TF32 (cuDNN convolutions use it by default), so that GPU and CPU compute the same numbers."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)


@pytest.mark.parametrize("name", list(EXTRACTORS))
def test_extractor_on_cuda_gives_the_cpu_vectors_in_fp32(tiny_env, exact_fp32, name):
    items = inputs(tiny_env, EXTRACTORS[name])
    on_gpu = vectors(make(tiny_env, name, "cuda"), items)
    on_cpu = vectors(make(tiny_env, name, "cpu"), items)
    assert on_gpu.shape == on_cpu.shape and np.isfinite(on_gpu).all()
    np.testing.assert_allclose(on_gpu, on_cpu, rtol=1e-3, atol=1e-4 * max(1.0, float(np.abs(on_cpu).max())))


@pytest.mark.parametrize("name", list(EXTRACTORS))
def test_bf16_autocast_computes_in_bf16_and_stays_close_to_fp32(tiny_env, name):
    items = inputs(tiny_env, EXTRACTORS[name])
    ext = make(tiny_env, name, "cuda", precision="bf16")
    layer = next(m for m in ext.model.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d,
                                                                  torch.nn.Conv3d)))
    dtypes: set[torch.dtype] = set()
    layer.register_forward_hook(lambda module, args, out: dtypes.add(out.dtype))
    low = vectors(ext, items)
    assert dtypes == {torch.bfloat16}
    full = vectors(make(tiny_env, name, "cuda"), items)
    assert np.isfinite(low).all()
    cosine = (low * full).sum(1) / (np.linalg.norm(low, axis=1) * np.linalg.norm(full, axis=1))
    assert cosine.min() > 0.98, cosine


def test_image_inputs_reach_the_device_as_uint8_and_the_cnn_runs_channels_last(tiny_env):
    ext = make(tiny_env, "rn", "cuda")
    pinned_calls = []
    original = torch.Tensor.pin_memory

    def pin_memory(tensor, *args, **kwargs):
        pinned_calls.append(tensor.dtype)
        return original(tensor, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch.Tensor, "pin_memory", pin_memory)
        prepared = [ext.prepare(p) for p in inputs(tiny_env, "image")[:2]]
        x = ext.model_inputs(prepared)
    assert pinned_calls == [torch.uint8]  # the crops travel as uint8 through pinned memory
    assert x.device.type == "cuda" and x.dtype == torch.float32
    assert ext.model.conv1.weight.is_contiguous(memory_format=torch.channels_last)


def _train(data, device: str, cfg: TrainConfig):
    torch.manual_seed(0)
    model = build_model("memf", data.dims(), **SMALL_MEMF, dropout=0.0)
    with deterministic_algorithms(True, torch.device(device)):
        result = train_model(model, data, cfg, 0, device)
    pred, _ = predict(model, data, data.rows["test"], device, 64, result.target_mean, result.target_sd)
    return result, pred


def test_a_training_step_on_cuda_gives_the_cpus(exact_fp32, tmp_path):
    data = tiny_fold(tiny_padded(80), tmp_path / "p.h5")
    cfg = TrainConfig.from_dict({"epochs": 1, "batch_size": 0, "lr": 1e-3, "patience": 0, "checkpoint_every": 0})
    on_cpu, cpu_pred = _train(data, "cpu", cfg)
    on_gpu, gpu_pred = _train(data, "cuda", cfg)
    assert on_gpu.history[0]["train_loss"] == pytest.approx(on_cpu.history[0]["train_loss"], rel=1e-4)
    np.testing.assert_allclose(gpu_pred, cpu_pred, atol=1e-2)


def test_training_on_cuda_is_deterministic(tmp_path):
    data = tiny_fold(tiny_padded(80), tmp_path / "p.h5")
    cfg = TrainConfig.from_dict({"epochs": 3, "batch_size": 16, "patience": 0, "checkpoint_every": 0})
    (first, first_pred), (second, second_pred) = _train(data, "cuda", cfg), _train(data, "cuda", cfg)
    assert [r["train_loss"] for r in first.history] == [r["train_loss"] for r in second.history]
    np.testing.assert_array_equal(first_pred, second_pred)


def test_a_job_on_cuda_records_its_device_and_its_weights_load_on_the_cpu(tmp_path, monkeypatch):
    monkeypatch.setenv(gpu.LOCK_DIR_ENV, str(tmp_path / "locks"))
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    write_padded(tmp_path / "demo.h5", tiny_padded(60))
    job = JobSpec(experiment="memf", model="memf", feature_set="demo", fold=0, seeds=(0,), options=SMALL_MEMF)
    cfg = {"epochs": 2, "batch_size": 16, "checkpoint_every": 1, "device": "cuda"}
    metrics = fit_experiment(tmp_path / "demo.h5", tmp_path / "run", job, cfg, fitter=NeuralFitter,
                             tuning_dir=tmp_path / "tuning")
    assert metrics["device"].startswith("cuda:")
    assert read_json(tmp_path / "run" / "metrics.json")["device"] == metrics["device"]
    models, _ = load_models(tmp_path / "run", device="cpu")
    assert all(p.device.type == "cpu" for p in models[0].parameters())


def test_claim_device_gives_each_visible_gpu_once(tmp_path, monkeypatch):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    count = torch.cuda.device_count()
    with contextlib.ExitStack() as stack:
        claimed = [stack.enter_context(gpu.claim_device("cuda", lock_dir=tmp_path)) for _ in range(count)]
        assert sorted(claimed) == [f"cuda:{i}" for i in range(count)]
        assert torch.ones(1, device=claimed[0]).item() == 1.0  # a claimed name is a usable torch device
        with pytest.raises(TimeoutError), gpu.claim_device("cuda", lock_dir=tmp_path, timeout_s=0.2):
            pass
    with gpu.claim_device("auto", lock_dir=tmp_path) as again:
        assert again == "cuda:0"
