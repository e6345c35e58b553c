"""Code versions of the pipeline's stages: a hash of the source files whose change changes a stage's output.

Snakemake reruns a rule when its ``params:`` change but not when a module its script imports changes, so every rule
carries :func:`code_version` of its stage among its params: editing a model file replans its trainings, editing the
tables code replans the tables, and a docstring edit is treated like any other edit (tables never mix code
versions). Speed and placement code (the decoding workers, the GPU claim, the job log) is not part of any stage.
Standard library only: the workflow computes these when it loads.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent
_TRAINING = ("training/matrix.py", "training/padded.py", "training/prepare.py", "training/runs.py",
             "training/settings.py", "training/tuning.py", "training/fit.py", "core/metrics.py", "data/folds.py")
#: What turns a padded feature set into a trained member's predictions: a model bundle records its version and is
#: refused by a checkout whose version differs (memf.predict.bundle).
_MODEL = ("models", "training/prepare.py", "training/padded.py")
#: What writes a bundle (not the predictor, figures or truth comparison: editing those does not re-export).
_EXPORT = ("predict/bundle.py", "predict/intervals.py", "predict/neutral.py", "predict/plan.py", *_MODEL,
           "training/runs.py", "training/matrix.py", "features/store.py", "features/base.py", "features/spec.py",
           "core/metrics.py")
_PREDICT = ("predict", *_MODEL, "training/pad.py", "training/fit.py", "training/runs.py", "training/matrix.py",
            "features/store.py", "features/base.py", "data/dataset.py", "data/contract.py", "data/folds.py",
            "core/metrics.py")
#: Stage -> source files and folders (relative to src/memf) its outputs depend on.
STAGE_SOURCES: dict[str, tuple[str, ...]] = {
    "simulate": ("simulate", "data/contract.py", "data/dataset.py", "data/records.py"),
    "validate": ("data",),
    "tiny_model": ("features/tiny.py",),
    "pad": ("training/pad.py", "training/padded.py", "features/store.py", "data/dataset.py", "data/contract.py"),
    "fit": ("models", "training/loop.py", "training/checkpoint.py", *_TRAINING),
    "fit_reference": ("training/references.py", *_TRAINING),
    "report": ("report", "core/metrics.py", "training/runs.py", "training/matrix.py", "data/folds.py"),
    "model": _MODEL,
    "export": _EXPORT,
    "predict": _PREDICT,
}


def source_files(stage: str) -> list[Path]:
    """Every ``.py`` file of ``stage``'s sources, sorted."""
    if stage not in STAGE_SOURCES:
        raise ValueError(f"unknown stage '{stage}', expected one of {', '.join(STAGE_SOURCES)}")
    files: set[Path] = set()
    for rel in STAGE_SOURCES[stage]:
        path = PACKAGE / rel
        files |= set(path.rglob("*.py")) if path.is_dir() else {path}
    return sorted(files)


@functools.cache
def code_version(stage: str) -> str:
    """sha256 (12 hex digits) over the names and contents of ``stage``'s source files."""
    digest = hashlib.sha256()
    for path in source_files(stage):
        digest.update(path.relative_to(PACKAGE).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]
