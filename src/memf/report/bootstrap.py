"""Paired bootstrap of metric differences between models on the same test streams, resampled within folds.

A comparison "A vs MEMF" resamples the test streams with replacement *within each fold* (a stratified bootstrap:
every resample keeps each fold's share of the streams, as the protocol does), the same resamples for every model
and seed, so the comparison is paired. On each resample each metric of every seed's pooled predictions is computed,
averaged over each model's seeds, and the difference A - MEMF taken. The percentile interval of that difference over
resamples is the reported interval; it measures how much the difference depends on which streams were sampled. The
spread over folds and seeds is reported separately (the sd columns of the tables).

Point values everywhere come from :func:`memf.core.metrics.regression_metrics` (scikit-learn, SciPy). Inside the
bootstrap the same formulas are evaluated for many resamples at once (:class:`ResampledTruth`), vectorised over
resamples; tests check them against the point functions on every resample of a small case.

At scale (docs/training.md, "Tables"): the resamples are drawn in chunks (:func:`resample_chunks`, about
:data:`CHUNK_ELEMENTS` indices each), never as one [n_boot, N] matrix, and :func:`paired_differences` compares every
row of a table with its reference in one pass over the chunks: what depends on the targets alone (the resampled
targets, their ranks, their variance) and the reference's seed-averaged metrics are computed once per chunk, then
each row's; only n_boot differences per row and metric are kept. The chunks reproduce the resamples and the intervals
of the one-matrix bootstrap exactly (tested).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np
from scipy.stats import rankdata

from memf.core.metrics import METRICS, regression_metrics

_EPS = np.finfo(np.float64).eps  # scikit-learn's MAPE guard against division by zero
#: Resampled indices per chunk (resamples x streams): 8 MB per float64 array of a chunk (memory and speed only:
#: the results do not depend on it).
CHUNK_ELEMENTS = 1 << 20


def resample_chunks(groups: np.ndarray, n_boot: int, seed: int, chunk: int) -> Iterator[np.ndarray]:
    """[c, N] row indices of ``n_boot`` resamples drawn with replacement within each group (fold) of ``groups`` [N],
    ``chunk`` resamples at a time.

    The draws are those of one [n_boot, N] matrix filled group by group from ``default_rng(seed)`` (all of a group's
    resamples, row by row, then the next group's): a first pass records where each group's draws start in the
    generator's stream, then one generator per group draws its part of each chunk.
    """
    groups = np.asarray(groups)
    n = len(groups)
    if n < 2 or n_boot < 1 or chunk < 1:
        raise ValueError(f"bootstrap: {n} streams, {n_boot} resamples, chunks of {chunk}; expected at least 2, 1, 1")
    members = [np.flatnonzero(groups == g) for g in np.unique(groups)]
    rng = np.random.default_rng(seed)
    starts = []
    for m in members:
        starts.append(rng.bit_generator.state)
        for done in range(0, n_boot, chunk):  # advance past this group's draws, chunk by chunk
            rng.integers(0, len(m), size=(min(chunk, n_boot - done), len(m)))
    generators = []
    for state in starts:
        bits = type(rng.bit_generator)()
        bits.state = state
        generators.append(np.random.Generator(bits))
    for done in range(0, n_boot, chunk):
        size = min(chunk, n_boot - done)
        idx = np.empty((size, n), dtype=np.int64)
        for m, generator in zip(members, generators):
            idx[:, m] = m[generator.integers(0, len(m), size=(size, len(m)))]
        yield idx


def _rank_rows(x: np.ndarray) -> np.ndarray:
    return rankdata(x, axis=1)  # average ranks for ties, as scipy.stats.spearmanr


class ResampledTruth:
    """The targets on resamples ``idx`` [B, N] and what every model's metrics need of them, computed once."""

    def __init__(self, y_true: np.ndarray, idx: np.ndarray) -> None:
        self.idx = idx
        self.yt = np.asarray(y_true, dtype=np.float64)[idx]  # [B, N]
        self.sst = ((self.yt - self.yt.mean(1, keepdims=True)) ** 2).sum(1)
        self.var_y = self.yt.var(1)
        self.mape_denominator = np.maximum(np.abs(self.yt), _EPS)
        rt = _rank_rows(self.yt)
        rt -= rt.mean(1, keepdims=True)
        self.ranks = rt  # centred ranks of the targets
        self.ranks_ss = (rt**2).sum(1)

    def metrics(self, y_pred: np.ndarray) -> dict[str, np.ndarray]:
        """Each metric of ``y_pred`` [N] on every resample: name -> [B]."""
        yt = self.yt
        yp = np.asarray(y_pred, dtype=np.float64)[self.idx]
        err = yt - yp
        sse = (err**2).sum(1)
        out = {"mae": np.abs(err).mean(1), "mse": sse / yt.shape[1],
               "mape": (np.abs(err) / self.mape_denominator).mean(1)}
        # scikit-learn's conventions for a constant y_true: 1.0 for a perfect fit, else 0.0 (force_finite=True).
        with np.errstate(divide="ignore", invalid="ignore"):
            out["r2"] = np.where(self.sst > 0, 1 - sse / self.sst, np.where(sse == 0, 1.0, 0.0))
            var_res = err.var(1)
            out["evs"] = np.where(self.var_y > 0, 1 - var_res / self.var_y, np.where(var_res == 0, 1.0, 0.0))
            rp = _rank_rows(yp)
            rp -= rp.mean(1, keepdims=True)
            denom = np.sqrt(self.ranks_ss * (rp**2).sum(1))
            out["spearman"] = np.where(denom > 0, (self.ranks * rp).sum(1) / np.where(denom > 0, denom, 1.0), 0.0)
        return {name: out[name] for name in METRICS}

    def seed_mean(self, preds: np.ndarray) -> dict[str, np.ndarray]:
        """Each metric averaged over the seeds of ``preds`` [S, N]: name -> [B]."""
        per_seed = [self.metrics(p) for p in preds]
        return {name: np.mean([m[name] for m in per_seed], axis=0) for name in METRICS}


def resampled_metrics(y_true: np.ndarray, y_pred: np.ndarray, idx: np.ndarray) -> dict[str, np.ndarray]:
    """Each metric of ``y_pred`` against ``y_true`` (both [N]) on every resample ``idx`` [B, N]: name -> [B]."""
    return ResampledTruth(y_true, idx).metrics(y_pred)


@dataclass(frozen=True)
class Interval:
    """A metric difference (A - B, seed-averaged) and its bootstrap percentile interval."""

    diff: float
    lo: float
    hi: float


def paired_differences(
    y_true: np.ndarray,
    groups: np.ndarray,
    rows: Mapping[str, np.ndarray],
    reference: np.ndarray,
    n_boot: int,
    seed: int,
    level: float = 0.95,
    chunk: int | None = None,
) -> dict[str, dict[str, Interval]]:
    """Metric differences row - reference with percentile intervals, for every row and metric.

    Args:
        y_true: [N] targets of the shared test streams.
        groups: [N] the fold of each stream (resamples stay within folds).
        rows: name -> [Sa, N] predictions of a model, one row per seed.
        reference: [Sb, N] predictions of the model every row is compared with, one row per seed.
        n_boot, seed: the resamples (:func:`resample_chunks`; the same for every row and seed: paired).
        level: coverage of the interval.
        chunk: resamples per chunk (default: about :data:`CHUNK_ELEMENTS` indices); the results do not depend on it.
    """
    n = len(y_true)
    for name, preds in {**rows, "reference": reference}.items():
        if preds.ndim != 2 or preds.shape[1] != n:
            raise ValueError(f"paired_differences: predictions of {name} have shape {preds.shape}, "
                             f"expected [seeds, {n}]")
    boot = {name: {m: np.empty(n_boot) for m in METRICS} for name in rows}
    done = 0
    for idx in resample_chunks(groups, n_boot, seed, chunk or max(1, CHUNK_ELEMENTS // n)):
        truth = ResampledTruth(y_true, idx)
        base = truth.seed_mean(reference)  # once per chunk, for every row
        for name, preds in rows.items():
            mine = truth.seed_mean(preds)
            for m in METRICS:
                boot[name][m][done:done + len(idx)] = mine[m] - base[m]
        done += len(idx)
    point_ref = [regression_metrics(y_true, p) for p in reference]
    tail = (1 - level) / 2 * 100
    out = {}
    for name, preds in rows.items():
        point = [regression_metrics(y_true, p) for p in preds]
        out[name] = {}
        for m in METRICS:
            diff = float(np.mean([s[m] for s in point]) - np.mean([s[m] for s in point_ref]))
            lo, hi = np.percentile(boot[name][m], [tail, 100 - tail])
            out[name][m] = Interval(diff, float(lo), float(hi))
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
