"""One stage-2 job: fit one experiment on one fold (docs/training.md).

1. The padded store is split for the fold and its numeric standardisation is fitted on the fold's training part
   (:func:`memf.training.prepare.fold_data`); batches are read from the file as they are needed.
2. Settings: an experiment with a ``search`` space is tuned on the fold's validation part (:mod:`memf.training.tuning`,
   trials with the first seed); one with ``tuned_as`` reads that experiment's choice for the same fold; otherwise it
   runs as configured.
3. Every seed is trained (or fitted, for a reference model) with those settings and predicts every stream of the fold;
   the test part is scored once, here, after every choice was made.

What is fitted is a :class:`Fitter`: :class:`memf.training.neural.NeuralFitter` for the fusion models,
:class:`memf.training.reference_fit.ReferenceFitter` for the reference models. This module imports neither, so the code
version of each rule covers its own kind of model only (memf.core.version).

All of it runs in one Python process, so the interpreter, torch and scikit-learn start-up is paid once per job, not
once per run. A killed job resumes: the tuning study from its journal, finished seeds from ``.partial/`` in the run
folder, a seed in training from its epoch checkpoint.
"""

from __future__ import annotations

import logging
import shutil
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import polars as pl
import torch

from memf.core.gpu import claim_device
from memf.core.io import atomic_path, read_json, write_json, write_parquet
from memf.padding.store import PaddedStore
from memf.training.matrix import BEST_FILE, JOURNAL_FILE, REFERENCE_MODELS, TRIALS_FILE
from memf.training.prepare import FoldData, fold_data
from memf.training.runs import predictions_frame, write_run
from memf.training.settings import SearchSpace, TrainConfig, TuningSettings, run_fingerprint, split_params
from memf.training.tuning import Outcome, Trial, best_params, run_study, trials_frame

log = logging.getLogger(__name__)

PARTIAL_DIR = ".partial"


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
    """One seed's outcome, kept until the run folder is written. ``frames``, ``tensors`` and ``blobs`` are the fitter's
    own outputs (a neural run's history, attention and weights; a reference's fitted model as bytes), saved with a
    finished seed and merged by the fitter."""

    seed: int
    pred: np.ndarray  # [S] every stream of the fold
    info: dict[str, Any]  # epoch, epochs_run, seconds, n_parameters, target scaling, fitted reference choices
    frames: dict[str, pl.DataFrame] = field(default_factory=dict)
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    blobs: dict[str, bytes] = field(default_factory=dict)  # file name -> content


class Fitter(ABC):
    """Fits one setting of one experiment on the fold: the tuning trials and the final seeds call it."""

    #: Whether the pruner may stop a trial by its validation curve (neural models report one per epoch).
    prunable: ClassVar[bool] = False
    #: Whether the job claims the configured device (``train.device``); otherwise it runs on the CPU.
    uses_device: ClassVar[bool] = False

    def __init__(self, spec: JobSpec, data: FoldData, cfg: TrainConfig, device: torch.device) -> None:
        self.spec, self.data, self.cfg, self.device = spec, data, cfg, device

    def settings(self, params: Mapping[str, Any]) -> tuple[dict[str, Any], TrainConfig]:
        """The model options and training settings of ``params`` (tuned values over the experiment's own)."""
        train, model = split_params(params)
        return {**self.spec.options, **model}, self.cfg.with_params(train)

    def fingerprint(self, params: Mapping[str, Any], seed: int) -> str:
        """Identity of one seed's run under ``params``: a finished seed or a checkpoint is kept only under it."""
        options, cfg = self.settings(params)
        return run_fingerprint(self.spec.model, options, seed, cfg, self.data.digest)

    @abstractmethod
    def trial(self, params: Mapping[str, Any], seed: int, trial: Trial) -> Outcome:
        """Fit on the fold's training part and score the validation part (never the test part)."""

    @abstractmethod
    def fit_seed(self, params: Mapping[str, Any], seed: int, partial: Path) -> SeedResult:
        """The final fit of one seed, predicting every stream of the fold (``partial``: its resumable folder)."""

    def model_meta(self, results: list[SeedResult], params: Mapping[str, Any]) -> dict[str, Any]:
        """What ``model.json`` adds for this kind of model."""
        return {}

    def write_outputs(self, out_dir: Path, results: list[SeedResult], meta: Mapping[str, Any]) -> None:
        """Write this kind of model's own files of the run folder (besides predictions, metrics and model.json)."""


#: Builds the fitter of a job: a :class:`Fitter` subclass, or a function with its signature.
FitterFactory = Callable[[JobSpec, FoldData, TrainConfig, torch.device], Fitter]


# --- settings: tuned, reused or fixed ------------------------------------------------------------------------------


def _tune(fitter: Fitter, spec: JobSpec, tuning: TuningSettings, tuning_dir: Path) -> dict[str, Any]:
    assert spec.space is not None
    seed = spec.seeds[0]
    study = run_study(f"{spec.experiment}/fold{spec.fold}", spec.space,
                      lambda trial: fitter.trial(trial.params, seed, trial), tuning, tuning_dir / JOURNAL_FILE,
                      spec.fold, prunable=fitter.prunable)
    chosen, record = best_params(study, spec.space)
    frame = trials_frame(study, spec.space)
    counted = frame.filter(pl.col("state") != "STALE").height
    write_parquet(tuning_dir / TRIALS_FILE, frame)
    write_json(tuning_dir / BEST_FILE, {
        "experiment": spec.experiment, "model": spec.model, "fold": spec.fold, "params": chosen, "best_trial": record,
        "source": spec.source, "trials": counted, "states": dict(frame["state"].value_counts().sort("state").rows()),
        "seed": seed,
    })
    return chosen


def _record_untuned(spec: JobSpec, params: dict[str, Any], tuning_dir: Path) -> None:
    """The tuning folder of an experiment that is not tuned itself: no trials, and where its settings came from."""
    write_parquet(tuning_dir / TRIALS_FILE, pl.DataFrame(schema={"number": pl.Int64, "state": pl.String}))
    write_json(tuning_dir / BEST_FILE, {"experiment": spec.experiment, "model": spec.model, "fold": spec.fold,
                                        "params": params, "source": spec.source, "trials": 0})


def _settings(fitter: Fitter, spec: JobSpec, tuning: TuningSettings | None, tuning_dir: Path) -> dict[str, Any]:
    if spec.space is None:
        params = dict(spec.tuned or {})
        _record_untuned(spec, params, tuning_dir)
        return params
    if tuning is None:
        raise ValueError(f"{spec.experiment}: a search space needs tuning settings")
    return _tune(fitter, spec, tuning, tuning_dir)


# --- finished seeds survive a killed job ---------------------------------------------------------------------------


def _save_partial(folder: Path, key: str, result: SeedResult) -> None:
    """Keep a finished seed so a rerun of a killed job does not train it again."""
    from safetensors.torch import save_file

    write_parquet(folder / "pred.parquet", pl.DataFrame({"pred": result.pred}))
    for name, frame in result.frames.items():
        write_parquet(folder / f"{name}.parquet", frame)
    if result.tensors:
        with atomic_path(folder / "state.safetensors") as tmp:
            save_file({k: v.contiguous() for k, v in result.tensors.items()}, str(tmp))
    for name, content in result.blobs.items():
        with atomic_path(folder / f"blob-{name}") as tmp:
            tmp.write_bytes(content)
    write_json(folder / "done.json", {"key": key, "info": result.info, "frames": sorted(result.frames),
                                      "blobs": sorted(result.blobs)})  # last


def _load_partial(folder: Path, key: str, seed: int) -> SeedResult | None:
    from safetensors.torch import load_file

    done = folder / "done.json"
    if not done.exists() or read_json(done)["key"] != key:
        return None
    record = read_json(done)
    state = folder / "state.safetensors"
    return SeedResult(
        seed=seed,
        pred=pl.read_parquet(folder / "pred.parquet")["pred"].to_numpy(),
        info=record["info"],
        frames={name: pl.read_parquet(folder / f"{name}.parquet") for name in record["frames"]},
        tensors=load_file(str(state)) if state.exists() else {},
        blobs={name: (folder / f"blob-{name}").read_bytes() for name in record.get("blobs", [])},
    )


def _fit_seeds(fitter: Fitter, spec: JobSpec, params: Mapping[str, Any], partial_root: Path) -> list[SeedResult]:
    results = []
    for seed in spec.seeds:
        folder = partial_root / f"seed{seed}"
        key = fitter.fingerprint(params, seed)
        result = _load_partial(folder, key, seed)
        if result is None:
            result = fitter.fit_seed(params, seed, folder)
            _save_partial(folder, key, result)
        else:
            log.info("%s fold %d seed %d: finished before the job was interrupted; kept", spec.experiment, spec.fold,
                     seed)
        results.append(result)
    return results


# --- the job -------------------------------------------------------------------------------------------------------


def _model_meta(spec: JobSpec, data: FoldData, fitter: Fitter, params: Mapping[str, Any],
                results: list[SeedResult]) -> dict[str, Any]:
    """``model.json``: what rebuilds the models (name, options, dims: the store's per-stream shapes, its longest item
    and clip lists as the set axes; target and numeric scaling per seed)."""
    options, _ = fitter.settings(params)
    return {
        "experiment": spec.experiment, "model": spec.model, "feature_set": spec.feature_set, "fold": spec.fold,
        "folds": data.store.folds, "seeds": list(spec.seeds), "params": dict(params), "options": options,
        "dims": {k: list(v) for k, v in data.dims().items()}, "numeric_scaler": data.scaler.to_json(),
        "per_seed": {str(r.seed): {k: v for k, v in r.info.items() if k not in ("options", "train")} for r in results},
        **fitter.model_meta(results, params),
    }


def fit_experiment(
    padded_path: str | Path,
    out_dir: str | Path,
    spec: JobSpec,
    train_cfg: TrainConfig | Mapping[str, Any],
    *,
    fitter: FitterFactory,
    tuning_dir: str | Path,
    tuning: TuningSettings | None = None,
    ground_truth: str | Path | None = None,
) -> dict[str, Any]:
    """Fit ``spec`` (tuning first when it has a space) and write its run folder; return the metrics written.

    Args:
        padded_path: ``results/padded/{feature_set}.h5`` (a padded store).
        out_dir: ``results/runs/{experiment}/fold{k}``.
        spec: the experiment, fold, seeds and how its settings are decided.
        train_cfg: :class:`TrainConfig` or the config's ``train`` section.
        fitter: what fits it (:class:`memf.training.neural.NeuralFitter` or
            :class:`memf.training.reference_fit.ReferenceFitter`, or a factory with their signature).
        tuning_dir: ``results/tuning/{experiment}/fold{k}``: the trials and the chosen settings (or, for an experiment
            that is not tuned itself, the settings it used and where they came from).
        tuning: the budget (needed when ``spec.space``).
        ground_truth: the simulator's ``ground_truth.parquet`` (adds the oracle R^2), or None for real data.
    """
    cfg = train_cfg if isinstance(train_cfg, TrainConfig) else TrainConfig.from_dict(train_cfg)
    out_dir = Path(out_dir)
    with PaddedStore(padded_path) as store:
        data = fold_data(store, spec.fold, cfg.cache_mb)
        partial_root = out_dir / PARTIAL_DIR
        started = time.perf_counter()
        uses_device = bool(getattr(fitter, "uses_device", False))
        with claim_device(cfg.device if uses_device else "cpu") as device_name:
            job = fitter(spec, data, cfg, torch.device(device_name))
            params = _settings(job, spec, tuning, Path(tuning_dir))
            log.info("%s fold %d: settings %s; seeds %s on %s", spec.experiment, spec.fold, params, list(spec.seeds),
                     device_name)
            results = _fit_seeds(job, spec, params, partial_root)
        preds = pl.concat([predictions_frame(data.stream_id, data.split_code, store.target, r.pred, r.seed)
                           for r in results])
        meta = _model_meta(spec, data, job, params, results)
    metrics = write_run(out_dir, preds, {
        "experiment": spec.experiment, "model": spec.model, "feature_set": spec.feature_set, "fold": spec.fold,
        "params": params, "source": spec.source, "device": device_name, "job_seconds": time.perf_counter() - started,
        "seeds": {str(r.seed): {k: r.info[k] for k in ("epoch", "epochs_run", "train_seconds", "n_parameters")
                                if k in r.info} for r in results},
    }, meta, ground_truth)
    job.write_outputs(out_dir, results, meta)
    if partial_root.exists():
        shutil.rmtree(partial_root)
    return metrics
