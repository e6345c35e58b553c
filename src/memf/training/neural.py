"""Fitting a fusion model in a stage-2 job (rule ``fit``): tuning trials and final seeds of MEMF, its variants and the
baselines, trained by :mod:`memf.training.loop` (docs/training.md, "Training").

A final seed also writes what the paper's figures need: the per-epoch history (Fig. 3), the Multi-Entity
Transformer's attention on the test streams (Fig. 6) and the selected weights (the model bundle).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import polars as pl
import torch
from torch import nn

from memf.core.io import atomic_path, write_parquet
from memf.training.fit import Fitter, JobSpec, SeedResult
from memf.training.loop import deterministic_algorithms, predict, seed_everything, train_model
from memf.training.matrix import ATTENTION_FILE, HISTORY_FILE, WEIGHTS_FILE
from memf.training.prepare import FoldData
from memf.training.settings import TrainConfig
from memf.training.tuning import Outcome, Trial

Builder = Callable[..., nn.Module]
ATTENTION_SCHEMA = {"seed": pl.Int64, "stream_id": pl.String, "query": pl.String, "key": pl.String, "weight": pl.Float64}


def attention_labels(model: nn.Module, n: int) -> list[str]:
    """Names of the attention axes: the model's ``attention_labels`` (the memf.models contract).

    Raises:
        ValueError: the model has no ``attention_labels`` or they do not match the attention's size ``n``.
    """
    labels = list(getattr(model, "attention_labels", None) or [])
    if len(labels) != n:
        raise ValueError(f"model returns {n}x{n} attention but its attention_labels are {labels}")
    return labels


def attention_frame(stream_id: np.ndarray, attention: np.ndarray | None, labels: list[str], seed: int) -> pl.DataFrame:
    """Long format: seed, stream_id, query, key, weight (one row per stream and entity pair); empty without attention."""
    if attention is None:
        return pl.DataFrame(schema=ATTENTION_SCHEMA)
    n_streams, e, _ = attention.shape  # [N, E, E]
    return pl.DataFrame(
        {
            "seed": np.full(n_streams * e * e, seed, dtype=np.int64),
            "stream_id": np.repeat(np.asarray(stream_id).astype(str), e * e),
            "query": np.tile(np.repeat(labels, e), n_streams),
            "key": np.tile(np.tile(labels, e), n_streams),
            "weight": attention.reshape(-1).astype(np.float64),
        },
        schema=ATTENTION_SCHEMA,
    )


class NeuralFitter(Fitter):
    """Trains a registered fusion model (``memf.models.build_model``, or ``builder``) on the fold."""

    prunable: ClassVar[bool] = True
    uses_device: ClassVar[bool] = True

    def __init__(self, spec: JobSpec, data: FoldData, cfg: TrainConfig, device: torch.device,
                 builder: Builder | None = None) -> None:
        super().__init__(spec, data, cfg, device)
        if builder is None:
            from memf.models import build_model as builder
        self.build = builder
        self.dims = data.dims()

    @classmethod
    def with_builder(cls, builder: Builder) -> Callable[[JobSpec, FoldData, TrainConfig, torch.device], NeuralFitter]:
        """A fitter factory building models with ``builder`` (tests use tiny models)."""
        return lambda spec, data, cfg, device: cls(spec, data, cfg, device, builder)

    def _train(self, params: Mapping[str, Any], seed: int, *, final: bool,
               hook: Callable[[int, dict[str, float]], None] | None = None,
               checkpoint_dir: Path | None = None) -> tuple[nn.Module, Any, TrainConfig]:
        options, cfg = self.settings(params)
        seed_everything(seed)
        model = self.build(self.spec.model, self.dims, **options)
        with deterministic_algorithms(cfg.deterministic, self.device):
            result = train_model(model, self.data, cfg, seed, self.device, checkpoint_dir=checkpoint_dir,
                                 run_fingerprint=self.fingerprint(params, seed) if checkpoint_dir else "",
                                 on_epoch_end=hook, test_curves=final,
                                 desc=f"{self.spec.experiment} fold {self.spec.fold} seed {seed}")
        return model, result, cfg

    def trial(self, params: Mapping[str, Any], seed: int, trial: Trial) -> Outcome:
        _, result, _ = self._train(params, seed, final=False,
                                   hook=lambda epoch, row: trial.report(epoch, row["val_mse"], row["val_r2"]))
        best = result.history[result.best_epoch - 1]
        return Outcome(best["val_mse"], best["val_r2"], result.epochs_run)

    def fit_seed(self, params: Mapping[str, Any], seed: int, partial: Path) -> SeedResult:
        data = self.data
        model, result, cfg = self._train(params, seed, final=True, checkpoint_dir=partial / "checkpoint")
        scale = (result.target_mean, result.target_sd)
        members = data.members
        pred = np.full(len(data), np.nan)  # [S]; NaN for a stream outside the fold (the fixed protocol's unused pool)
        pred[members], _ = predict(model, data, members, self.device, cfg.eval_batch_size, *scale)
        test = data.rows["test"]
        _, attention = predict(model, data, test, self.device, cfg.eval_batch_size, *scale)
        labels = attention_labels(model, attention.shape[1]) if attention is not None else []
        info = {
            "epoch": result.best_epoch, "epochs_run": result.epochs_run, "train_seconds": result.train_seconds,
            "resumed_from_epoch": result.resumed_from, "target_mean": result.target_mean,
            "target_sd": result.target_sd, "n_parameters": sum(p.numel() for p in model.parameters()),
            "attention_labels": labels,
        }
        history = pl.DataFrame(result.history).with_columns(pl.lit(seed, dtype=pl.Int64).alias("seed"))
        frames = {"history": history, "attention": attention_frame(data.stream_id[test], attention, labels, seed)}
        return SeedResult(seed, pred, info, frames,
                          {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()})

    def model_meta(self, results: list[SeedResult], params: Mapping[str, Any]) -> dict[str, Any]:
        _, cfg = self.settings(params)
        first = results[0].info
        return {"train": cfg.identity(), "attention_labels": first["attention_labels"],
                "n_parameters": first["n_parameters"]}

    def write_outputs(self, out_dir: Path, results: list[SeedResult], meta: Mapping[str, Any]) -> None:
        """history.parquet, attention.parquet and weights.safetensors (keys ``seed{s}/...``, model.json inside)."""
        from safetensors.torch import save_file

        write_parquet(out_dir / HISTORY_FILE, pl.concat([r.frames["history"] for r in results], how="diagonal_relaxed"))
        write_parquet(out_dir / ATTENTION_FILE, pl.concat([r.frames["attention"] for r in results]))
        tensors = {f"seed{r.seed}/{k}": v.contiguous() for r in results for k, v in r.tensors.items()}
        with atomic_path(out_dir / WEIGHTS_FILE) as tmp:
            save_file(tensors, str(tmp), metadata={"memf": json.dumps(meta, sort_keys=True)})
