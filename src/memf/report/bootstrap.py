"""Paired bootstrap of metric differences between two models on the same test streams, resampled within folds.

A comparison "A vs MEMF" resamples the test streams with replacement *within each fold* (a stratified bootstrap:
every resample keeps each fold's share of the streams, as the protocol does), the same resamples for every model
and seed, so the comparison is paired. On each resample each metric of every seed's pooled predictions is computed,
averaged over each model's seeds, and the difference A - MEMF taken. The percentile interval of that difference over
resamples is the reported interval; it measures how much the difference depends on which streams were sampled. The
spread over folds and seeds is reported separately (the sd columns of the tables).

Point values everywhere come from :func:`memf.core.metrics.regression_metrics` (scikit-learn, SciPy). Inside the
bootstrap the same formulas are evaluated for thousands of resamples at once by :func:`resampled_metrics`,
vectorised over resamples; tests check it against the point functions on every resample of a small case.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import rankdata

from memf.core.metrics import METRICS, regression_metrics

_EPS = np.finfo(np.float64).eps  # scikit-learn's MAPE guard against division by zero


def resample_indices(groups: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """[n_boot, N] row indices drawn with replacement within each group (fold) of ``groups`` [N]."""
    groups = np.asarray(groups)
    n = len(groups)
    if n < 2 or n_boot < 1:
        raise ValueError(f"bootstrap: {n} streams and {n_boot} resamples, expected at least 2 and 1")
    rng = np.random.default_rng(seed)
    idx = np.empty((n_boot, n), dtype=np.int64)
    for g in np.unique(groups):
        members = np.flatnonzero(groups == g)
        idx[:, members] = members[rng.integers(0, len(members), size=(n_boot, len(members)))]
    return idx


def _rank_rows(x: np.ndarray) -> np.ndarray:
    return rankdata(x, axis=1)  # average ranks for ties, as scipy.stats.spearmanr


def resampled_metrics(y_true: np.ndarray, y_pred: np.ndarray, idx: np.ndarray) -> dict[str, np.ndarray]:
    """Each metric of ``y_pred`` against ``y_true`` (both [N]) on every resample ``idx`` [B, N]: name -> [B]."""
    yt = np.asarray(y_true, dtype=np.float64)[idx]  # [B, N]
    yp = np.asarray(y_pred, dtype=np.float64)[idx]
    err = yt - yp
    sse = (err**2).sum(1)
    sst = ((yt - yt.mean(1, keepdims=True)) ** 2).sum(1)
    var_y = yt.var(1)
    out = {
        "mae": np.abs(err).mean(1),
        "mse": sse / yt.shape[1],
        "mape": (np.abs(err) / np.maximum(np.abs(yt), _EPS)).mean(1),
    }
    # scikit-learn's conventions for a constant y_true: 1.0 for a perfect fit, else 0.0 (force_finite=True).
    with np.errstate(divide="ignore", invalid="ignore"):
        r2 = np.where(sst > 0, 1 - sse / sst, np.where(sse == 0, 1.0, 0.0))
        var_res = err.var(1)
        evs = np.where(var_y > 0, 1 - var_res / var_y, np.where(var_res == 0, 1.0, 0.0))
        rt, rp = _rank_rows(yt), _rank_rows(yp)
        rt -= rt.mean(1, keepdims=True)
        rp -= rp.mean(1, keepdims=True)
        denom = np.sqrt((rt**2).sum(1) * (rp**2).sum(1))
        rho = np.where(denom > 0, (rt * rp).sum(1) / np.where(denom > 0, denom, 1.0), 0.0)
    out["r2"], out["evs"], out["spearman"] = r2, evs, rho
    return {name: out[name] for name in METRICS}


@dataclass(frozen=True)
class Interval:
    """A metric difference (A - B, seed-averaged) and its bootstrap percentile interval."""

    diff: float
    lo: float
    hi: float


def paired_difference(
    y_true: np.ndarray, preds_a: np.ndarray, preds_b: np.ndarray, idx: np.ndarray, level: float = 0.95
) -> dict[str, Interval]:
    """Metric differences A - B with percentile intervals, for every metric.

    Args:
        y_true: [N] targets of the shared test streams.
        preds_a: [Sa, N] predictions of model A, one row per seed.
        preds_b: [Sb, N] predictions of model B (the comparison model), one row per seed.
        idx: [n_boot, N] resamples from :func:`resample_indices`.
        level: coverage of the interval.
    """
    if preds_a.shape[1] != len(y_true) or preds_b.shape[1] != len(y_true):
        raise ValueError(f"paired_difference: predictions {preds_a.shape} and {preds_b.shape} for {len(y_true)} streams")
    point_a = [regression_metrics(y_true, p) for p in preds_a]
    point_b = [regression_metrics(y_true, p) for p in preds_b]
    boot_a = [resampled_metrics(y_true, p, idx) for p in preds_a]
    boot_b = [resampled_metrics(y_true, p, idx) for p in preds_b]
    tail = (1 - level) / 2 * 100
    out = {}
    for name in METRICS:
        diff = float(np.mean([m[name] for m in point_a]) - np.mean([m[name] for m in point_b]))
        boot = np.mean([b[name] for b in boot_a], axis=0) - np.mean([b[name] for b in boot_b], axis=0)  # [n_boot]
        lo, hi = np.percentile(boot, [tail, 100 - tail])
        out[name] = Interval(diff, float(lo), float(hi))
    return out


#: How far an interval end may move when the same run is repeated on another machine (other CPU kernels: the features
#: differ in their last bits and the tuning follows them). Measured, not chosen: the largest change of any ΔR²
#: interval end between two runs of bench/rerun.yaml (the demo's data and budget) on one machine, with its own and
#: with portable CPU kernels (bench/rerun_tolerance.py: 0.0333), rounded up to the tables' three decimals
#: (docs/training.md, "Reruns on other machines"). A verdict whose interval ends within it of 0 reads "borderline",
#: never better, worse or not separable that a rerun elsewhere could flip.
VERDICT_TOLERANCE = 0.034


def verdict(interval: Interval, higher_is_better: bool, tolerance: float = VERDICT_TOLERANCE) -> str:
    """"better" or "worse" when the interval of (row - reference) excludes 0 by more than ``tolerance``, on which
    side; "borderline" when an end is within ``tolerance`` of 0 (a rerun on another machine may move it across);
    else "not separable" (the interval holds 0 with room to spare, or is 0 itself: the same predictions)."""
    lo, hi = interval.lo, interval.hi
    if lo > tolerance:
        return "better" if higher_is_better else "worse"
    if hi < -tolerance:
        return "worse" if higher_is_better else "better"
    if (abs(lo) <= tolerance or abs(hi) <= tolerance) and (lo, hi) != (0.0, 0.0):
        return "borderline"
    return "not separable"
