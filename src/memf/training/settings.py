"""Stage-2 settings read from the config: training (``train``), tuning (``tuning``) and search spaces
(``search_spaces``). Standard library only: the workflow checks them when it loads.

A search space maps a dotted parameter name to one distribution::

    search_spaces:
      attention-demo:
        train.lr: {log_uniform: [3.0e-4, 1.0e-2]}   # a training setting (TrainConfig field)
        model.width: {choice: [16, 32, 64]}          # a model option (memf.models.options or a reference's option)

Distributions: ``choice`` (a list of JSON values, lists included), ``uniform``/``log_uniform`` ([low, high]
floats), ``int``/``log_int`` ([low, high] integers, both included).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

#: Training settings that only decide speed or placement: they never change a result, so they are kept out of a
#: run's identity (the workflow's ``params:`` and the checkpoint fingerprint) and are not tunable.
PLACEMENT_KEYS: frozenset[str] = frozenset({"device", "eval_batch_size", "checkpoint_every", "cache_mb"})
DISTRIBUTIONS: tuple[str, ...] = ("choice", "uniform", "log_uniform", "int", "log_int")


def _build(cls: type, section: str, cfg: Mapping[str, Any]) -> Any:
    """``cls(**cfg)`` for the config section ``section``; a key ``cls`` lacks raises ValueError naming it."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(cfg) - known)
    if unknown:
        raise ValueError(f"{section}: unknown keys {unknown}, expected a subset of {sorted(known)}")
    return cls(**cfg)


@dataclass(frozen=True)
class TrainConfig:
    """Training settings (config section ``train``; defaults are the demo settings for 2 CPU cores)."""

    epochs: int = 40  # upper bound on epochs; early stopping usually ends sooner
    batch_size: int = 64  # streams per mini-batch; 0 = the whole training split in one batch
    lr: float = 3e-3  # Adam learning rate (the paper's Table 6: 1e-6)
    weight_decay: float = 0.0  # Adam's L2 penalty (the paper: none)
    step_size: int = 50  # StepLR: decay the learning rate every this many epochs (paper: 50)
    gamma: float = 0.98  # StepLR decay factor (paper: 0.98)
    patience: int = 5  # stop after this many epochs without a better validation MSE
    min_delta: float = 0.0  # a validation MSE must beat the best by more than this to count as better
    standardize_target: bool = True  # fit on (y - train mean) / train sd; predictions are mapped back
    eval_batch_size: int = 512  # streams per forward pass when predicting (placement)
    checkpoint_every: int = 5  # epochs between resumable checkpoints (0 = never; placement)
    device: str = "auto"  # auto | cpu | cuda (memf.core.gpu.claim_device; placement)
    cache_mb: float = 256.0  # megabytes of padded-store blocks a job keeps in memory (memf.padding.batches; placement)
    deterministic: bool = True  # torch.use_deterministic_algorithms during a CUDA run (the CPU is deterministic)

    @classmethod
    def from_dict(cls, cfg: Mapping[str, Any]) -> TrainConfig:
        """Build from the config's ``train`` section; unknown keys or bad values raise ValueError."""
        out = _build(cls, "train", cfg)
        for name in ("epochs", "step_size"):
            if getattr(out, name) < 1:
                raise ValueError(f"train.{name} is {getattr(out, name)}, expected >= 1")
        for name in ("batch_size", "patience", "checkpoint_every"):
            if getattr(out, name) < 0:
                raise ValueError(f"train.{name} is {getattr(out, name)}, expected >= 0")
        if out.eval_batch_size < 1 or out.lr <= 0 or not 0 < out.gamma <= 1 or out.weight_decay < 0:
            raise ValueError(
                f"train: eval_batch_size {out.eval_batch_size}, lr {out.lr}, gamma {out.gamma}, weight_decay "
                f"{out.weight_decay}; expected eval_batch_size >= 1, lr > 0, 0 < gamma <= 1, weight_decay >= 0"
            )
        if out.cache_mb < 0:
            raise ValueError(f"train.cache_mb is {out.cache_mb}, expected >= 0")
        if out.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"train.device is '{out.device}', expected auto, cpu or cuda")
        return out

    def with_params(self, params: Mapping[str, Any]) -> TrainConfig:
        """A copy with tuned ``train.*`` values (keys without the prefix)."""
        return TrainConfig.from_dict({**asdict(self), **params})

    def identity(self) -> dict[str, Any]:
        """The settings that decide a result (everything but :data:`PLACEMENT_KEYS`)."""
        return {k: v for k, v in asdict(self).items() if k not in PLACEMENT_KEYS}


TUNABLE_TRAIN_KEYS: frozenset[str] = frozenset(
    {f.name for f in fields(TrainConfig)} - PLACEMENT_KEYS - {"deterministic", "standardize_target"}
)


@dataclass(frozen=True)
class TuningSettings:
    """Config section ``tuning``: the same budget for every tuned experiment (docs/training.md, "Tuning")."""

    trials: int = 8  # Optuna trials per tuned (experiment, fold), equal for every model family
    seed: int = 0  # seeds the TPE sampler (with the fold and the trial number)
    startup_trials: int = 3  # random trials before TPE models the history (TPESampler n_startup_trials)
    pruner: str = "median"  # median | none: stop a trial whose validation MSE trails the median at the same epoch
    prune_warmup_epochs: int = 5  # epochs a trial always runs before it can be pruned

    @classmethod
    def from_dict(cls, cfg: Mapping[str, Any]) -> TuningSettings:
        out = _build(cls, "tuning", cfg)
        if out.trials < 1 or out.startup_trials < 0 or out.prune_warmup_epochs < 0:
            raise ValueError(f"tuning: trials {out.trials}, startup_trials {out.startup_trials}, prune_warmup_epochs "
                             f"{out.prune_warmup_epochs}; expected trials >= 1 and the others >= 0")
        if out.pruner not in ("median", "none"):
            raise ValueError(f"tuning.pruner is '{out.pruner}', expected median or none")
        return out


@dataclass(frozen=True)
class Param:
    """One searched parameter: ``scope`` "train" or "model", its ``name``, distribution and arguments."""

    scope: str
    name: str
    distribution: str
    args: tuple[Any, ...]

    @property
    def key(self) -> str:
        return f"{self.scope}.{self.name}"

    def labels(self) -> list[str]:
        """The choices as JSON strings (Optuna's categorical values must be scalars; lists are choices too)."""
        return [json.dumps(v, sort_keys=True) for v in self.args]


SearchSpace = tuple[Param, ...]


def parse_space(name: str, spec: Mapping[str, Any]) -> SearchSpace:
    """Check one ``search_spaces`` entry and return its parameters in a fixed (sorted) order.

    Raises:
        ValueError: a key without a ``train.`` or ``model.`` prefix, an untunable training setting, or a malformed
            distribution; the message names ``search_spaces.<name>.<key>``.
    """
    if not spec:
        raise ValueError(f"search_spaces.{name}: empty, expected at least one parameter")
    out = []
    for key in sorted(spec):
        where = f"search_spaces.{name}.{key}"
        scope, _, param = key.partition(".")
        if scope not in ("train", "model") or not param:
            raise ValueError(f"{where}: expected 'train.<setting>' or 'model.<option>'")
        if scope == "train" and param not in TUNABLE_TRAIN_KEYS:
            raise ValueError(f"{where}: not a tunable training setting (accepted: {', '.join(sorted(TUNABLE_TRAIN_KEYS))})")
        dist = spec[key]
        if not isinstance(dist, Mapping) or len(dist) != 1 or next(iter(dist)) not in DISTRIBUTIONS:
            raise ValueError(f"{where}: {dist!r}, expected one of {{{', '.join(f'{d}: ...' for d in DISTRIBUTIONS)}}}")
        kind, args = next(iter(dist.items()))
        if kind == "choice":
            if not isinstance(args, list) or not args:
                raise ValueError(f"{where}: choice {args!r}, expected a non-empty list")
        else:
            numeric = (int,) if kind in ("int", "log_int") else (int, float)
            if (not isinstance(args, list) or len(args) != 2
                    or any(isinstance(a, bool) or not isinstance(a, numeric) for a in args) or not args[0] <= args[1]):
                raise ValueError(f"{where}: {kind} {args!r}, expected [low, high] with low <= high")
            if kind.startswith("log") and args[0] <= 0:
                raise ValueError(f"{where}: {kind} {args!r}, expected low > 0")
            if not all(math.isfinite(a) for a in args):
                raise ValueError(f"{where}: {kind} {args!r}, expected finite bounds")
        out.append(Param(scope, param, kind, tuple(args)))
    return tuple(out)


def split_params(params: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Chosen ``{"train.lr": ..., "model.width": ...}`` -> (train overrides, model options)."""
    train = {k.partition(".")[2]: v for k, v in params.items() if k.startswith("train.")}
    model = {k.partition(".")[2]: v for k, v in params.items() if k.startswith("model.")}
    return train, model


def space_json(space: SearchSpace) -> list[dict[str, Any]]:
    """A JSON-able description of a space (for rule params and the tuning record)."""
    return [dataclasses.asdict(p) | {"args": list(p.args)} for p in space]


def run_fingerprint(model: str, options: Mapping[str, Any], seed: int, cfg: TrainConfig, data_digest: str) -> str:
    """Identity of one run (model, resolved options, seed, the settings that decide a result, the fold's data): a
    finished seed of a killed job and a training checkpoint are kept only under the same fingerprint. Placement
    settings are left out, so moving a job to another device resumes it."""
    blob = json.dumps([model, dict(options), seed, cfg.identity(), data_digest], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()
