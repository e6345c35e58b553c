"""Tuning on a fold's validation part with Optuna, the same trial budget for every tuned experiment
(docs/training.md, "Tuning").

One study per (experiment, fold), run in the job's own process and recorded in an Optuna journal file
(``JournalStorage`` + ``JournalFileBackend``: append-only, safe when a job is killed), so a rerun of a killed job
resumes its study: finished trials are kept, the trial that was running when the job died is marked failed (and not
counted), and the remaining trials run. The sampler is TPE, re-seeded for every trial from (seed, fold, number
of finished trials), so a resumed study draws the same settings an uninterrupted one would. The median pruner stops a neural
trial whose validation MSE trails the median of earlier trials at the same epoch.

The objective sees the training and validation parts only (:class:`Trial` carries no test data): choosing settings
never reads a test target (tested by corrupting them).
"""

from __future__ import annotations

import json
import logging
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import polars as pl
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from memf.training.settings import Param, SearchSpace, TuningSettings

log = logging.getLogger(__name__)
optuna.logging.set_verbosity(optuna.logging.WARNING)

STALE = "stale"  # user attribute of a trial that was running when its job died


class Pruned(Exception):
    """Raised by :meth:`Trial.report` when the pruner stops the trial."""


@dataclass
class Trial:
    """What an objective gets: the sampled parameters and a way to report its validation curve."""

    number: int
    params: dict[str, Any]  # "train.lr" -> value, "model.width" -> value (choices decoded from their JSON labels)
    _trial: optuna.Trial | None = None
    _pruner: bool = False
    _best: float = float("inf")

    def report(self, epoch: int, val_mse: float, val_r2: float) -> None:
        """Record the validation scores after ``epoch``; raises :class:`Pruned` when the pruner says stop.

        The R² of the best epoch so far is kept, so a pruned trial too has a validation score in the record.
        """
        if self._trial is None:
            return
        if val_mse < self._best:
            self._best = val_mse
            self._trial.set_user_attr("val_r2", val_r2)
        self._trial.report(val_mse, epoch)
        if self._pruner and self._trial.should_prune():
            raise Pruned(f"trial {self.number} pruned after epoch {epoch} (val MSE {val_mse:.4f})")


@dataclass
class Outcome:
    """What an objective returns: the score to minimise and what the trials table records."""

    val_mse: float
    val_r2: float
    epochs: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


Objective = Callable[[Trial], Outcome]


def distribution(param: Param) -> BaseDistribution:
    if param.distribution == "choice":
        return CategoricalDistribution(param.labels())
    low, high = param.args
    if param.distribution in ("int", "log_int"):
        return IntDistribution(int(low), int(high), log=param.distribution == "log_int")
    return FloatDistribution(float(low), float(high), log=param.distribution == "log_uniform")


def decode(space: SearchSpace, raw: dict[str, Any]) -> dict[str, Any]:
    """Optuna's parameter values -> config values (choice labels back to their JSON values)."""
    out = {}
    for p in space:
        value = raw[p.key]
        out[p.key] = json.loads(value) if p.distribution == "choice" else value
    return out


def _trial_seed(seed: int, fold: int, index: int, name: str) -> int:
    return zlib.crc32(json.dumps([seed, fold, index, name]).encode())


def _open_study(name: str, settings: TuningSettings, journal: Path, prunable: bool) -> optuna.Study:
    """The study ``name`` in ``journal`` (created or resumed); trials of a dead job (left running) are marked failed
    and stale, so they do not count."""
    journal.parent.mkdir(parents=True, exist_ok=True)
    storage = JournalStorage(JournalFileBackend(str(journal)))
    pruner = (optuna.pruners.MedianPruner(n_startup_trials=settings.startup_trials,
                                          n_warmup_steps=settings.prune_warmup_epochs)
              if prunable and settings.pruner == "median" else optuna.pruners.NopPruner())
    study = optuna.create_study(study_name=name, storage=storage, direction="minimize", pruner=pruner,
                                load_if_exists=True)
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING)):
        storage.set_trial_user_attr(t._trial_id, STALE, True)
        storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
        log.info("%s: trial %d was running when its job died; marked failed, not counted", name, t.number)
    return study


def _counted(study: optuna.Study) -> int:
    """Finished trials that count toward the budget (stale ones of a dead job do not)."""
    return sum(1 for t in study.get_trials(deepcopy=False) if not t.user_attrs.get(STALE) and t.state.is_finished())


def _run_trial(study: optuna.Study, name: str, space: SearchSpace, objective: Objective, prunable: bool) -> None:
    """Ask the study for one trial, run it, and tell the study how it ended (pruned, failed or its score)."""
    ot = study.ask({p.key: distribution(p) for p in space})
    trial = Trial(number=ot.number, params=decode(space, ot.params), _trial=ot, _pruner=prunable)
    started = time.perf_counter()
    try:
        outcome = objective(trial)
    except Pruned as exc:
        ot.set_user_attr("seconds", time.perf_counter() - started)
        study.tell(ot, state=TrialState.PRUNED)
        log.info("%s", exc)
        return
    except (ValueError, RuntimeError) as exc:  # e.g. an option combination the model refuses
        ot.set_user_attr("seconds", time.perf_counter() - started)
        ot.set_user_attr("error", str(exc))
        study.tell(ot, state=TrialState.FAIL)
        log.warning("%s: trial %d failed: %s", name, ot.number, exc)
        return
    ot.set_user_attr("seconds", time.perf_counter() - started)
    ot.set_user_attr("val_r2", outcome.val_r2)
    ot.set_user_attr("epochs", outcome.epochs)
    for key, value in outcome.extra.items():
        ot.set_user_attr(key, value)
    study.tell(ot, outcome.val_mse)
    log.info("%s: trial %d val MSE %.4f R2 %.4f %s", name, ot.number, outcome.val_mse, outcome.val_r2, trial.params)


def run_study(
    name: str,
    space: SearchSpace,
    objective: Objective,
    settings: TuningSettings,
    journal: Path,
    fold: int,
    *,
    prunable: bool,
) -> optuna.Study:
    """Run (or resume) the study ``name`` in ``journal`` until it holds ``settings.trials`` finished trials.

    Failed trials (an exception other than pruning) count toward the budget, so a setting that cannot train is a
    recorded failure, not an endless retry; trials of a dead job (left ``RUNNING``) are marked failed and stale and
    do not count.
    """
    study = _open_study(name, settings, journal, prunable)
    if done := _counted(study):
        log.info("%s: resuming with %d of %d trials done", name, done, settings.trials)
    while (done := _counted(study)) < settings.trials:
        # Seeded by the count of finished trials (not the trial number, which a dead job's stale trial bumped), and
        # TPE reads only finished trials: a resumed study draws what an uninterrupted one would have drawn.
        study.sampler = optuna.samplers.TPESampler(
            seed=_trial_seed(settings.seed, fold, done, name), n_startup_trials=settings.startup_trials
        )
        _run_trial(study, name, space, objective, prunable)
    return study


def trials_frame(study: optuna.Study, space: SearchSpace) -> pl.DataFrame:
    """One row per trial: number, state, every parameter (JSON), val_mse, val_r2, epochs, seconds, error."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        params = decode(space, t.params) if set(t.params) == {p.key for p in space} else {}
        intermediate = t.intermediate_values
        best_seen = min(intermediate.values()) if intermediate else None
        rows.append({
            "number": t.number,
            "state": "STALE" if t.user_attrs.get(STALE) else t.state.name,
            "val_mse": t.value if t.value is not None else best_seen,
            "val_r2": t.user_attrs.get("val_r2"),
            "epochs": t.user_attrs.get("epochs", max(intermediate) if intermediate else None),
            "seconds": t.user_attrs.get("seconds"),
            "error": t.user_attrs.get("error"),
            **{p.key: json.dumps(params.get(p.key)) if params else None for p in space},
        })
    schema = {"number": pl.Int64, "state": pl.String, "val_mse": pl.Float64, "val_r2": pl.Float64,
              "epochs": pl.Int64, "seconds": pl.Float64, "error": pl.String, **{p.key: pl.String for p in space}}
    return pl.DataFrame(rows, schema=schema)


def best_params(study: optuna.Study, space: SearchSpace) -> tuple[dict[str, Any], dict[str, Any]]:
    """The chosen settings (the complete trial with the lowest validation MSE) and its record.

    Raises:
        ValueError: no trial completed.
    """
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    if not complete:
        raise ValueError(f"tuning {study.study_name}: no trial completed ({len(study.trials)} tried); see the job log")
    best = min(complete, key=lambda t: (t.value, t.number))
    return decode(space, best.params), {"number": best.number, "val_mse": best.value,
                                         "val_r2": best.user_attrs.get("val_r2"), "epochs": best.user_attrs.get("epochs")}
