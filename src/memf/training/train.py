"""Stage 2 training and evaluation of one run (paper section 4.2; docs/training.md).

One run = one model (``memf.models.build_model(name, dims, **options)``) on one padded feature set with one seed:

- Adam with a step decay of the learning rate (StepLR, step 50 epochs, gamma 0.98, as the paper), MSE on the
  (train-standardised) target;
- the training split is held as tensors on the device and mini-batches are drawn by index, no DataLoader;
- early stopping and model selection on the validation split only: the test metrics are computed every epoch for the
  paper's Fig. 3 curves and written to the history, but nothing reads them to decide anything;
- seeded (python, numpy, torch) and deterministic on the CPU for a seed;
- resumable: every ``checkpoint_every`` epochs the model, optimizer, scheduler, RNG states and history go to
  ``checkpoint/state.safetensors`` + ``state.json`` in the run folder; rerunning a killed job continues from there when
  the checkpoint's fingerprint (model, options, data, seed, settings) matches, and starts afresh (logged) when not;
- weights are saved as safetensors with JSON metadata, never pickled.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import random
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm import tqdm

from memf.core.gpu import claim_device
from memf.core.io import DataError, atomic_path, read_json, write_json, write_parquet
from memf.core.metrics import METRICS, regression_metrics
from memf.training.padded import Padded, read_padded
from memf.training.runs import (
    ATTENTION_FILE,
    HISTORY_FILE,
    MODEL_JSON,
    WEIGHTS_FILE,
    predictions_frame,
    split_metrics,
    write_run_core,
)

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoint"
Builder = Callable[..., nn.Module]
EpochHook = Callable[[int, dict[str, float]], None]


@dataclass(frozen=True)
class TrainConfig:
    """Training settings (config section ``train``; defaults are the demo settings for 2 CPU cores)."""

    epochs: int = 40  # upper bound on epochs; early stopping usually ends sooner
    batch_size: int = 64  # streams per mini-batch; 0 = the whole training split in one batch
    lr: float = 3e-3  # Adam learning rate (the paper's Table 6: 1e-6)
    step_size: int = 50  # StepLR: decay the learning rate every this many epochs (paper: 50)
    gamma: float = 0.98  # StepLR decay factor (paper: 0.98)
    patience: int = 5  # stop after this many epochs without a better validation MSE
    min_delta: float = 0.0  # a validation MSE must beat the best by more than this to count as better
    standardize_target: bool = True  # fit on (y - train mean) / train sd; predictions are mapped back
    eval_batch_size: int = 512  # streams per forward pass when predicting
    checkpoint_every: int = 5  # epochs between resumable checkpoints (0 = never)
    device: str = "auto"  # auto | cpu | cuda (memf.core.gpu.claim_device)
    deterministic: bool = True  # torch.use_deterministic_algorithms during a CUDA run (the CPU is deterministic)

    @classmethod
    def from_dict(cls, cfg: dict[str, Any]) -> TrainConfig:
        """Build from the config's ``train`` section; unknown keys or bad values raise ValueError."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(cfg) - known)
        if unknown:
            raise ValueError(f"train config: unknown keys {unknown}, expected a subset of {sorted(known)}")
        out = cls(**cfg)
        for name in ("epochs", "step_size"):
            if getattr(out, name) < 1:
                raise ValueError(f"train config: {name} is {getattr(out, name)}, expected >= 1")
        for name in ("batch_size", "patience", "checkpoint_every"):
            if getattr(out, name) < 0:
                raise ValueError(f"train config: {name} is {getattr(out, name)}, expected >= 0")
        if out.eval_batch_size < 1 or out.lr <= 0 or not 0 < out.gamma <= 1:
            raise ValueError(
                f"train config: eval_batch_size {out.eval_batch_size}, lr {out.lr}, gamma {out.gamma}; "
                "expected eval_batch_size >= 1, lr > 0, 0 < gamma <= 1"
            )
        return out


@dataclass
class TrainResult:
    """What :func:`train_model` leaves besides the model (which then holds the selected weights)."""

    best_epoch: int  # 1-based epoch whose weights were kept (best validation MSE)
    epochs_run: int
    history: list[dict[str, float]]  # one row per epoch: epoch, lr, train_loss, val_*, test_*
    train_seconds: float  # wall time of the epochs run in this call and any resumed-from calls
    target_mean: float  # the model predicts (y - target_mean) / target_sd
    target_sd: float
    resumed_from: int | None  # epoch of the checkpoint this call continued from


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's generators (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@contextlib.contextmanager
def deterministic_algorithms(enabled: bool, device: torch.device) -> Iterator[None]:
    """Turn torch's deterministic algorithms on for a CUDA run (warning where an op has none), then restore.

    On the CPU nothing is switched: the kernels the models use are deterministic for a fixed thread count (tested),
    and the switch itself costs every job about 2.5 s of imports (``torch.use_deterministic_algorithms`` loads
    torch._inductor). cuBLAS needs ``CUBLAS_WORKSPACE_CONFIG`` for deterministic matrix products; it is set here
    unless the user set it.
    """
    if not enabled or device.type != "cuda":
        yield
        return
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    before = torch.are_deterministic_algorithms_enabled()
    before_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before, warn_only=before_warn)


def data_digest(padded: Padded) -> str:
    """A hash of every array, the ids, splits and targets of a padded feature set (for checkpoint fingerprints)."""
    h = hashlib.blake2b(digest_size=16)
    h.update("\n".join(padded.stream_id.astype(str)).encode())
    for arr in (padded.split, padded.target, *(padded.arrays[k] for k in sorted(padded.arrays))):
        h.update(str(arr.shape).encode())
        h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()


def fingerprint(model_name: str, options: dict[str, Any], seed: int, cfg: TrainConfig, digest: str) -> str:
    """Identity of a run: a checkpoint is resumed only under the same fingerprint. The device is left out."""
    settings = {k: v for k, v in asdict(cfg).items() if k != "device"}
    blob = json.dumps([model_name, options, seed, settings, digest], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


# --- checkpoints -----------------------------------------------------------------------------------------------------


def _split_state(prefix: str, state: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Move every tensor of a nested dict/list into ``tensors`` (keyed by path) and return the JSON-able rest."""
    if isinstance(state, torch.Tensor):
        tensors[prefix] = state.detach().to("cpu", copy=True).contiguous()
        return {"__tensor__": prefix}
    if isinstance(state, dict):
        return {str(k): _split_state(f"{prefix}.{k}", v, tensors) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return [_split_state(f"{prefix}.{i}", v, tensors) for i, v in enumerate(state)]
    return state


def _join_state(state: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(state, dict):
        if set(state) == {"__tensor__"}:
            return tensors[state["__tensor__"]]
        return {k: _join_state(v, tensors) for k, v in state.items()}
    if isinstance(state, list):
        return [_join_state(v, tensors) for v in state]
    return state


def _optimizer_state(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    sd = opt.state_dict()
    return {"state": _split_state("optim", sd["state"], tensors), "param_groups": sd["param_groups"]}


def _load_optimizer_state(opt: torch.optim.Optimizer, saved: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
    state = {int(k): v for k, v in _join_state(saved["state"], tensors).items()}
    opt.load_state_dict({"state": state, "param_groups": saved["param_groups"]})


@dataclass
class _Progress:
    """Everything that changes from epoch to epoch."""

    epoch: int = 0  # epochs completed
    best_epoch: int = 0
    best_val: float = float("inf")
    bad_epochs: int = 0
    seconds: float = 0.0
    history: list[dict[str, float]] | None = None


def save_checkpoint(
    ckpt_dir: Path,
    fp: str,
    model: nn.Module,
    best_state: dict[str, torch.Tensor],
    opt: torch.optim.Optimizer,
    sched: torch.optim.lr_scheduler.LRScheduler,
    gen: torch.Generator,
    progress: _Progress,
    device: torch.device,
) -> None:
    """Write ``state.safetensors`` then ``state.json`` (each atomically; the JSON names the epoch both hold)."""
    tensors: dict[str, torch.Tensor] = {}
    tensors.update({f"model.{k}": v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()})
    tensors.update({f"best.{k}": v.contiguous() for k, v in best_state.items()})
    opt_state = _optimizer_state(opt, tensors)
    tensors["rng.torch"] = torch.get_rng_state()
    tensors["rng.batches"] = gen.get_state()
    if device.type == "cuda":
        tensors["rng.cuda"] = torch.cuda.get_rng_state(device)
    meta = {"fingerprint": fp, "epoch": str(progress.epoch)}
    with atomic_path(ckpt_dir / "state.safetensors") as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    write_json(
        ckpt_dir / "state.json",
        {
            "fingerprint": fp,
            "progress": asdict(progress),
            "optimizer": opt_state,
            "scheduler": sched.state_dict(),
        },
    )


def load_checkpoint(
    ckpt_dir: Path,
    fp: str,
    model: nn.Module,
    opt: torch.optim.Optimizer,
    sched: torch.optim.lr_scheduler.LRScheduler,
    gen: torch.Generator,
    device: torch.device,
) -> tuple[_Progress, dict[str, torch.Tensor]] | None:
    """Restore a checkpoint of the same fingerprint; None (logged) when there is none or it belongs to another run."""
    json_path, st_path = ckpt_dir / "state.json", ckpt_dir / "state.safetensors"
    if not (json_path.exists() and st_path.exists()):
        return None
    saved = read_json(json_path)
    if saved["fingerprint"] != fp:
        log.warning("%s: checkpoint of a different run (model, options, data, seed or settings changed); starting afresh", ckpt_dir)
        return None
    tensors = load_file(str(st_path))
    progress = _Progress(**saved["progress"])
    with safe_open(str(st_path), "pt") as fh:
        st_epoch = int(fh.metadata()["epoch"])
    if st_epoch != progress.epoch:
        log.warning("%s: state.safetensors holds epoch %d but state.json epoch %d; starting afresh", ckpt_dir, st_epoch, progress.epoch)
        return None
    model.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})
    best = {k[len("best."):]: v for k, v in tensors.items() if k.startswith("best.")}
    _load_optimizer_state(opt, saved["optimizer"], tensors)
    sched.load_state_dict(saved["scheduler"])
    torch.set_rng_state(tensors["rng.torch"])
    gen.set_state(tensors["rng.batches"])
    if device.type == "cuda" and "rng.cuda" in tensors:
        torch.cuda.set_rng_state(tensors["rng.cuda"], device)
    return progress, best


# --- training --------------------------------------------------------------------------------------------------------


@torch.no_grad()
def predict(
    model: nn.Module,
    padded: Padded,
    rows: np.ndarray,
    device: torch.device | str,
    batch_size: int,
    target_mean: float = 0.0,
    target_sd: float = 1.0,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Predictions on the original target scale for ``rows`` [N], and the model's attention [N, E, E] or None.

    The model is put in eval mode; padded rows are moved to ``device`` a batch at a time.
    """
    model.eval()
    preds: list[np.ndarray] = []
    attn: list[np.ndarray] = []
    for start in range(0, len(rows), batch_size):
        out = model(padded.tensors(rows[start : start + batch_size], device))
        preds.append(out.pred.float().cpu().numpy() * target_sd + target_mean)
        if out.attention is not None:
            attn.append(out.attention.float().cpu().numpy())
    pred = np.concatenate(preds) if preds else np.zeros(0)
    if attn and len(attn) != len(preds):
        raise ValueError("model returned attention for some batches and None for others")
    return pred, (np.concatenate(attn) if attn else None)


def _check_output(out: Any, batch_size: int) -> None:
    pred = getattr(out, "pred", None)
    if not isinstance(pred, torch.Tensor) or tuple(pred.shape) != (batch_size,):
        shape = tuple(pred.shape) if isinstance(pred, torch.Tensor) else type(pred).__name__
        raise ValueError(f"model output pred has shape {shape}, expected ({batch_size},)")


def train_model(
    model: nn.Module,
    padded: Padded,
    cfg: TrainConfig,
    seed: int,
    device: torch.device | str,
    checkpoint_dir: Path | None = None,
    run_fingerprint: str = "",
    on_epoch_end: EpochHook | None = None,
) -> TrainResult:
    """Train ``model`` on the train split, select the epoch by validation MSE, and load the selected weights.

    Args:
        model: a freshly built model (its initial weights are part of the seeded run).
        padded: all splits of one feature set.
        cfg: training settings.
        seed: seeds the mini-batch order (the caller seeds torch's global generator, which drives the initial
            weights and dropout).
        device: where the model and the training tensors live.
        checkpoint_dir: where resumable checkpoints go (None: no checkpoints, no resume).
        run_fingerprint: identity of the run; only a checkpoint with the same fingerprint is resumed.
        on_epoch_end: called with (epoch, history row) after each epoch's bookkeeping and checkpoint.

    Raises:
        DataError: a split has fewer than 2 streams, or the train target is constant.
    """
    device = torch.device(device)
    idx = {split: padded.index(split) for split in ("train", "val", "test")}
    for split in ("train", "val", "test"):
        if len(idx[split]) < 2:
            raise DataError(f"padded tensors: the {split} split has {len(idx[split])} streams, expected at least 2")
    y_train_np = padded.target[idx["train"]].astype(np.float64)
    mean, sd = (float(y_train_np.mean()), float(y_train_np.std())) if cfg.standardize_target else (0.0, 1.0)
    if sd <= 0:
        raise DataError(f"padded tensors: the train target is constant ({mean}); nothing to learn")

    model.to(device)
    train = padded.tensors(idx["train"], device)  # batch key -> [N_train, ...] on the device
    y_train = torch.from_numpy(((y_train_np - mean) / sd).astype(np.float32)).to(device)
    n_train = len(idx["train"])
    batch_size = n_train if cfg.batch_size == 0 else min(cfg.batch_size, n_train)

    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=cfg.step_size, gamma=cfg.gamma)
    gen = torch.Generator().manual_seed(seed)
    progress = _Progress(history=[])
    best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
    resumed_from = None
    if checkpoint_dir is not None and cfg.checkpoint_every:
        restored = load_checkpoint(checkpoint_dir, run_fingerprint, model, opt, sched, gen, device)
        if restored is not None:
            progress, best_state = restored
            resumed_from = progress.epoch
            log.info("resumed from the checkpoint after epoch %d", progress.epoch)

    bar = tqdm(range(progress.epoch, cfg.epochs), desc="epochs", initial=progress.epoch, total=cfg.epochs)
    for epoch in bar:
        if progress.bad_epochs >= cfg.patience > 0:
            break
        started = time.perf_counter()
        model.train()
        perm = torch.randperm(n_train, generator=gen).to(device)
        loss_sum = 0.0
        for start in range(0, n_train, batch_size):
            rows = perm[start : start + batch_size]
            batch = {key: value[rows] for key, value in train.items()}
            out = model(batch)
            _check_output(out, len(rows))
            loss = nn.functional.mse_loss(out.pred, y_train[rows])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += float(loss.detach()) * len(rows)
        lr = opt.param_groups[0]["lr"]
        sched.step()
        row: dict[str, float] = {"epoch": epoch + 1, "lr": lr, "train_loss": loss_sum / n_train * sd * sd}
        for split in ("val", "test"):
            pred, _ = predict(model, padded, idx[split], device, cfg.eval_batch_size, mean, sd)
            scores = regression_metrics(padded.target[idx[split]], pred)
            row.update({f"{split}_{name}": scores[name] for name in METRICS})
        progress.history.append(row)
        progress.epoch = epoch + 1
        if row["val_mse"] < progress.best_val - cfg.min_delta:
            progress.best_val, progress.best_epoch, progress.bad_epochs = row["val_mse"], epoch + 1, 0
            best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        else:
            progress.bad_epochs += 1
        progress.seconds += time.perf_counter() - started
        bar.set_postfix(loss=f"{row['train_loss']:.4f}", val_mse=f"{row['val_mse']:.4f}", best=progress.best_epoch)
        if checkpoint_dir is not None and cfg.checkpoint_every and progress.epoch % cfg.checkpoint_every == 0:
            save_checkpoint(checkpoint_dir, run_fingerprint, model, best_state, opt, sched, gen, progress, device)
        if on_epoch_end is not None:
            on_epoch_end(epoch + 1, row)
    bar.close()
    model.load_state_dict(best_state)
    return TrainResult(
        best_epoch=progress.best_epoch,
        epochs_run=progress.epoch,
        history=progress.history,
        train_seconds=progress.seconds,
        target_mean=mean,
        target_sd=sd,
        resumed_from=resumed_from,
    )


# --- one run, end to end ---------------------------------------------------------------------------------------------


def attention_labels(model: nn.Module, n: int) -> list[str]:
    """Names of the attention axes: the model's ``attention_labels`` (the memf.models contract).

    Raises:
        ValueError: the model has no ``attention_labels`` or they do not match the attention's size ``n``.
    """
    labels = list(getattr(model, "attention_labels", None) or [])
    if len(labels) != n:
        raise ValueError(f"model returns {n}x{n} attention but its attention_labels are {labels}")
    return labels


def attention_frame(stream_id: np.ndarray, attention: np.ndarray | None, labels: list[str]) -> pl.DataFrame:
    """Long format: stream_id, query, key, weight (one row per stream and entity pair); empty when no attention."""
    if attention is None:
        return pl.DataFrame(schema={"stream_id": pl.String, "query": pl.String, "key": pl.String, "weight": pl.Float64})
    n_streams, e, _ = attention.shape  # [N, E, E]
    return pl.DataFrame(
        {
            "stream_id": np.repeat(np.asarray(stream_id).astype(str), e * e),
            "query": np.tile(np.repeat(labels, e), n_streams),
            "key": np.tile(np.tile(labels, e), n_streams),
            "weight": attention.reshape(-1).astype(np.float64),
        }
    )


def save_model(path: Path, model: nn.Module, meta: dict[str, Any]) -> None:
    """Weights as safetensors (metadata: the JSON ``meta``), written atomically."""
    tensors = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"memf": json.dumps(meta, sort_keys=True)})


def load_model(run_dir: str | Path, builder: Builder | None = None, device: torch.device | str = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a trained run's model from ``model.json`` and load ``model.safetensors`` (every key must match).

    Returns the model (eval mode) and the metadata, whose ``target_mean``/``target_sd`` map predictions back.
    """
    run_dir = Path(run_dir)
    meta = read_json(run_dir / MODEL_JSON)
    build = builder if builder is not None else _default_builder()
    dims = {k: tuple(v) for k, v in meta["dims"].items()}
    model = build(meta["model"], dims, **meta["options"])
    model.load_state_dict(load_file(str(run_dir / WEIGHTS_FILE)), strict=True)
    return model.to(device).eval(), meta


def _default_builder() -> Builder:
    from memf.models import build_model

    return build_model


def run_training(
    padded_path: str | Path,
    out_dir: str | Path,
    *,
    experiment: str,
    model_name: str,
    options: dict[str, Any],
    feature_set: str,
    seed: int,
    train_cfg: TrainConfig | dict[str, Any],
    ground_truth: str | Path | None = None,
    builder: Builder | None = None,
    on_epoch_end: EpochHook | None = None,
) -> dict[str, Any]:
    """Train and evaluate one run and write its folder (docs/architecture.md); return the metrics written.

    Args:
        padded_path: ``results/padded/{feature_set}.h5``.
        out_dir: ``results/runs/{experiment}/seed{seed}``.
        experiment, feature_set: recorded in the outputs.
        model_name, options: passed to ``builder(model_name, dims, **options)``.
        seed: the run's seed.
        train_cfg: :class:`TrainConfig` or the config's ``train`` section.
        ground_truth: the simulator's ``ground_truth.parquet`` (adds the oracle R^2), or None for real data.
        builder: builds the model; None means ``memf.models.build_model``.
        on_epoch_end: see :func:`train_model`.
    """
    cfg = train_cfg if isinstance(train_cfg, TrainConfig) else TrainConfig.from_dict(train_cfg)
    out_dir = Path(out_dir)
    build = builder if builder is not None else _default_builder()
    padded = read_padded(padded_path)
    dims = padded.dims()
    fp = fingerprint(model_name, options, seed, cfg, data_digest(padded))
    ckpt_dir = out_dir / CHECKPOINT_DIR
    with (
        claim_device(cfg.device) as device_name,
        deterministic_algorithms(cfg.deterministic, torch.device(device_name)),
    ):
        device = torch.device(device_name)
        seed_everything(seed)
        model = build(model_name, dims, **options)
        n_params = sum(p.numel() for p in model.parameters())
        log.info("%s seed %d: model %s with %d parameters on %s", experiment, seed, model_name, n_params, device)
        result = train_model(model, padded, cfg, seed, device, ckpt_dir, fp, on_epoch_end)
        all_rows = np.arange(len(padded))
        pred, _ = predict(model, padded, all_rows, device, cfg.eval_batch_size, result.target_mean, result.target_sd)
        test_rows = padded.index("test")
        _, attention = predict(model, padded, test_rows, device, cfg.eval_batch_size, result.target_mean, result.target_sd)
    labels = attention_labels(model, attention.shape[1]) if attention is not None else []
    meta = {
        "experiment": experiment,
        "model": model_name,
        "options": options,
        "feature_set": feature_set,
        "seed": seed,
        "dims": {k: list(v) for k, v in dims.items()},
        "epoch": result.best_epoch,
        "target_mean": result.target_mean,
        "target_sd": result.target_sd,
        "attention_labels": labels,
        "n_parameters": n_params,
        "train": asdict(cfg),
    }
    preds = predictions_frame(padded.stream_id, padded.split, padded.target, pred)
    meta["metrics"] = split_metrics(preds, "test")
    metrics = write_run_core(
        out_dir,
        preds,
        {
            "experiment": experiment,
            "model": model_name,
            "feature_set": feature_set,
            "seed": seed,
            "epoch": result.best_epoch,
            "epochs_run": result.epochs_run,
            "train_seconds": result.train_seconds,
            "resumed_from_epoch": result.resumed_from,
            "device": device_name,
            "n_parameters": n_params,
        },
        meta,
        ground_truth,
    )
    save_model(out_dir / WEIGHTS_FILE, model, meta)
    write_parquet(out_dir / HISTORY_FILE, pl.DataFrame(result.history))
    write_parquet(out_dir / ATTENTION_FILE, attention_frame(padded.stream_id[test_rows], attention, labels))
    if ckpt_dir.exists():
        shutil.rmtree(ckpt_dir)
    return metrics
