"""The job that fits a reference model (rule ``fit_reference``; memf.training.fit.fit_experiment): its tuning trials
and seeds over the models of :mod:`memf.training.references`, whose fitted models it saves with skops. Kept apart
from the models so that loading a fitted reference (a model bundle, memf.predict) imports neither the tuning nor the
job."""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from memf.core.metrics import regression_metrics
from memf.training.fit import Fitter, JobSpec, SeedResult
from memf.training.matrix import REFERENCE_MODEL_FILE
from memf.training.prepare import FoldData
from memf.training.references import ReferenceInputs, dumps_model, fit_reference, loads_model, save_reference
from memf.training.settings import TrainConfig
from memf.training.tuning import Outcome, Trial


class ReferenceFitter(Fitter):
    """Fits a reference model (rule ``fit_reference``): on the CPU, no epochs, nothing to prune; the fold's features
    are built once for the job's trials and seeds."""

    def __init__(self, spec: JobSpec, data: FoldData, cfg: TrainConfig, device: torch.device) -> None:
        super().__init__(spec, data, cfg, device)
        self.inputs = ReferenceInputs(data)

    def trial(self, params: Mapping[str, Any], seed: int, trial: Trial) -> Outcome:
        options, _ = self.settings(params)
        fitted = fit_reference(self.spec.model, self.inputs, options, seed)
        scores = regression_metrics(self.data.target("val"), fitted.pred[self.data.rows["val"]])
        return Outcome(scores["mse"], scores["r2"], None, {"iterations": fitted.info.get("iterations")})

    def fit_seed(self, params: Mapping[str, Any], seed: int, partial: Path) -> SeedResult:
        options, _ = self.settings(params)
        started = time.perf_counter()
        fitted = fit_reference(self.spec.model, self.inputs, options, seed)
        return SeedResult(seed, fitted.pred, {"fitted": fitted.info, "train_seconds": time.perf_counter() - started},
                          blobs={REFERENCE_MODEL_FILE: dumps_model(fitted.model)})

    def write_outputs(self, out_dir: Path, results: list[SeedResult], meta: Mapping[str, Any]) -> None:
        save_reference(out_dir / REFERENCE_MODEL_FILE,
                       {r.seed: loads_model(r.blobs[REFERENCE_MODEL_FILE], f"seed {r.seed}") for r in results})
