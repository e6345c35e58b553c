"""Was the tuning budget enough? (docs/training.md, "Tuning budget").

A study of T trials is enough for a model when its expected best validation score no longer climbs with more trials.
Dodge et al. (2019) estimate the expected best of n trials from the T observed ones (:func:`expected_max`); the
**gain of the last doubling** is that estimate at T minus at T // 2 (:func:`doubling_gain`). A row whose gain exceeds
:data:`BUDGET_TOLERANCE` (in validation R²) is **under-tuned**, and so is every verdict that rests on it: more trials
can only raise a model's expected best, so a comparison reads "under-tuned" when its losing side still climbs, or
either side of an undecided one (:func:`budget_verdict`).

The epoch cap must not bind either: a final run that trained up to ``train.epochs`` without early stopping firing was
still improving within its patience window, so more epochs might have helped (:func:`cap_bound`). Whether a larger
patience would have found a better epoch cannot be read from a run that stopped; the tables report how often the cap
bound and how often early stopping ended the run.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl

from memf.core.io import read_json

#: A row whose expected best validation R² still gains more than this from its last doubling of trials is
#: under-tuned (the issue's "say, more than 0.005 R²"; one place for the whole report).
BUDGET_TOLERANCE = 0.005
UNDER_TUNED = "under-tuned"


def expected_max(scores: np.ndarray, n: int) -> float:
    """Expected best of ``n`` trials drawn with replacement from ``scores`` (Dodge et al. 2019, eq. 1):
    sum_i v_(i) [(i/N)^n - ((i-1)/N)^n] over the sorted scores v_(1) <= ... <= v_(N)."""
    v = np.sort(np.asarray(scores, dtype=np.float64))
    big_n = len(v)
    i = np.arange(1, big_n + 1)
    return float(np.sum(v * ((i / big_n) ** n - ((i - 1) / big_n) ** n)))


def trial_scores(trials: str | Path | pl.DataFrame) -> np.ndarray:
    """Validation R² of every trial of a study that has one (failed trials have none; pruned ones keep their best
    epoch's), in trial order."""
    frame = pl.read_parquet(trials) if not isinstance(trials, pl.DataFrame) else trials
    if "val_r2" not in frame.columns:
        return np.zeros(0)
    return frame.sort("number").filter(pl.col("val_r2").is_not_null())["val_r2"].to_numpy()


def doubling_gain(scores: np.ndarray) -> float | None:
    """Expected best validation R² at all T trials minus at T // 2 (None with fewer than 2 scored trials)."""
    n = len(scores)
    if n < 2:
        return None
    return expected_max(scores, n) - expected_max(scores, n // 2)


def study_gain(records: Sequence[str | Path]) -> float | None:
    """Mean doubling gain over the studies ``records`` (``trials.parquet`` of one experiment's folds); None when no
    study has two scored trials."""
    gains = [g for g in (doubling_gain(trial_scores(p)) for p in records) if g is not None]
    return float(np.mean(gains)) if gains else None


def budget_state(gain: float | None) -> str | None:
    """"enough", "under-tuned", or None for an untuned row."""
    if gain is None:
        return None
    return UNDER_TUNED if gain > BUDGET_TOLERANCE else "enough"


def budget_verdict(verdict: str | None, row_gain: float | None, reference_gain: float | None) -> str | None:
    """The verdict of a row against its reference, or "under-tuned" when it rests on a side that still climbs.

    More trials can only raise a model's expected best score, so a verdict rests on the side that loses: "worse" (the
    row loses) is under-tuned when the row still climbs, "better" (the reference loses) when the reference does, and
    an undecided verdict ("borderline", "not separable") when either does.
    """
    if verdict in (None, "reference"):
        return verdict
    row, reference = budget_state(row_gain) == UNDER_TUNED, budget_state(reference_gain) == UNDER_TUNED
    resting = {"worse": row, "better": reference}.get(verdict, row or reference)
    return UNDER_TUNED if resting else verdict


def cap_bound(metrics_json: str | Path, cap: int) -> tuple[int, int, int]:
    """Of a trained run's seeds: how many trained to the epoch cap ``cap`` (early stopping never fired: still
    improving within the patience window), how many early stopping ended, and how many there are. A reference run
    (no epochs) counts (0, 0, 0)."""
    seeds = read_json(metrics_json).get("seeds", {})
    runs = [info["epochs_run"] for info in seeds.values() if "epochs_run" in info]
    hit = sum(1 for n in runs if n >= cap)
    return hit, len(runs) - hit, len(runs)
