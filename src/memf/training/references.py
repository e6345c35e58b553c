"""Reference models a practitioner tries first, fitted on one fold and written as runs like the trained models.

- ``mean``: the training part's mean target for every stream.
- ``ridge``: ridge regression (penalty ``alpha``) on pooled features standardised on the training part.
- ``hgb``: scikit-learn's ``HistGradientBoostingRegressor`` on the same features, fitted for ``max_iter``
  iterations; the number of iterations with the lowest validation MSE (one staged pass over the validation part) is
  kept. With ``pca: k`` every block of pooled features (one per entity and modality, numeric
  fields and counts excepted) is first reduced to its first k principal components, fitted on the training part: the
  recipe that won the SMP 2025 video-popularity track (frozen features, average pooling, PCA, boosted trees).

Pooled features (:func:`pooled_features`, option ``pooling``):

- ``mean``: per entity and modality, the mean over fields, items and clips (masked: padded items and clips are left
  out); numeric fields are kept one feature per field (a mean over different scalar fields would mix units).
- ``set``: every anchor and room field kept apart; over a stream's items and clips the mean, max, min and sd of each
  field (masked), and the number of items, video clips and audio clips. What a mean cannot see (the best item, the
  spread of prices, how many items a stream sells) is then a feature.

Every transform (scaler, PCA) is fitted on the fold's training part; the validation part decides hgb's iterations and,
through the tuning (:mod:`memf.training.tuning`), every option; the test part decides nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.compose import ColumnTransformer
from sklearn.decomposition import PCA
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.linear_model import Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from memf.core.metrics import regression_metrics
from memf.core.registry import Registry
from memf.padding.batches import BLOCK_ROWS
from memf.training.fit import Fitter, SeedResult
from memf.training.matrix import reference_options
from memf.training.prepare import FoldData
from memf.training.tuning import Outcome, Trial

#: (batch key, mask key or None) blocks pooled in this order.
POOLED_BLOCKS: tuple[tuple[str, str | None], ...] = (
    ("anchor/text", None), ("anchor/image", None), ("anchor/numeric", None),
    ("commodity/text", "commodity/mask"), ("commodity/image", "commodity/mask"), ("commodity/numeric", "commodity/mask"),
    ("room/text", None), ("room/image", None), ("room/numeric", None),
    ("video/x", "video/mask"), ("audio/x", "audio/mask"),
)
COUNT_KEYS: tuple[str, ...] = ("commodity/mask", "video/mask", "audio/mask")


def _masked_mean(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean over axis 1 of ``x`` [S, K, ...] at positions where ``mask`` [S, K] is True (zeros when none is)."""
    m = mask.astype(np.float64).reshape(mask.shape + (1,) * (x.ndim - 2))
    return (x * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1.0)


def _set_stats(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean, max, min and sd over axis 1 of ``x`` [S, K, ...] at the real positions: [S, 4 * prod(...)]."""
    flat = x.reshape(x.shape[0], x.shape[1], -1)  # [S, K, F]
    m = mask[:, :, None]
    n = np.maximum(mask.sum(axis=1), 1)[:, None].astype(np.float64)  # [S, 1]
    mean = np.where(m, flat, 0.0).sum(axis=1) / n
    sd = np.sqrt(np.maximum(np.where(m, flat**2, 0.0).sum(axis=1) / n - mean**2, 0.0))
    any_real = mask.any(axis=1)[:, None]
    high = np.where(any_real, np.where(m, flat, -np.inf).max(axis=1), 0.0)
    low = np.where(any_real, np.where(m, flat, np.inf).min(axis=1), 0.0)
    return np.concatenate([mean, high, low, sd], axis=1)


def _pooled_block(arrays: Mapping[str, np.ndarray], pooling: str) -> tuple[list[np.ndarray], list[tuple[str, int]]]:
    """The pooled blocks of one padded batch ``arrays`` and their (name, width)."""
    blocks: list[np.ndarray] = []
    names: list[tuple[str, int]] = []
    for key, mask_key in POOLED_BLOCKS:
        x = arrays[key].astype(np.float64)
        if pooling == "set":
            x = _set_stats(x, arrays[mask_key]) if mask_key is not None else x.reshape(len(x), -1)
        else:
            if mask_key is not None:
                x = _masked_mean(x, arrays[mask_key])  # items or clips -> one vector per stream
            if not key.endswith("/numeric") and x.ndim == 3:
                x = x.mean(axis=1)  # fields -> one vector per modality: [S, L, D] -> [S, D]
        blocks.append(x)
        names.append((key, x.shape[1]))
    if pooling == "set":
        counts = np.stack([arrays[k].sum(axis=1) for k in COUNT_KEYS], axis=1).astype(np.float64)
        blocks.append(counts)
        names.append(("counts", counts.shape[1]))
    return blocks, names


def pooled_features(batches: Iterable[Mapping[str, np.ndarray]], pooling: str = "mean"
                    ) -> tuple[np.ndarray, list[tuple[str, int]]]:
    """[S, F] pooled features of the streams of ``batches`` (padded batch dicts, in stream order; each may be padded
    to its own longest lists: the pooling is masked) and the (block name, width) of each block, in order.

    Blocks are named by batch key; ``set`` pooling adds one block ``counts`` (items, video clips, audio clips).
    """
    rows: list[np.ndarray] = []
    names: list[tuple[str, int]] = []
    for arrays in batches:
        blocks, names = _pooled_block(arrays, pooling)
        rows.append(np.concatenate(blocks, axis=1))
    return np.concatenate(rows), names


def _reducer(blocks: list[tuple[str, int]], components: int, n_train: int) -> ColumnTransformer:
    """Per block PCA to ``components`` (capped by the block's width and the training rows); numeric and counts pass."""
    parts, start = [], 0
    for name, width in blocks:
        cols = list(range(start, start + width))
        start += width
        if name.endswith("/numeric") or name == "counts":
            parts.append((name, "passthrough", cols))
        else:
            k = min(components, width, n_train)
            parts.append((name, PCA(n_components=k, svd_solver="full"), cols))
    return ColumnTransformer(parts)


def _prepared(data: FoldData, opts: dict[str, Any], reduce: int) -> tuple[np.ndarray, dict[str, Any]]:
    """Pooled features of every stream, standardised (and with ``reduce`` > 0 reduced by per-block PCA) as fitted on
    the fold's training part, and the record of what was done."""
    train = data.rows["train"]
    x, blocks = pooled_features(data.batches(np.arange(len(data)), BLOCK_ROWS), opts["pooling"])
    info: dict[str, Any] = {"features": [[key, width] for key, width in blocks], "n_features": int(x.shape[1]),
                            "pooling": opts["pooling"]}
    steps: list[Any] = [StandardScaler()]
    if reduce > 0:
        steps.append(_reducer(blocks, reduce, len(train)))
    xs = make_pipeline(*steps).fit(x[train]).transform(x)
    info["n_model_features"] = int(xs.shape[1])
    return xs, info


#: A reference model's fit: (fold, options over their defaults, seed) -> (predictions [S] of every stream, the record
#: of what was fitted). The torch-free catalog :data:`memf.training.matrix.REFERENCE_OPTIONS` lists the same names.
ReferenceFit = Callable[[FoldData, dict[str, Any], int], tuple[np.ndarray, dict[str, Any]]]
REFERENCES: Registry[ReferenceFit] = Registry("reference model")


@REFERENCES.register("mean")
def fit_mean(data: FoldData, opts: dict[str, Any], seed: int) -> tuple[np.ndarray, dict[str, Any]]:
    """The training part's mean target, for every stream."""
    value = float(data.target("train").mean())
    return np.full(len(data), value), {"mean": value}


@REFERENCES.register("ridge")
def fit_ridge(data: FoldData, opts: dict[str, Any], seed: int) -> tuple[np.ndarray, dict[str, Any]]:
    """Ridge regression on the standardised pooled features."""
    xs, info = _prepared(data, opts, 0)
    train = data.rows["train"]
    model = Ridge(alpha=float(opts["alpha"])).fit(xs[train], data.target("train"))
    info.update(alpha=float(opts["alpha"]), intercept=float(model.intercept_))
    return model.predict(xs), info


@REFERENCES.register("hgb")
def fit_hgb(data: FoldData, opts: dict[str, Any], seed: int) -> tuple[np.ndarray, dict[str, Any]]:
    """Gradient boosting on the standardised (optionally PCA-reduced) pooled features, for ``max_iter`` iterations;
    the number of iterations with the lowest validation MSE (one staged pass) is kept."""
    xs, info = _prepared(data, opts, int(opts["pca"]))
    train, val = data.rows["train"], data.rows["val"]
    y_val = data.target("val")
    max_iter = int(opts["max_iter"])
    hgb = {k: opts[k] for k in ("learning_rate", "max_leaf_nodes", "min_samples_leaf", "l2_regularization",
                                "max_bins", "max_features")}
    for key in ("max_leaf_nodes", "min_samples_leaf", "max_bins"):
        hgb[key] = int(hgb[key])
    model = HistGradientBoostingRegressor(max_iter=max_iter, early_stopping=False, random_state=seed, **hgb)
    model.fit(xs[train], data.target("train"))
    # The validation MSE after every iteration, in one staged pass; the best number of iterations is kept.
    val_mse = np.array([np.mean((p - y_val) ** 2) for p in model.staged_predict(xs[val])])
    best = int(np.argmin(val_mse)) + 1
    pred = next(p for i, p in enumerate(model.staged_predict(xs)) if i == best - 1)
    info.update(hgb, pca=int(opts["pca"]), max_iter=max_iter, iterations=best, val_mse=float(val_mse[best - 1]))
    return pred, info


def fit_reference(name: str, data: FoldData, options: dict[str, Any], seed: int) -> tuple[np.ndarray, dict[str, Any]]:
    """Fit reference model ``name`` on the fold's training part (validation for hgb's length); predict every stream.

    Returns:
        predictions [S] for all streams, and a JSON-able description of the fitted model (the choices made).
    """
    opts = reference_options(name, options)  # the catalog's checks first: an unknown name or option in one line
    return REFERENCES.lookup(name)(data, opts, seed)


class ReferenceFitter(Fitter):
    """Fits a reference model (rule ``fit_reference``): on the CPU, no epochs, nothing to prune."""

    def trial(self, params: Mapping[str, Any], seed: int, trial: Trial) -> Outcome:
        options, _ = self.settings(params)
        pred, info = fit_reference(self.spec.model, self.data, options, seed)
        scores = regression_metrics(self.data.target("val"), pred[self.data.rows["val"]])
        return Outcome(scores["mse"], scores["r2"], None, {"iterations": info.get("iterations")})

    def fit_seed(self, params: Mapping[str, Any], seed: int, partial: Path) -> SeedResult:
        options, _ = self.settings(params)
        started = time.perf_counter()
        pred, info = fit_reference(self.spec.model, self.data, options, seed)
        return SeedResult(seed, pred, {"fitted": info, "train_seconds": time.perf_counter() - started})
