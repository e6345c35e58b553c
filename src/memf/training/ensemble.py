"""The ensemble of the study's experiments, and the choice of the best model (docs/training.md, "The ensemble").

Per fold, the ensemble predicts every stream by ``sum_e w_e * p_e``, where ``p_e`` is experiment ``e``'s seed mean on
the stream and the weights are non-negative and sum to 1 (a convex combination: the ensemble stays on the scale of its
members and never extrapolates beyond them). The weights minimise the squared error on the fold's **validation part
only** (:func:`fit_weights`: non-negative least squares with the sum held at 1 by a heavily weighted extra equation,
then normalised); the test part decides nothing and is predicted like any run's. The ensemble's run folder,
``results/runs/ensemble/fold{k}``, holds ``predictions.parquet``, ``model.json`` and ``metrics.json`` as any run, so
every table, figure and bootstrap treats it as a row.

The best model (``predict.bundle: best``; :func:`choose_best`) is decided on the validation parts too: the ensemble's
validation error is measured cross-fitted (each fold's validation part is cut in two halves by a seeded permutation;
the weights fitted on one half predict the other), since the in-sample error of a convex combination is never above
any of its members'. Pooled over folds (the sum of squared errors over every validation stream), the candidate with the
lowest error is the best; a single experiment beats the ensemble on a tie, and ties between single experiments go to
the first in the candidate order.

The candidates (config ``ensemble``; :func:`memf.training.matrix.ensemble_candidates`): every experiment of the matrix
on the feature set ``ensemble.feature_set`` (null ``candidates``), or the listed ones; all on one feature set, so a
bundle of them extracts new data once.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from scipy.optimize import nnls

from memf.core.io import DataError, read_json, write_json, write_parquet
from memf.core.metrics import regression_metrics
from memf.training.matrix import ENSEMBLE, METRICS_FILE, MODEL_JSON, PREDICTIONS_FILE

#: Weight of the equation that holds the weights' sum at 1, per validation stream (large: the sum is exact to ~1e-9).
SUM_WEIGHT = 1e4
#: Seeds the halves of a validation part for the cross-fitted error (with the fold).
HALVES_SEED = 0


def fit_weights(p: np.ndarray, y: np.ndarray) -> np.ndarray:
    """[m] non-negative weights summing to 1 that minimise ``|p @ w - y|^2`` for predictions ``p`` [n, m] and targets
    ``y`` [n]."""
    n = len(y)
    lam = SUM_WEIGHT * np.sqrt(max(n, 1))
    a = np.vstack([p, np.full((1, p.shape[1]), lam)])  # [n + 1, m]
    b = np.concatenate([y, [lam]])
    w, _ = nnls(a, b)
    if w.sum() <= 0:
        raise DataError("the ensemble's weights are all zero: the candidates' validation predictions are unusable")
    return w / w.sum()


def seed_means(run_dir: str | os.PathLike[str]) -> pl.DataFrame:
    """stream_id, split, y_true and the mean over seeds of y_pred (one row per stream), sorted by stream_id."""
    frame = pl.read_parquet(Path(run_dir) / PREDICTIONS_FILE)
    return (frame.group_by("stream_id", "split").agg(pl.col("y_true").first(), pl.col("y_pred").mean())
            .sort("stream_id"))


def _halves(n: int, fold: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng([HALVES_SEED, fold]).permutation(n)
    return np.sort(order[: n // 2]), np.sort(order[n // 2:])


def cross_fitted_sse(p: np.ndarray, y: np.ndarray, fold: int) -> float:
    """Squared error of the ensemble on a validation part [n, m] when each half is predicted with the weights fitted
    on the other half."""
    a, b = _halves(len(y), fold)
    if min(len(a), len(b)) == 0:
        raise DataError(f"fold {fold}: {len(y)} validation streams cannot be cut in two halves")
    sse = 0.0
    for fit, score in ((a, b), (b, a)):
        w = fit_weights(p[fit], y[fit])
        sse += float(np.sum((p[score] @ w - y[score]) ** 2))
    return sse


def fit_ensemble(run_dirs: Mapping[str, str | os.PathLike[str]], fold: int, out_dir: str | os.PathLike[str],
                 feature_set: str) -> dict[str, Any]:
    """Fit the fold's weights over the candidates' runs ``run_dirs`` (experiment -> ``results/runs/{e}/fold{k}``) on
    the validation part and write the ensemble's run folder ``out_dir``; return its ``model.json``.

    Raises:
        DataError: fewer than two candidates, or runs of other streams or targets.
    """
    names = list(run_dirs)
    if len(names) < 2:
        raise DataError(f"the ensemble needs at least two candidate experiments, got {names}")
    frames = {n: seed_means(d) for n, d in run_dirs.items()}
    first = frames[names[0]]
    for n, frame in frames.items():
        if frame["stream_id"].to_list() != first["stream_id"].to_list() or \
                frame["split"].to_list() != first["split"].to_list():
            raise DataError(f"fold {fold}: experiment {n} has other streams or splits than {names[0]}; rerun it")
    p = np.stack([frames[n]["y_pred"].to_numpy() for n in names], axis=1)  # [S, m]
    y = first["y_true"].to_numpy()
    val = (first["split"] == "val").to_numpy()
    w = fit_weights(p[val], y[val])
    pred = p @ w
    sse = {n: float(np.sum((p[val, j] - y[val]) ** 2)) for j, n in enumerate(names)}
    sse[ENSEMBLE] = cross_fitted_sse(p[val], y[val], fold)
    out = Path(out_dir)
    write_parquet(out / PREDICTIONS_FILE, first.select("stream_id", "split", "y_true").with_columns(
        pl.lit(0, dtype=pl.Int64).alias("seed"), pl.Series("y_pred", pred)).select(
        "stream_id", "seed", "split", "y_true", "y_pred"))
    test = (first["split"] == "test").to_numpy()
    write_json(out / METRICS_FILE, {"experiment": ENSEMBLE, "fold": fold, "val": regression_metrics(y[val], pred[val]),
                                    "test": regression_metrics(y[test], pred[test])})
    meta = {"experiment": ENSEMBLE, "model": ENSEMBLE, "feature_set": feature_set, "fold": fold, "seeds": [0],
            "weights": {n: float(v) for n, v in zip(names, w)}, "val_streams": int(val.sum()), "val_sse": sse,
            "params": {f"w.{n}": round(float(v), 4) for n, v in zip(names, w)}, "per_seed": {"0": {}}}
    write_json(out / MODEL_JSON, meta)
    return meta


def choose_best(run_dirs: Mapping[int, str | os.PathLike[str]]) -> dict[str, Any]:
    """The best model over the folds' ensemble runs (fold -> ``results/runs/ensemble/fold{k}``): ``{"choice": name,
    "val_mse": {candidate: pooled validation MSE}, "weights": {fold: {experiment: weight}}}``, where ``weights`` is
    the ensemble's when it is chosen and a single weight of 1 on the chosen experiment otherwise."""
    metas = {int(k): read_json(Path(d) / MODEL_JSON) for k, d in sorted(run_dirs.items())}
    names = list(next(iter(metas.values()))["weights"])
    n = sum(m["val_streams"] for m in metas.values())
    mse = {c: sum(m["val_sse"][c] for m in metas.values()) / n for c in [*names, ENSEMBLE]}
    choice = min(names + [ENSEMBLE], key=lambda c: (mse[c], c == ENSEMBLE, names.index(c) if c in names else 0))
    weights = {k: (m["weights"] if choice == ENSEMBLE else {choice: 1.0}) for k, m in metas.items()}
    return {"choice": choice, "val_mse": mse, "weights": weights}


def members_of(best: Mapping[str, Any]) -> Sequence[str]:
    """The experiments with a positive weight in some fold of a choice (:func:`choose_best`)."""
    return sorted({e for w in best["weights"].values() for e, v in w.items() if v > 0})
