"""Resumable training checkpoints: everything that changes from epoch to epoch, written atomically.

``state.safetensors`` holds the model, the best-so-far weights, Adam's tensors and the RNG states; ``state.json``
holds the epoch counters, the history, the scheduler and a fingerprint of the run. A checkpoint is resumed only under
the same fingerprint (model, options, data, seed, settings; never the device), so a changed run starts afresh. Both
files name the epoch they hold; a pair that disagrees (a kill between the two writes) is ignored.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from memf.core.io import atomic_path, read_json, write_json

log = logging.getLogger(__name__)


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
class Progress:
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
    progress: Progress,
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
) -> tuple[Progress, dict[str, torch.Tensor]] | None:
    """Restore a checkpoint of the same fingerprint; None (logged) when there is none or it belongs to another run."""
    json_path, st_path = ckpt_dir / "state.json", ckpt_dir / "state.safetensors"
    if not (json_path.exists() and st_path.exists()):
        return None
    saved = read_json(json_path)
    if saved["fingerprint"] != fp:
        log.warning("%s: checkpoint of a different run (model, options, data, seed or settings changed); starting "
                    "afresh", ckpt_dir)
        return None
    tensors = load_file(str(st_path))
    progress = Progress(**saved["progress"])
    with safe_open(str(st_path), "pt") as fh:
        st_epoch = int(fh.metadata()["epoch"])
    if st_epoch != progress.epoch:
        log.warning("%s: state.safetensors holds epoch %d but state.json epoch %d; starting afresh", ckpt_dir, st_epoch,
                    progress.epoch)
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

