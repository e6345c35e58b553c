"""Simple reference models a practitioner tries first, written as runs in the same format as the trained models.

- ``mean``: predicts the training split's mean target for every stream.
- ``ridge``: ridge regression on pooled features, standardised on the train split; the penalty is chosen by
  scikit-learn's ``RidgeCV`` with a predefined train/validation split, then the model is refitted on train alone.
- ``hgb``: scikit-learn's ``HistGradientBoostingRegressor`` on the same pooled features, fitted on train and grown
  ``step`` iterations at a time (``warm_start``); growth stops after ``patience`` steps without a better validation MSE,
  and the number of iterations with the lowest validation MSE is kept.

Pooled features (:func:`pooled_features`): per entity and modality, the mean over fields, items and clips (masked:
padded items and clips are left out), concatenated. Numeric fields are kept one feature per field (a mean over
different scalar fields would mix units). The test split is never used for any choice.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.linear_model import Ridge, RidgeCV
from sklearn.model_selection import PredefinedSplit
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from memf.training.padded import Padded, read_padded
from memf.training.matrix import REFERENCE_MODELS
from memf.training.runs import predictions_frame, write_run_core

log = logging.getLogger(__name__)

#: Options each reference accepts (from the experiment's ``options``), with defaults.
DEFAULT_OPTIONS: dict[str, dict[str, Any]] = {
    "mean": {},
    "ridge": {"alphas": [1e-2, 1e-1, 1.0, 10.0, 100.0, 1e3, 1e4, 1e5]},
    "hgb": {
        "max_iter": 200, "learning_rate": 0.1, "max_leaf_nodes": 15, "min_samples_leaf": 10, "l2_regularization": 1.0,
        "step": 10, "patience": 3,  # boost `step` iterations at a time; stop after `patience` steps without a better val MSE
    },
}
#: Entity -> (batch key, mask key or None) blocks pooled in this order.
POOLED_BLOCKS: tuple[tuple[str, str | None], ...] = (
    ("anchor/text", None), ("anchor/image", None), ("anchor/numeric", None),
    ("commodity/text", "commodity/mask"), ("commodity/image", "commodity/mask"), ("commodity/numeric", "commodity/mask"),
    ("room/text", None), ("room/image", None), ("room/numeric", None),
    ("video/x", "video/mask"), ("audio/x", "audio/mask"),
)


def _masked_mean(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean over axis 1 of ``x`` [S, K, ...] at positions where ``mask`` [S, K] is True (zeros when none is)."""
    m = mask.astype(np.float64).reshape(mask.shape + (1,) * (x.ndim - 2))
    return (x * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1.0)


def pooled_features(padded: Padded) -> tuple[np.ndarray, list[tuple[str, int]]]:
    """[S, F] pooled features of every stream and the (batch key, width) of each block, in :data:`POOLED_BLOCKS` order."""
    blocks: list[np.ndarray] = []
    names: list[tuple[str, int]] = []
    for key, mask_key in POOLED_BLOCKS:
        x = padded.arrays[key].astype(np.float64)
        if mask_key is not None:
            x = _masked_mean(x, padded.arrays[mask_key])  # items or clips -> one vector per stream
        if not key.endswith("/numeric") and x.ndim == 3:
            x = x.mean(axis=1)  # fields -> one vector per modality: [S, L, D] -> [S, D]
        blocks.append(x)
        names.append((key, x.shape[1]))
    return np.concatenate(blocks, axis=1), names


def _options(name: str, options: dict[str, Any]) -> dict[str, Any]:
    if name not in DEFAULT_OPTIONS:
        raise ValueError(f"reference model '{name}' is not one of {', '.join(REFERENCE_MODELS)}")
    unknown = sorted(set(options) - set(DEFAULT_OPTIONS[name]))
    if unknown:
        raise ValueError(f"reference model '{name}': unknown options {unknown}, expected a subset of {sorted(DEFAULT_OPTIONS[name])}")
    return DEFAULT_OPTIONS[name] | options


def fit_reference(name: str, padded: Padded, options: dict[str, Any], seed: int) -> tuple[np.ndarray, dict[str, Any]]:
    """Fit reference model ``name`` on the train split (validation for its one choice); predict every stream.

    Returns:
        predictions [S] for all streams, and a JSON-able description of the fitted model (the choices made).
    """
    opts = _options(name, options)
    train, val = padded.index("train"), padded.index("val")
    y = padded.target.astype(np.float64)
    if name == "mean":
        value = float(y[train].mean())
        return np.full(len(padded), value), {"mean": value}
    x, blocks = pooled_features(padded)
    scaler = StandardScaler().fit(x[train])
    xs = scaler.transform(x)
    info: dict[str, Any] = {"features": [[key, width] for key, width in blocks], "n_features": int(x.shape[1])}
    if name == "ridge":
        rows = np.concatenate([train, val])
        folds = PredefinedSplit(np.r_[np.full(len(train), -1), np.zeros(len(val), dtype=int)])
        search = RidgeCV(alphas=opts["alphas"], cv=folds, scoring="neg_mean_squared_error").fit(xs[rows], y[rows])
        model = Ridge(alpha=search.alpha_).fit(xs[train], y[train])
        info.update(alpha=float(search.alpha_), alphas=list(opts["alphas"]), intercept=float(model.intercept_))
        return model.predict(xs), info
    step, patience = opts.pop("step"), opts.pop("patience")
    max_iter = opts.pop("max_iter")
    model = HistGradientBoostingRegressor(early_stopping=False, warm_start=True, random_state=seed, **opts)
    best, best_mse, n_iter = 0, float("inf"), 0
    while n_iter < max_iter and n_iter - best < patience * step:
        n_iter = min(n_iter + step, max_iter)
        model.set_params(max_iter=n_iter).fit(xs[train], y[train])
        for i, p in enumerate(model.staged_predict(xs[val])):
            if i >= n_iter - step:
                mse = float(np.mean((p - y[val]) ** 2))
                if mse < best_mse:
                    best, best_mse = i + 1, mse
    pred = next(p for i, p in enumerate(model.staged_predict(xs)) if i == best - 1)
    info.update(opts, max_iter=max_iter, iterations=best, fitted_iterations=n_iter, val_mse=best_mse)
    return pred, info


def run_reference(
    padded_path: str | Path,
    out_dir: str | Path,
    *,
    experiment: str,
    model_name: str,
    options: dict[str, Any],
    feature_set: str,
    seed: int,
    ground_truth: str | Path | None = None,
    threads: int = 1,
) -> dict[str, Any]:
    """Fit one reference model and write its run folder (metrics.json, predictions.parquet, model.json).

    ``threads`` caps the OpenMP/BLAS threads scikit-learn uses (the job's Snakemake threads): an uncapped
    gradient-boosting fit on a busy machine is several times slower than a single-threaded one.
    """
    padded = read_padded(padded_path)
    started = time.perf_counter()
    with threadpool_limits(threads):
        pred, info = fit_reference(model_name, padded, options, seed)
    seconds = time.perf_counter() - started
    log.info("%s seed %d: reference %s fitted in %.1f s (%s)", experiment, seed, model_name, seconds, info)
    meta = {"experiment": experiment, "model": model_name, "options": options, "feature_set": feature_set, "seed": seed, "fitted": info}
    return write_run_core(
        out_dir,
        predictions_frame(padded.stream_id, padded.split, padded.target, pred),
        {"experiment": experiment, "model": model_name, "feature_set": feature_set, "seed": seed, "epoch": None, "train_seconds": seconds},
        meta,
        ground_truth,
    )
