"""One stage-2 job: fit one experiment on one fold (docs/training.md).

1. The padded feature set is split for the fold and its numeric inputs are standardised on the fold's training part
   (:func:`memf.training.prepare.fold_data`).
2. Settings: an experiment with a ``search`` space is tuned on the fold's validation part (:mod:`memf.training.tuning`,
   trials with the first seed); one with ``tuned_as`` reads that experiment's choice for the same fold; otherwise it
   runs as configured.
3. Every seed is trained (or fitted, for a reference model) with those settings and predicts every stream of the fold;
   the test part is scored once, here, after every choice was made.

All of it runs in one Python process, so the interpreter, torch and scikit-learn start-up is paid once per job, not
once per run. A killed job resumes: the tuning study from its journal, finished seeds from ``.partial/`` in the run
folder, a seed in training from its epoch checkpoint.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from memf.core.gpu import claim_device
from memf.core.io import atomic_path, read_json, write_json, write_parquet
from memf.core.metrics import regression_metrics
from memf.training.loop import data_digest, deterministic_algorithms, fingerprint, predict, seed_everything, train_model
from memf.training.matrix import (
    ATTENTION_FILE,
    BEST_FILE,
    HISTORY_FILE,
    JOURNAL_FILE,
    MODEL_JSON,
    TRIALS_FILE,
    WEIGHTS_FILE,
    REFERENCE_MODELS,
)
from memf.padding.padded import read_padded
from memf.training.prepare import FoldData, fold_data
from memf.training.runs import predictions_frame, write_run
from memf.training.settings import SearchSpace, TrainConfig, TuningSettings, split_params
from memf.training.tuning import Outcome, Trial, best_params, run_study, trials_frame

log = logging.getLogger(__name__)

Builder = Callable[..., nn.Module]
PARTIAL_DIR = ".partial"
ATTENTION_SCHEMA = {"seed": pl.Int64, "stream_id": pl.String, "query": pl.String, "key": pl.String, "weight": pl.Float64}


@dataclass(frozen=True)
class JobSpec:
    """What one (experiment, fold) job fits."""

    experiment: str
    model: str
    feature_set: str
    fold: int
    seeds: tuple[int, ...]
    options: dict[str, Any] = field(default_factory=dict)  # the model's options before tuning
    space: SearchSpace | None = None  # tune over this space, or
    tuned: Mapping[str, Any] | None = None  # use these chosen parameters ("train.lr", "model.width", ...)
    source: str = "fixed"  # where the settings come from, for the record: the space's name, "tuned_as X", "fixed"

    @property
    def is_reference(self) -> bool:
        return self.model in REFERENCE_MODELS


@dataclass
class SeedResult:
    """One seed's outcome, kept until the run folder is written."""

    seed: int
    pred: np.ndarray  # [S] every stream of the fold
    info: dict[str, Any]  # epoch, epochs_run, seconds, n_parameters, target scaling, fitted reference choices
    history: pl.DataFrame | None = None
    attention: pl.DataFrame | None = None
    state: dict[str, torch.Tensor] | None = None


def _default_builder() -> Builder:
    from memf.models import build_model

    return build_model


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


# --- one training or fit -------------------------------------------------------------------------------------------


class _Runner:
    """Trains or fits one setting on the fold; shared by the tuning trials and the final seeds."""

    def __init__(self, spec: JobSpec, data: FoldData, cfg: TrainConfig, device: torch.device, builder: Builder) -> None:
        self.spec, self.data, self.cfg, self.device, self.build = spec, data, cfg, device, builder
        self.dims = data.padded.dims()

    def settings(self, params: Mapping[str, Any]) -> tuple[dict[str, Any], TrainConfig]:
        train, model = split_params(params)
        return {**self.spec.options, **model}, self.cfg.with_params(train)

    def neural(self, params: Mapping[str, Any], seed: int, *, final: bool, hook: Callable[[int, dict[str, float]], None]
               | None = None, checkpoint_dir: Path | None = None) -> tuple[nn.Module, Any, dict[str, Any], TrainConfig]:
        options, cfg = self.settings(params)
        seed_everything(seed)
        model = self.build(self.spec.model, self.dims, **options)
        fp = fingerprint(self.spec.model, options, seed, cfg, self.digest) if checkpoint_dir is not None else ""
        result = train_model(model, self.data, cfg, seed, self.device, checkpoint_dir=checkpoint_dir,
                             run_fingerprint=fp, on_epoch_end=hook, test_curves=final,
                             desc=f"{self.spec.experiment} fold {self.spec.fold} seed {seed}")
        return model, result, options, cfg

    @functools.cached_property
    def digest(self) -> str:
        """The fold's data hash, part of every checkpoint's fingerprint (computed once per job)."""
        return data_digest(self.data.padded, self.data.fold)

    def reference(self, params: Mapping[str, Any], seed: int) -> tuple[np.ndarray, dict[str, Any]]:
        from memf.training.references import fit_reference

        options, _ = self.settings(params)
        return fit_reference(self.spec.model, self.data, options, seed)

    def objective(self, seed: int) -> Callable[[Trial], Outcome]:
        """The tuning objective: train on the fold's training part, score the validation part (never the test)."""
        val = self.data.rows["val"]
        y_val = self.data.target("val")

        def run(trial: Trial) -> Outcome:
            if self.spec.is_reference:
                pred, info = self.reference(trial.params, seed)
                scores = regression_metrics(y_val, pred[val])
                return Outcome(scores["mse"], scores["r2"], None, {"iterations": info.get("iterations")})
            _, result, _, _ = self.neural(trial.params, seed, final=False,
                                          hook=lambda epoch, row: trial.report(epoch, row["val_mse"], row["val_r2"]))
            best = result.history[result.best_epoch - 1]
            return Outcome(best["val_mse"], best["val_r2"], result.epochs_run)

        return run


# --- the job -------------------------------------------------------------------------------------------------------


def _tune(runner: _Runner, spec: JobSpec, tuning: TuningSettings, tuning_dir: Path) -> dict[str, Any]:
    assert spec.space is not None
    study = run_study(f"{spec.experiment}/fold{spec.fold}", spec.space, runner.objective(spec.seeds[0]), tuning,
                      tuning_dir / JOURNAL_FILE, spec.fold, prunable=not spec.is_reference)
    chosen, record = best_params(study, spec.space)
    frame = trials_frame(study, spec.space)
    counted = frame.filter(pl.col("state") != "STALE").height
    write_parquet(tuning_dir / TRIALS_FILE, frame)
    write_json(tuning_dir / BEST_FILE, {
        "experiment": spec.experiment, "model": spec.model, "fold": spec.fold, "params": chosen, "best_trial": record,
        "source": spec.source, "trials": counted, "states": dict(frame["state"].value_counts().sort("state").rows()),
        "seed": spec.seeds[0],
    })
    return chosen


def _record_untuned(spec: JobSpec, params: dict[str, Any], tuning_dir: Path) -> None:
    """The tuning folder of an experiment that is not tuned itself: no trials, and where its settings came from."""
    write_parquet(tuning_dir / TRIALS_FILE, pl.DataFrame(schema={"number": pl.Int64, "state": pl.String}))
    write_json(tuning_dir / BEST_FILE, {"experiment": spec.experiment, "model": spec.model, "fold": spec.fold,
                                        "params": params, "source": spec.source, "trials": 0})


def _partial_key(spec: JobSpec, params: Mapping[str, Any], cfg: TrainConfig, digest: str, seed: int) -> str:
    blob = json.dumps([spec.model, spec.options, dict(params), cfg.identity(), digest, seed], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def _save_partial(folder: Path, key: str, result: SeedResult) -> None:
    """Keep a finished seed so a rerun of a killed job does not train it again."""
    write_parquet(folder / "pred.parquet", pl.DataFrame({"pred": result.pred}))
    if result.history is not None:
        write_parquet(folder / "history.parquet", result.history)
        write_parquet(folder / "attention.parquet", result.attention)
    if result.state is not None:
        with atomic_path(folder / "state.safetensors") as tmp:
            save_file({k: v.contiguous() for k, v in result.state.items()}, str(tmp))
    write_json(folder / "done.json", {"key": key, "info": result.info})  # last: marks the seed complete


def _load_partial(folder: Path, key: str, seed: int) -> SeedResult | None:
    done = folder / "done.json"
    if not done.exists() or read_json(done)["key"] != key:
        return None
    history = folder / "history.parquet"
    return SeedResult(
        seed=seed,
        pred=pl.read_parquet(folder / "pred.parquet")["pred"].to_numpy(),
        info=read_json(done)["info"],
        history=pl.read_parquet(history) if history.exists() else None,
        attention=pl.read_parquet(folder / "attention.parquet") if history.exists() else None,
        state=load_file(str(folder / "state.safetensors")) if (folder / "state.safetensors").exists() else None,
    )


def _fit_seed(runner: _Runner, params: Mapping[str, Any], seed: int, partial: Path) -> SeedResult:
    spec, data = runner.spec, runner.data
    if spec.is_reference:
        started = time.perf_counter()
        pred, info = runner.reference(params, seed)
        return SeedResult(seed, pred, {"fitted": info, "train_seconds": time.perf_counter() - started})
    model, result, options, cfg = runner.neural(params, seed, final=True, checkpoint_dir=partial / "checkpoint")
    all_rows = np.arange(len(data.padded))
    pred, _ = predict(model, data.padded, all_rows, runner.device, cfg.eval_batch_size, result.target_mean,
                      result.target_sd)
    test = data.rows["test"]
    _, attention = predict(model, data.padded, test, runner.device, cfg.eval_batch_size, result.target_mean,
                           result.target_sd)
    labels = attention_labels(model, attention.shape[1]) if attention is not None else []
    info = {
        "epoch": result.best_epoch, "epochs_run": result.epochs_run, "train_seconds": result.train_seconds,
        "resumed_from_epoch": result.resumed_from, "target_mean": result.target_mean, "target_sd": result.target_sd,
        "n_parameters": sum(p.numel() for p in model.parameters()), "attention_labels": labels,
        "options": options, "train": cfg.identity(),
    }
    history = pl.DataFrame(result.history).with_columns(pl.lit(seed, dtype=pl.Int64).alias("seed"))
    return SeedResult(seed, pred, info, history, attention_frame(data.padded.stream_id[test], attention, labels, seed),
                      {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()})


def fit_experiment(
    padded_path: str | Path,
    out_dir: str | Path,
    spec: JobSpec,
    train_cfg: TrainConfig | Mapping[str, Any],
    *,
    tuning_dir: str | Path,
    tuning: TuningSettings | None = None,
    ground_truth: str | Path | None = None,
    builder: Builder | None = None,
) -> dict[str, Any]:
    """Fit ``spec`` (tuning first when it has a space) and write its run folder; return the metrics written.

    Args:
        padded_path: ``results/padded/{feature_set}.h5``.
        out_dir: ``results/runs/{experiment}/fold{k}``.
        spec: the experiment, fold, seeds and how its settings are decided.
        train_cfg: :class:`TrainConfig` or the config's ``train`` section.
        tuning_dir: ``results/tuning/{experiment}/fold{k}``: the trials and the chosen settings (or, for an experiment
            that is not tuned itself, the settings it used and where they came from).
        tuning: the budget (needed when ``spec.space``).
        ground_truth: the simulator's ``ground_truth.parquet`` (adds the oracle R^2), or None for real data.
        builder: builds neural models; None means ``memf.models.build_model``.
    """
    cfg = train_cfg if isinstance(train_cfg, TrainConfig) else TrainConfig.from_dict(train_cfg)
    out_dir = Path(out_dir)
    padded = read_padded(padded_path)
    data = fold_data(padded, spec.fold)
    partial_root = out_dir / PARTIAL_DIR
    started = time.perf_counter()
    with claim_device("cpu" if spec.is_reference else cfg.device) as device_name, \
            deterministic_algorithms(cfg.deterministic, torch.device(device_name)):
        runner = _Runner(spec, data, cfg, torch.device(device_name), builder or _default_builder())
        if spec.space is not None:
            if tuning is None:
                raise ValueError(f"{spec.experiment}: a search space needs tuning settings")
            params = _tune(runner, spec, tuning, Path(tuning_dir))
        else:
            params = dict(spec.tuned or {})
            _record_untuned(spec, params, Path(tuning_dir))
        log.info("%s fold %d: settings %s; seeds %s on %s", spec.experiment, spec.fold, params, list(spec.seeds),
                 device_name)
        results = []
        for seed in spec.seeds:
            folder = partial_root / f"seed{seed}"
            key = _partial_key(spec, params, cfg, runner.digest, seed)
            result = _load_partial(folder, key, seed)
            if result is None:
                result = _fit_seed(runner, params, seed, folder)
                _save_partial(folder, key, result)
            else:
                log.info("%s fold %d seed %d: finished before the job was interrupted; kept", spec.experiment,
                         spec.fold, seed)
            results.append(result)
    preds = pl.concat([predictions_frame(padded.stream_id, data.split_code, padded.target, r.pred, r.seed)
                       for r in results])
    options, train_used = runner.settings(params)
    meta: dict[str, Any] = {
        "experiment": spec.experiment, "model": spec.model, "feature_set": spec.feature_set, "fold": spec.fold,
        "folds": padded.folds, "seeds": list(spec.seeds), "params": params, "options": options,
        "dims": {k: list(v) for k, v in padded.dims().items()}, "numeric_scaler": data.scaler.to_json(),
        "per_seed": {str(r.seed): {k: v for k, v in r.info.items() if k not in ("options", "train")} for r in results},
    }
    if not spec.is_reference:
        meta["train"] = train_used.identity()
        meta["attention_labels"] = results[0].info["attention_labels"]
        meta["n_parameters"] = results[0].info["n_parameters"]
    metrics = write_run(out_dir, preds, {
        "experiment": spec.experiment, "model": spec.model, "feature_set": spec.feature_set, "fold": spec.fold,
        "params": params, "source": spec.source, "device": device_name, "job_seconds": time.perf_counter() - started,
        "seeds": {str(r.seed): {k: r.info[k] for k in ("epoch", "epochs_run", "train_seconds", "n_parameters")
                                if k in r.info} for r in results},
    }, meta, ground_truth)
    if not spec.is_reference:
        write_parquet(out_dir / HISTORY_FILE, pl.concat([r.history for r in results], how="diagonal_relaxed"))
        write_parquet(out_dir / ATTENTION_FILE, pl.concat([r.attention for r in results]))
        tensors = {f"seed{r.seed}/{k}": v.contiguous() for r in results for k, v in (r.state or {}).items()}
        with atomic_path(out_dir / WEIGHTS_FILE) as tmp:
            save_file(tensors, str(tmp), metadata={"memf": json.dumps(meta, sort_keys=True)})
    if partial_root.exists():
        shutil.rmtree(partial_root)
    return metrics
