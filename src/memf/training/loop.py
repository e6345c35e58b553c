"""The training loop of one run (paper section 4.2; docs/training.md, "Training").

- Adam with a step decay of the learning rate (StepLR, step 50 epochs, gamma 0.98, as the paper), MSE on the
  train-standardised target;
- mini-batches are read from the padded store (:mod:`memf.padding.batches`), each padded to its own longest item
  and clip lists, standardised and moved to the device (through pinned memory on CUDA), in the order of
  :func:`epoch_order`: a seeded permutation of the training part, by blocks when the part is large; no DataLoader;
- early stopping and the choice of epoch on the validation part only. The test part's metrics per epoch (the paper's
  Fig. 3 curves) are computed only when asked for (``test_curves``: final runs, never tuning trials) and go to the
  history, which nothing reads to decide anything;
- resumable from :mod:`memf.training.checkpoint` files when the run's fingerprint matches
  (:func:`memf.training.settings.run_fingerprint`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from memf.core.io import DataError
from memf.core.metrics import METRICS, regression_metrics
from memf.padding.batches import BatchReader, shuffle_block_rows
from memf.training.checkpoint import Progress, load_checkpoint, save_checkpoint
from memf.training.prepare import FoldData
from memf.training.settings import TrainConfig

log = logging.getLogger(__name__)

#: Called after each epoch with (epoch, history row); may raise to stop the run (a pruned tuning trial).
EpochHook = Callable[[int, dict[str, float]], None]


@dataclass
class TrainResult:
    """What :func:`train_model` leaves besides the model (which then holds the selected weights)."""

    best_epoch: int  # 1-based epoch whose weights were kept (best validation MSE)
    epochs_run: int
    history: list[dict[str, float]]  # one row per epoch: epoch, lr, train_loss, val_* (and test_* with test_curves)
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


def epoch_order(n: int, block_rows: int, gen: torch.Generator) -> np.ndarray:
    """The order of one epoch's training streams [n] (positions into the training part), drawn from ``gen``.

    A part read as one block (``block_rows >= n``) is ``torch.randperm(n)``. A larger one is shuffled by blocks,
    then within each block: the blocks of ``block_rows`` consecutive training streams in a random order, each
    block's streams in a random order (a mini-batch then holds the streams of one block, or of two at a boundary).
    """
    if block_rows >= n:
        return torch.randperm(n, generator=gen).numpy()
    parts = []
    for b in torch.randperm(-(-n // block_rows), generator=gen).tolist():
        start = b * block_rows
        parts.append(start + torch.randperm(min(block_rows, n - start), generator=gen).numpy())
    return np.concatenate(parts)


def to_device(arrays: Mapping[str, np.ndarray], device: torch.device) -> dict[str, torch.Tensor]:
    """A padded batch as tensors on ``device`` (through pinned host memory on CUDA, copied asynchronously)."""
    out = {}
    for key, value in arrays.items():
        tensor = torch.from_numpy(np.ascontiguousarray(value))
        out[key] = tensor.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else tensor.to(device)
    return out


@torch.no_grad()
def predict(
    model: nn.Module,
    data: FoldData,
    rows: np.ndarray,
    device: torch.device | str,
    batch_size: int,
    target_mean: float = 0.0,
    target_sd: float = 1.0,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Predictions on the original target scale for ``rows`` [N] (ascending), and the model's attention [N, E, E]
    or None.

    The model is put in eval mode; the rows are read from the store a batch at a time.
    """
    device = torch.device(device)
    model.eval()
    preds: list[np.ndarray] = []
    attn: list[np.ndarray] = []
    for arrays in data.batches(rows, batch_size):
        out = model(to_device(arrays, device))
        preds.append(out.pred.float().cpu().numpy() * target_sd + target_mean)
        if out.attention is not None:
            attn.append(out.attention.float().cpu().numpy())
    pred = np.concatenate(preds) if preds else np.zeros(0)
    if attn and len(attn) != len(preds):
        raise ValueError("model returned attention for some batches and None for others")
    return pred, (np.concatenate(attn) if attn else None)


def _check_output(out: object, batch_size: int) -> None:
    pred = getattr(out, "pred", None)
    if not isinstance(pred, torch.Tensor) or tuple(pred.shape) != (batch_size,):
        shape = tuple(pred.shape) if isinstance(pred, torch.Tensor) else type(pred).__name__
        raise ValueError(f"model output pred has shape {shape}, expected ({batch_size},)")


@dataclass
class _Run:
    """One training run's moving parts: optimiser, schedule, the batch order's generator, the progress so far and
    the best weights."""

    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    gen: torch.Generator
    progress: Progress
    best_state: dict[str, torch.Tensor]
    resumed_from: int | None = None


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def _start(model: nn.Module, cfg: TrainConfig, seed: int, device: torch.device, checkpoint_dir: Path | None,
           fingerprint: str) -> _Run:
    """A fresh run, or the checkpointed one of the same fingerprint."""
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    run = _Run(opt, torch.optim.lr_scheduler.StepLR(opt, step_size=cfg.step_size, gamma=cfg.gamma),
               torch.Generator().manual_seed(seed), Progress(history=[]), _state(model))
    if checkpoint_dir is not None and cfg.checkpoint_every:
        restored = load_checkpoint(checkpoint_dir, fingerprint, model, run.opt, run.sched, run.gen, device)
        if restored is not None:
            run.progress, run.best_state = restored
            run.resumed_from = run.progress.epoch
            log.info("resumed from the checkpoint after epoch %d", run.progress.epoch)
    return run


def _train_epoch(model: nn.Module, reader: BatchReader, y: torch.Tensor, batch_size: int, run: _Run,
                 device: torch.device) -> float:
    """One pass over the training part in :func:`epoch_order`; the summed squared error (standardised target)."""
    model.train()
    loss_sum = 0.0
    for positions, arrays in reader.batches(batch_size, epoch_order(len(reader), reader.block_rows, run.gen)):
        out = model(to_device(arrays, device))
        _check_output(out, len(positions))
        loss = nn.functional.mse_loss(out.pred, y[torch.from_numpy(positions)].to(device))
        run.opt.zero_grad(set_to_none=True)
        loss.backward()
        run.opt.step()
        loss_sum += float(loss.detach()) * len(positions)
    return loss_sum


def _keep_best(run: _Run, row: dict[str, float], model: nn.Module, min_delta: float) -> None:
    """Count the epoch of ``row`` as the best (keep its weights) or as one more without improvement."""
    progress = run.progress
    if row["val_mse"] < progress.best_val - min_delta:
        progress.best_val, progress.best_epoch, progress.bad_epochs = row["val_mse"], int(row["epoch"]), 0
        run.best_state = _state(model)
    else:
        progress.bad_epochs += 1


def train_model(
    model: nn.Module,
    data: FoldData,
    cfg: TrainConfig,
    seed: int,
    device: torch.device | str,
    *,
    checkpoint_dir: Path | None = None,
    run_fingerprint: str = "",
    on_epoch_end: EpochHook | None = None,
    test_curves: bool = False,
    desc: str = "epochs",
) -> TrainResult:
    """Train ``model`` on the fold's training part, select the epoch by validation MSE, and load its weights.

    Args:
        model: a freshly built model (its initial weights are part of the seeded run).
        data: the fold (:func:`memf.training.prepare.fold_data`).
        cfg: training settings.
        seed: seeds the mini-batch order (the caller seeds torch's global generator, which drives the initial
            weights and dropout).
        device: where the model and each batch live.
        checkpoint_dir: where resumable checkpoints go (None: no checkpoints, no resume).
        run_fingerprint: identity of the run; only a checkpoint with the same fingerprint is resumed.
        on_epoch_end: called with (epoch, history row) after each epoch's bookkeeping and checkpoint.
        test_curves: also score the test part every epoch (for Fig. 3). Never set in tuning.
        desc: the progress bar's label.

    Raises:
        DataError: the training target is constant.
    """
    device = torch.device(device)
    y_np = data.target("train")
    mean, sd = (float(y_np.mean()), float(y_np.std())) if cfg.standardize_target else (0.0, 1.0)
    if sd <= 0:
        raise DataError(f"fold {data.fold}: the training target is constant ({mean}); nothing to learn")
    model.to(device)
    y = torch.from_numpy(((y_np - mean) / sd).astype(np.float32))  # [N_train], indexed by epoch_order's positions
    train = data.reader(data.rows["train"], shuffle_block_rows(data.store, data.rows["train"]))
    batch_size = len(train) if cfg.batch_size == 0 else min(cfg.batch_size, len(train))
    scored = ("val", "test") if test_curves else ("val",)
    run = _start(model, cfg, seed, device, checkpoint_dir, run_fingerprint)
    progress = run.progress
    bar = tqdm(range(progress.epoch, cfg.epochs), desc=desc, initial=progress.epoch, total=cfg.epochs)
    for epoch in bar:
        if progress.bad_epochs >= cfg.patience > 0:
            break
        started = time.perf_counter()
        loss_sum = _train_epoch(model, train, y, batch_size, run, device)
        lr = run.opt.param_groups[0]["lr"]
        run.sched.step()
        row: dict[str, float] = {"epoch": epoch + 1, "lr": lr, "train_loss": loss_sum / len(train) * sd * sd}
        for split in scored:
            pred, _ = predict(model, data, data.rows[split], device, cfg.eval_batch_size, mean, sd)
            scores = regression_metrics(data.target(split), pred)
            row.update({f"{split}_{name}": scores[name] for name in METRICS})
        progress.history.append(row)
        progress.epoch = epoch + 1
        _keep_best(run, row, model, cfg.min_delta)
        progress.seconds += time.perf_counter() - started
        bar.set_postfix(loss=f"{row['train_loss']:.4f}", val_mse=f"{row['val_mse']:.4f}", best=progress.best_epoch)
        if checkpoint_dir is not None and cfg.checkpoint_every and progress.epoch % cfg.checkpoint_every == 0:
            save_checkpoint(checkpoint_dir, run_fingerprint, model, run.best_state, run.opt, run.sched, run.gen,
                            progress, device)
        if on_epoch_end is not None:
            on_epoch_end(epoch + 1, row)
    bar.close()
    model.load_state_dict(run.best_state)
    return TrainResult(best_epoch=progress.best_epoch, epochs_run=progress.epoch, history=progress.history,
                       train_seconds=progress.seconds, target_mean=mean, target_sd=sd, resumed_from=run.resumed_from)
