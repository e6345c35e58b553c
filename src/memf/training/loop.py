"""The training loop of one run (paper section 4.2; docs/training.md, "Training").

- Adam with a step decay of the learning rate (StepLR, step 50 epochs, gamma 0.98, as the paper), MSE on the
  train-standardised target;
- the fold's training part is held as tensors on the device and mini-batches are drawn by index, no DataLoader;
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
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from memf.core.io import DataError
from memf.core.metrics import METRICS, regression_metrics
from memf.training.checkpoint import Progress, load_checkpoint, save_checkpoint
from memf.padding.padded import Padded
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


def _check_output(out: object, batch_size: int) -> None:
    pred = getattr(out, "pred", None)
    if not isinstance(pred, torch.Tensor) or tuple(pred.shape) != (batch_size,):
        shape = tuple(pred.shape) if isinstance(pred, torch.Tensor) else type(pred).__name__
        raise ValueError(f"model output pred has shape {shape}, expected ({batch_size},)")


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
        device: where the model and the training tensors live.
        checkpoint_dir: where resumable checkpoints go (None: no checkpoints, no resume).
        run_fingerprint: identity of the run; only a checkpoint with the same fingerprint is resumed.
        on_epoch_end: called with (epoch, history row) after each epoch's bookkeeping and checkpoint.
        test_curves: also score the test part every epoch (for Fig. 3). Never set in tuning.
        desc: the progress bar's label.

    Raises:
        DataError: the training target is constant.
    """
    device = torch.device(device)
    rows = data.rows
    y_train_np = data.target("train")
    mean, sd = (float(y_train_np.mean()), float(y_train_np.std())) if cfg.standardize_target else (0.0, 1.0)
    if sd <= 0:
        raise DataError(f"fold {data.fold}: the training target is constant ({mean}); nothing to learn")

    model.to(device)
    train = data.tensors(rows["train"], device)  # batch key -> [N_train, ...] on the device
    y_train = torch.from_numpy(((y_train_np - mean) / sd).astype(np.float32)).to(device)
    n_train = len(rows["train"])
    batch_size = n_train if cfg.batch_size == 0 else min(cfg.batch_size, n_train)
    scored = ("val", "test") if test_curves else ("val",)

    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=cfg.step_size, gamma=cfg.gamma)
    gen = torch.Generator().manual_seed(seed)
    progress = Progress(history=[])
    best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
    resumed_from = None
    if checkpoint_dir is not None and cfg.checkpoint_every:
        restored = load_checkpoint(checkpoint_dir, run_fingerprint, model, opt, sched, gen, device)
        if restored is not None:
            progress, best_state = restored
            resumed_from = progress.epoch
            log.info("resumed from the checkpoint after epoch %d", progress.epoch)

    bar = tqdm(range(progress.epoch, cfg.epochs), desc=desc, initial=progress.epoch, total=cfg.epochs)
    for epoch in bar:
        if progress.bad_epochs >= cfg.patience > 0:
            break
        started = time.perf_counter()
        model.train()
        perm = torch.randperm(n_train, generator=gen).to(device)
        loss_sum = 0.0
        for start in range(0, n_train, batch_size):
            idx = perm[start : start + batch_size]
            out = model({key: value[idx] for key, value in train.items()})
            _check_output(out, len(idx))
            loss = nn.functional.mse_loss(out.pred, y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += float(loss.detach()) * len(idx)
        lr = opt.param_groups[0]["lr"]
        sched.step()
        row: dict[str, float] = {"epoch": epoch + 1, "lr": lr, "train_loss": loss_sum / n_train * sd * sd}
        for split in scored:
            pred, _ = predict(model, data.padded, rows[split], device, cfg.eval_batch_size, mean, sd)
            scores = regression_metrics(data.target(split), pred)
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
