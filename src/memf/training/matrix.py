"""The experiment matrix (config ``experiments`` and ``seeds``) and the run folder's file names.

Standard library only: the workflow imports this module when it is parsed, so it must load quickly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RUNS_DIR = Path("results/runs")
#: Reference models (memf.training.references): fitted by rule ``reference`` instead of rule ``train``.
REFERENCE_MODELS: tuple[str, ...] = ("mean", "ridge", "hgb")
#: Files of a run folder; reference runs write the first three.
METRICS_FILE = "metrics.json"
PREDICTIONS_FILE = "predictions.parquet"
MODEL_JSON = "model.json"
HISTORY_FILE = "history.parquet"
ATTENTION_FILE = "attention.parquet"
WEIGHTS_FILE = "model.safetensors"
TRAINED_FILES: tuple[str, ...] = (METRICS_FILE, PREDICTIONS_FILE, MODEL_JSON, HISTORY_FILE, ATTENTION_FILE, WEIGHTS_FILE)
REFERENCE_FILES: tuple[str, ...] = (METRICS_FILE, PREDICTIONS_FILE, MODEL_JSON)
ENTRY_KEYS = frozenset({"model", "feature_set", "options", "seeds"})


@dataclass(frozen=True)
class Experiment:
    """One entry of the matrix: a model with options on a feature set, trained once per seed."""

    name: str
    model: str
    feature_set: str
    options: dict[str, Any] = field(default_factory=dict)
    seeds: tuple[int, ...] = (0, 1, 2)

    @property
    def is_reference(self) -> bool:
        return self.model in REFERENCE_MODELS

    @property
    def files(self) -> tuple[str, ...]:
        return REFERENCE_FILES if self.is_reference else TRAINED_FILES

    def run_dir(self, seed: int, root: Path = RUNS_DIR) -> Path:
        return run_dir(self.name, seed, root)


def run_dir(experiment: str, seed: int, root: Path = RUNS_DIR) -> Path:
    """``results/runs/{experiment}/seed{seed}``."""
    return Path(root) / experiment / f"seed{seed}"


def experiments_from_config(entries: dict[str, dict[str, Any]], seeds: list[int]) -> dict[str, Experiment]:
    """Parse the config's ``experiments`` mapping; an entry's own ``seeds`` overrides the global ``seeds``.

    Raises:
        ValueError: an entry lacks ``model``/``feature_set``, has unknown keys, or has no seeds.
    """
    out = {}
    for name, entry in entries.items():
        unknown = sorted(set(entry) - ENTRY_KEYS)
        missing = sorted({"model", "feature_set"} - set(entry))
        if unknown or missing:
            raise ValueError(f"experiments.{name}: unknown keys {unknown}, missing keys {missing}")
        own = tuple(entry.get("seeds", seeds))
        if not own:
            raise ValueError(f"experiments.{name}: no seeds")
        out[name] = Experiment(name, entry["model"], entry["feature_set"], dict(entry.get("options") or {}), own)
    return out
