"""Prediction intervals by split-conformal calibration on each fold's validation part (docs/predict.md, "Intervals").

For one fold ``k`` of a trained experiment, the seed ensemble's prediction is the mean over its seeds. Its absolute
residuals ``|y - mean|`` on the fold's **validation** streams (which no seed trained on and which chose nothing but
the epoch) calibrate a symmetric interval on the log scale: with ``n`` residuals and nominal coverage ``1 - alpha``,
``q`` is the ``ceil((n + 1)(1 - alpha))``-th smallest residual (Vovk et al.; Lei et al. 2018, "split conformal"), and
``[mean - q, mean + q]`` covers a new exchangeable stream's log sales with probability at least ``1 - alpha``. The
fold's **test** part, disjoint from the validation part, measures the coverage actually reached.

A bundle of several folds predicts with the mean over every fold's seeds; its interval uses ``q`` from the
validation residuals of all member folds pooled (each stream is the validation stream of exactly one fold, so each
residual comes from a model that never trained on that stream: a cross-conformal variant). The test coverage
reported for it is that of the per-fold procedure, pooled over folds: each fold's test streams against its own
``q_k``, the only figure computed on streams that took part in no choice.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from memf.core.io import DataError

METHOD = ("split-conformal: absolute residuals of the seed ensemble's mean on each member fold's validation part; "
          "several folds pool their validation residuals (cross-conformal)")


def conformal_quantile(residuals: np.ndarray, level: float, where: str) -> float:
    """The split-conformal quantile of absolute ``residuals`` for nominal coverage ``level``.

    Raises:
        DataError: too few residuals for the level (the interval would be unbounded); ``where`` names them.
    """
    residuals = np.sort(np.abs(np.asarray(residuals, dtype=np.float64)))
    n = len(residuals)
    rank = math.ceil((n + 1) * level)
    if rank > n:
        need = math.ceil(level / (1 - level))
        raise DataError(f"{where}: {n} validation streams cannot calibrate a {level:.0%} interval (need at least "
                        f"{need}); lower predict.coverage or give the folds more streams")
    return float(residuals[rank - 1])


def seed_mean(predictions: pl.DataFrame, seeds: list[int]) -> pl.DataFrame:
    """Per stream of a run's ``predictions.parquet``: split, y_true and the mean y_pred over ``seeds``."""
    chosen = predictions.filter(pl.col("seed").is_in(seeds))
    missing = sorted(set(seeds) - set(chosen["seed"].unique().to_list()))
    if missing:
        raise DataError(f"run predictions hold no seeds {missing}")
    return (chosen.group_by("stream_id", maintain_order=True)
            .agg(pl.col("split").first(), pl.col("y_true").first(), pl.col("y_pred").mean()))


@dataclass(frozen=True)
class Calibration:
    """The interval of a bundle: nominal level, half-width ``q`` (log scale) and what the folds measured."""

    level: float
    q: float
    n_calibration: int
    per_fold: dict[int, dict[str, float]]  # fold -> q, n_val, n_test, test_coverage, test_mean_width

    @property
    def test_coverage(self) -> float:
        """Coverage on the member folds' test parts, each fold with its own ``q_k`` (pooled over test streams)."""
        covered = sum(f["test_coverage"] * f["n_test"] for f in self.per_fold.values())
        return covered / sum(f["n_test"] for f in self.per_fold.values())

    def to_json(self) -> dict[str, Any]:
        return {"level": self.level, "q": self.q, "n_calibration": self.n_calibration, "method": METHOD,
                "test_coverage": self.test_coverage, "test_streams": int(sum(f["n_test"] for f in self.per_fold.values())),
                "per_fold": {str(k): v for k, v in sorted(self.per_fold.items())}}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Calibration:
        return cls(float(data["level"]), float(data["q"]), int(data["n_calibration"]),
                   {int(k): dict(v) for k, v in data["per_fold"].items()})


def calibrate(fold_predictions: Mapping[int, pl.DataFrame], seeds: Mapping[int, list[int]], level: float) -> Calibration:
    """Calibrate the interval from each member fold's run predictions (the chosen ``seeds`` of each fold).

    Args:
        fold_predictions: fold -> that run's ``predictions.parquet`` (stream_id, seed, split, y_true, y_pred).
        seeds: fold -> the seeds the bundle holds.
        level: nominal coverage, e.g. 0.9.
    """
    if not 0 < level < 1:
        raise ValueError(f"predict.coverage is {level}, expected a number between 0 and 1")
    per_fold: dict[int, dict[str, float]] = {}
    pooled: list[np.ndarray] = []
    for fold, frame in sorted(fold_predictions.items()):
        ens = seed_mean(frame, seeds[fold])
        res = {split: (ens.filter(pl.col("split") == split)["y_true"] - ens.filter(pl.col("split") == split)["y_pred"])
               .abs().to_numpy() for split in ("val", "test")}
        q = conformal_quantile(res["val"], level, f"fold {fold}")
        per_fold[fold] = {"q": q, "n_val": int(len(res["val"])), "n_test": int(len(res["test"])),
                          "test_coverage": float(np.mean(res["test"] <= q)), "test_mean_width": 2 * q}
        pooled.append(res["val"])
    residuals = np.concatenate(pooled)
    q = per_fold[next(iter(per_fold))]["q"] if len(per_fold) == 1 else conformal_quantile(residuals, level, "pooled folds")
    return Calibration(level, q, int(len(residuals)), per_fold)


def coverage(y_true: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> float:
    """Share of the known targets inside their intervals (NaN targets, sales not known, are left out)."""
    known = ~np.isnan(y_true)
    if not known.any():
        return float("nan")
    return float(np.mean((y_true[known] >= lower[known]) & (y_true[known] <= upper[known])))
