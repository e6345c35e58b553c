"""The experiment matrix (config ``experiments`` and ``seeds``), the reference models' options, and the file names of
the run and tuning folders.

Standard library only: the workflow imports this module when it is parsed, so it must load quickly.

A run is (experiment, fold, seed); one job fits one (experiment, fold): its tuning trials (when the experiment has a
``search`` space), then every seed with the chosen settings. Its outputs::

    results/tuning/{experiment}/fold{k}/   trials.parquet, best.json (and study.journal, Optuna's resumable record)
    results/runs/{experiment}/fold{k}/     predictions.parquet, metrics.json, model.json (+ history.parquet,
                                           attention.parquet, weights.safetensors for neural models)

The ensemble (config ``ensemble``; memf.training.ensemble) is a run folder ``results/runs/ensemble/fold{k}`` made from
the candidates' run folders, and a row of the tables like any experiment (:func:`ensemble_candidates`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from memf.data.layout import RESULTS

RUNS_DIR = Path(RESULTS) / "runs"
TUNING_DIR = Path(RESULTS) / "tuning"
#: The reduction of wide pooled features (memf.training.references, docs/training.md "Reference models"): when the
#: pooled width of a stream is above ``reduce_above``, every pooled block wider than ``components`` (text, image, clip
#: vectors; numeric fields and counts pass) becomes its first ``components`` principal components, fitted on the
#: training part. The demo's widths (1,707 mean-pooled, 4,180 set statistics) stay below the threshold; the paper's
#: (9,995 and 38,420) are reduced to 2,059 and 2,068 features.
REDUCTION_DEFAULTS: dict[str, Any] = {"reduce_above": 8192, "components": 256}
REDUCTION_MINIMUM: dict[str, int] = {"reduce_above": 0, "components": 1}
#: Reference models (memf.training.references) -> their options and defaults.
REFERENCE_OPTIONS: dict[str, dict[str, Any]] = {
    "mean": {},
    "ridge": {"pooling": "mean", "alpha": 10.0, **REDUCTION_DEFAULTS},
    "hgb": {
        "pooling": "mean", **REDUCTION_DEFAULTS, "pca": 0, "learning_rate": 0.1, "max_leaf_nodes": 15,
        "min_samples_leaf": 10,
        "l2_regularization": 1.0, "max_iter": 200,  # the iterations kept are chosen on validation, up to max_iter
        # 32 bins suit a few hundred training streams; each split draws 20% of the features (column subsampling):
        # together 8x faster than 255 bins and every feature on the demo's ~4,000 set statistics, no worse on
        # validation (R² 0.626 against 0.623 on fold 0 of the demo)
        "max_bins": 32, "max_features": 0.2,
    },
}
REFERENCE_MODELS: tuple[str, ...] = tuple(REFERENCE_OPTIONS)
#: Values a string-valued reference option accepts.
REFERENCE_CHOICES: dict[str, tuple[str, ...]] = {"pooling": ("mean", "set")}
#: (batch key, mask key or None) blocks of the pooled features, in order; ``set`` pooling adds ``counts`` (items,
#: video clips, audio clips) counted from :data:`COUNT_KEYS`.
POOLED_BLOCKS: tuple[tuple[str, str | None], ...] = (
    ("anchor/text", None), ("anchor/image", None), ("anchor/numeric", None),
    ("commodity/text", "commodity/mask"), ("commodity/image", "commodity/mask"),
    ("commodity/numeric", "commodity/mask"),
    ("room/text", None), ("room/image", None), ("room/numeric", None),
    ("video/x", "video/mask"), ("audio/x", "audio/mask"),
)
COUNT_KEYS: tuple[str, ...] = ("commodity/mask", "video/mask", "audio/mask")
#: The reserved feature set built from the simulator's true latent factors (the latent ceiling), not from extractors.
LATENT_FEATURE_SET = "latent"

# Files of a run folder (one per experiment and fold; every seed inside), and of a tuning folder.
METRICS_FILE = "metrics.json"
PREDICTIONS_FILE = "predictions.parquet"
MODEL_JSON = "model.json"
HISTORY_FILE = "history.parquet"
ATTENTION_FILE = "attention.parquet"
WEIGHTS_FILE = "weights.safetensors"
TRAINED_FILES: tuple[str, ...] = (METRICS_FILE, PREDICTIONS_FILE, MODEL_JSON, HISTORY_FILE, ATTENTION_FILE,
                                  WEIGHTS_FILE)
#: A reference run's fitted models, every seed's (skops, never a pickle: memf.training.references.load_reference).
REFERENCE_MODEL_FILE = "reference.skops"
REFERENCE_FILES: tuple[str, ...] = (METRICS_FILE, PREDICTIONS_FILE, MODEL_JSON, REFERENCE_MODEL_FILE)
ENSEMBLE_FILES: tuple[str, ...] = (METRICS_FILE, PREDICTIONS_FILE, MODEL_JSON)
TRIALS_FILE = "trials.parquet"
BEST_FILE = "best.json"
JOURNAL_FILE = "study.journal"
ENTRY_KEYS = frozenset({"model", "feature_set", "options", "seeds", "search", "tuned_as"})
#: The ensemble's name (its run folders and table row) and its model's; no experiment may take it.
ENSEMBLE = "ensemble"
#: ``predict.bundle`` value that exports the best model the study found on the validation parts
#: (memf.training.ensemble.choose_best); no experiment may take it.
BEST = "best"


@dataclass(frozen=True)
class Experiment:
    """One entry of the matrix: a model with options on a feature set, fitted on every fold once per seed.

    ``search`` names a search space: the experiment is tuned on each fold's validation part. ``tuned_as`` names
    another experiment whose per-fold choices it reuses (an ablation with its full model's settings). Neither: it
    runs with its options as given.
    """

    name: str
    model: str
    feature_set: str
    options: dict[str, Any] = field(default_factory=dict)
    seeds: tuple[int, ...] = (0, 1, 2)
    search: str | None = None
    tuned_as: str | None = None

    @property
    def is_reference(self) -> bool:
        return self.model in REFERENCE_MODELS

    @property
    def files(self) -> tuple[str, ...]:
        if self.model == ENSEMBLE:
            return ENSEMBLE_FILES
        return REFERENCE_FILES if self.is_reference else TRAINED_FILES

    @property
    def tuning_source(self) -> str | None:
        """The experiment whose tuning decides this one's settings (itself, ``tuned_as``, or None)."""
        return self.name if self.search else self.tuned_as

    def run_dir(self, fold: int, root: Path = RUNS_DIR) -> Path:
        return run_dir(self.name, fold, root)


def run_dir(experiment: str, fold: int | str, root: Path = RUNS_DIR) -> Path:
    """``results/runs/{experiment}/fold{fold}``."""
    return Path(root) / experiment / f"fold{fold}"


def tuning_dir(experiment: str, fold: int | str, root: Path = TUNING_DIR) -> Path:
    """``results/tuning/{experiment}/fold{fold}``."""
    return Path(root) / experiment / f"fold{fold}"


def experiments_from_config(entries: Mapping[str, Mapping[str, Any]], seeds: list[int]) -> dict[str, Experiment]:
    """Parse the config's ``experiments`` mapping; an entry's own ``seeds`` overrides the global ``seeds``.

    Raises:
        ValueError: an entry lacks ``model``/``feature_set``, has unknown keys, has no seeds, sets both ``search``
            and ``tuned_as``, or reuses an experiment that is not tuned itself.
    """
    out = {}
    for name, entry in entries.items():
        unknown = sorted(set(entry) - ENTRY_KEYS)
        missing = sorted({"model", "feature_set"} - set(entry))
        if unknown or missing:
            raise ValueError(f"experiments.{name}: unknown keys {unknown}, missing keys {missing} "
                             f"(accepted: {', '.join(sorted(ENTRY_KEYS))})")
        own = tuple(entry.get("seeds", seeds))
        if not own:
            raise ValueError(f"experiments.{name}: no seeds")
        if entry.get("search") and entry.get("tuned_as"):
            raise ValueError(f"experiments.{name}: sets both search and tuned_as, expected at most one")
        out[name] = Experiment(name, entry["model"], entry["feature_set"], dict(entry.get("options") or {}), own,
                               entry.get("search"), entry.get("tuned_as"))
    for exp in out.values():
        if exp.tuned_as is None:
            continue
        source = out.get(exp.tuned_as)
        if source is None or not source.search:
            raise ValueError(f"experiments.{exp.name}.tuned_as: '{exp.tuned_as}' is not an experiment with a search "
                             f"(tuned: {', '.join(sorted(n for n, e in out.items() if e.search)) or 'none'})")
        if source.is_reference != exp.is_reference:
            raise ValueError(f"experiments.{exp.name}.tuned_as: '{exp.tuned_as}' is a "
                             f"{'reference' if source.is_reference else 'neural'} model, {exp.name} is not")
    return out


def ensemble_candidates(config: Mapping[str, Any]) -> list[str]:
    """The ensemble's candidate experiments of a checked config (section ``ensemble``: every experiment on its
    ``feature_set``, or those of its ``candidates`` list), in the matrix's order; the ensemble exists when there are
    at least two."""
    section = config["ensemble"]
    listed = section["candidates"]
    return [n for n, e in config["experiments"].items()
            if e["feature_set"] == section["feature_set"] and (listed is None or n in listed)]


def ensemble_experiment(config: Mapping[str, Any]) -> dict[str, Experiment]:
    """``{"ensemble": Experiment}`` when the checked config's ensemble has at least two candidates and its split is
    K-fold, else ``{}`` (one 'seed': its predictions are already seed means). The fixed protocol (learning curves)
    fits no ensemble: its run folds are training sizes, and the curves compare models, not their blend."""
    if config["split"]["mode"] == "fixed" or len(ensemble_candidates(config)) < 2:
        return {}
    return {ENSEMBLE: Experiment(ENSEMBLE, ENSEMBLE, config["ensemble"]["feature_set"], {}, (0,))}


def reference_options(model: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """A reference model's options over its defaults.

    Raises:
        ValueError: an unknown reference, an unknown option, or a value of the wrong type or choice.
    """
    if model not in REFERENCE_OPTIONS:
        raise ValueError(f"reference model '{model}' is not one of {', '.join(REFERENCE_MODELS)}")
    defaults = REFERENCE_OPTIONS[model]
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise ValueError(f"reference model '{model}': unknown options {unknown} "
                         f"(accepted: {', '.join(sorted(defaults))})")
    for key, value in options.items():
        default = defaults[key]
        if key in REFERENCE_CHOICES and value not in REFERENCE_CHOICES[key]:
            raise ValueError(f"reference model '{model}': option '{key}' is {value!r}, expected one of "
                             f"{', '.join(REFERENCE_CHOICES[key])}")
        numeric = isinstance(default, (int, float)) and not isinstance(default, bool)
        if numeric and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise ValueError(f"reference model '{model}': option '{key}' is {value!r}, expected a number")
        if key in REDUCTION_MINIMUM and (not isinstance(value, int) or value < REDUCTION_MINIMUM[key]):
            raise ValueError(f"reference model '{model}': option '{key}' is {value!r}, expected an integer >= "
                             f"{REDUCTION_MINIMUM[key]}")
    return {**defaults, **options}


def pooled_widths(dims: Mapping[str, Sequence[int]], pooling: str) -> list[tuple[str, int]]:
    """(block name, width) of the pooled features of streams with per-stream shapes ``dims`` (batch key -> shape, as
    ``memf.padding.padded.Padded.dims``): ``mean`` keeps one vector per entity and modality (the last axis), ``set``
    every anchor and room field and the mean, max, min and sd over items and clips, plus the three counts."""
    if pooling not in REFERENCE_CHOICES["pooling"]:
        raise ValueError(f"pooling '{pooling}': expected one of {', '.join(REFERENCE_CHOICES['pooling'])}")
    out = []
    for key, mask_key in POOLED_BLOCKS:
        shape = tuple(dims[key])
        if pooling == "mean":
            out.append((key, int(shape[-1])))
        else:
            per = math.prod(shape[1:]) if mask_key is not None else math.prod(shape)
            out.append((key, int(per) * (4 if mask_key is not None else 1)))
    return out + ([("counts", len(COUNT_KEYS))] if pooling == "set" else [])


def is_reducible(name: str) -> bool:
    """Whether a pooled block is a vector block the reduction may shrink (numeric fields and counts pass through)."""
    return not (name.endswith("/numeric") or name == "counts")


def reduced_widths(widths: Sequence[tuple[str, int]], reduce_above: int, components: int,
                   n_train: int | None = None) -> list[tuple[str, int]]:
    """The widths after the reduction rule (:data:`REDUCTION_DEFAULTS`): unchanged when the total is at most
    ``reduce_above``; else every reducible block wider than ``components`` shrinks to ``components`` (capped by the
    training streams ``n_train`` when known)."""
    if sum(w for _, w in widths) <= reduce_above:
        return list(widths)
    k = components if n_train is None else min(components, n_train)
    return [(name, k if is_reducible(name) and w > components else w) for name, w in widths]
