"""Reference models a practitioner tries first, fitted on one fold and written as runs like the trained models.

- ``mean``: the training part's mean target for every stream.
- ``ridge``: ridge regression (penalty ``alpha``) on pooled features standardised on the training part.
- ``hgb``: scikit-learn's ``HistGradientBoostingRegressor`` on the same features, fitted for ``max_iter``
  iterations; the number of iterations with the lowest validation MSE (one staged pass over the validation part) is
  kept. With ``pca: k`` every block of pooled features (one per entity and modality, numeric
  fields and counts excepted) is first reduced to its first k principal components, fitted on the training part: the
  recipe that won the SMP 2025 video-popularity track (frozen features, average pooling, PCA, boosted trees).

Pooled features (:func:`pool_block`, option ``pooling``; widths :func:`memf.training.matrix.pooled_widths`):

- ``mean``: per entity and modality, the mean over fields, items and clips (masked: padded items and clips are left
  out); numeric fields are kept one feature per field (a mean over different scalar fields would mix units).
- ``set``: every anchor and room field kept apart; over a stream's items and clips the mean, max, min and sd of each
  field (masked), and the number of items, video clips and audio clips. What a mean cannot see (the best item, the
  spread of prices, how many items a stream sells) is then a feature.

At scale (docs/training.md, "Reference models"): the pooled features are computed once per job and per (pooling,
reduction) (:class:`ReferenceInputs` keeps them for every tuning trial and seed), in float32, block by block over the
streams (:class:`FoldBlocks`: any source of padded blocks; :meth:`memf.training.prepare.FoldData.blocks` serves the
in-memory arrays). Wide features are reduced by the rule of :data:`memf.training.matrix.REDUCTION_DEFAULTS`: each wide
block becomes its first principal components, an ``IncrementalPCA`` fitted over the standardised training blocks in
batches of :data:`PCA_BATCH` streams, so the job holds the reduced float32 matrix and never the pooled one.

Every transform (scaler, reduction, PCA) is fitted on the fold's training part; the validation part decides hgb's
iterations and, through the tuning (:mod:`memf.training.tuning`), every option; the test part decides nothing. Each
seed's fitted model, everything from the standardised padded arrays to the prediction, is saved in the run folder
with skops (:data:`memf.training.matrix.REFERENCE_MODEL_FILE`; :func:`load_reference` reads it back). The job that
fits them (tuning, seeds, the run folder) is :class:`memf.training.reference_fit.ReferenceFitter`: this module imports
neither the tuning nor the job, so a model bundle can load a reference without them.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import skops.io as sio
from sklearn.compose import ColumnTransformer
from sklearn.decomposition import PCA, IncrementalPCA
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.linear_model import Ridge
from sklearn.preprocessing import StandardScaler

from memf.core.io import DataError, atomic_path
from memf.core.registry import Registry
from memf.data.folds import SPLITS
from memf.training.matrix import (
    COUNT_KEYS,
    POOLED_BLOCKS,
    REFERENCE_MODEL_FILE,
    is_reducible,
    pooled_widths,
    reduced_widths,
    reference_options,
)

#: Streams per padded block read and pooled at once (memory only: pooling is row by row, so results do not depend on
#: it).
BLOCK_STREAMS = 128
#: Training streams per IncrementalPCA batch (part of the result: the reduction depends on how the rows are batched).
PCA_BATCH = 1024
#: Rows transformed or predicted at once (memory only).
CHUNK_ROWS = 8192
#: Types a reference model file may hold beyond skops' defaults (scikit-learn estimators, NumPy, builtins); listed
#: one by one, never ``trusted=True``.
TRUSTED_TYPES: tuple[str, ...] = ("sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",)
FILE_FORMAT = "memf-reference/1"


class FoldBlocks(Protocol):
    """What a reference model reads of a fold: its splits, its targets and its padded streams by blocks."""

    rows: dict[str, np.ndarray]  # split -> stream indices

    def __len__(self) -> int:
        """S: the streams of the store (a fold may use fewer: the fixed protocol's unused pool)."""

    def target(self, split: str) -> np.ndarray:
        """[n] float64 targets of one split, in the order of ``rows[split]``."""

    def blocks(self, rows: np.ndarray, size: int) -> Iterable[Mapping[str, np.ndarray]]:
        """The padded arrays (batch key -> [b, ...], numeric inputs standardised) of streams ``rows`` in that order,
        at most ``size`` streams a block."""


# --- pooling -------------------------------------------------------------------------------------------------------


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


def pool_block(block: Mapping[str, np.ndarray], pooling: str) -> np.ndarray:
    """[b, F] pooled features of a block of b padded streams, computed in float64 and returned in float32; the
    columns are the blocks of :func:`memf.training.matrix.pooled_widths`, in order."""
    parts: list[np.ndarray] = []
    for key, mask_key in POOLED_BLOCKS:
        x = np.asarray(block[key], dtype=np.float64)
        if pooling == "set":
            x = _set_stats(x, block[mask_key]) if mask_key is not None else x.reshape(len(x), -1)
        else:
            if mask_key is not None:
                x = _masked_mean(x, block[mask_key])  # items or clips -> one vector per stream
            if not key.endswith("/numeric") and x.ndim == 3:
                x = x.mean(axis=1)  # fields -> one vector per modality: [S, L, D] -> [S, D]
        parts.append(x)
    if pooling == "set":
        parts.append(np.stack([block[k].sum(axis=1) for k in COUNT_KEYS], axis=1).astype(np.float64))
    return np.concatenate(parts, axis=1).astype(np.float32)


def _dims(block: Mapping[str, np.ndarray]) -> dict[str, tuple[int, ...]]:
    return {key: tuple(arr.shape[1:]) for key, arr in block.items()}


# --- the model input: pooled, standardised, reduced ----------------------------------------------------------------


@dataclass
class FeatureTransform:
    """Padded blocks -> model features: the pooling, the standardisation and, for wide features, the reduction of
    each pooled block (``reducers[i]`` None: block i passes as it is)."""

    pooling: str
    widths: list[tuple[str, int]]  # (name, width) of the pooled blocks
    scaler: StandardScaler
    reducers: list[IncrementalPCA | None] | None = None

    @property
    def out_widths(self) -> list[tuple[str, int]]:
        """(name, width) of the blocks of the model features."""
        if self.reducers is None:
            return list(self.widths)
        return [(name, int(r.n_components_) if r is not None else w)
                for (name, w), r in zip(self.widths, self.reducers)]

    def standardised(self, block: Mapping[str, np.ndarray]) -> np.ndarray:
        """[b, F] float32 pooled features of a block, standardised."""
        return self.scaler.transform(pool_block(block, self.pooling))

    def reduce(self, x: np.ndarray) -> np.ndarray:
        """[b, F] standardised features -> [b, F_model] float32."""
        if self.reducers is None:
            return x
        parts, start = [], 0
        for (_, width), reducer in zip(self.widths, self.reducers):
            cols = x[:, start:start + width]
            start += width
            parts.append(cols if reducer is None else reducer.transform(cols).astype(np.float32))
        return np.concatenate(parts, axis=1)

    def apply(self, block: Mapping[str, np.ndarray]) -> np.ndarray:
        return self.reduce(self.standardised(block))


@dataclass
class Features:
    """The model features of every stream of a fold, rows ordered training part, validation part, test part."""

    x: np.ndarray  # [N, F_model] float32, N = the fold's streams (S, or fewer in the fixed protocol)
    order: np.ndarray  # [N] the store's stream index of each row of x
    n_train: int
    n_val: int
    transform: FeatureTransform
    n_streams: int  # S: the store's streams

    @property
    def train(self) -> np.ndarray:
        return self.x[: self.n_train]

    @property
    def val(self) -> np.ndarray:
        return self.x[self.n_train: self.n_train + self.n_val]

    def in_stream_order(self, per_row: np.ndarray) -> np.ndarray:
        """[N] values per row of x -> [S] values per stream of the store (NaN for a stream outside the fold)."""
        out = np.full(self.n_streams, np.nan, dtype=np.float64)
        out[self.order] = per_row
        return out

    def info(self) -> dict[str, Any]:
        t = self.transform
        return {"features": [[key, width] for key, width in t.widths], "n_features": sum(w for _, w in t.widths),
                "pooling": t.pooling, "reduced": t.reducers is not None, "n_model_features": int(self.x.shape[1])}


def _pooled_matrix(data: FoldBlocks, order: np.ndarray, pooling: str, width: int) -> np.ndarray:
    """[S, F] float32 pooled features of the streams ``order``, block by block."""
    x = np.empty((len(order), width), dtype=np.float32)
    start = 0
    for block in data.blocks(order, BLOCK_STREAMS):
        pooled = pool_block(block, pooling)
        x[start:start + len(pooled)] = pooled
        start += len(pooled)
    return x


def _fit_reduction(data: FoldBlocks, train: np.ndarray, pooling: str, widths: list[tuple[str, int]],
                   components: int) -> FeatureTransform:
    """The scaler (one pass over the training blocks), then an IncrementalPCA per wide block (a second pass, in
    batches of about :data:`PCA_BATCH` streams): nothing of size training streams x pooled width is held."""
    scaler = StandardScaler()
    for block in data.blocks(train, BLOCK_STREAMS):
        scaler.partial_fit(pool_block(block, pooling))
    k = min(components, len(train))
    reducers = [IncrementalPCA(n_components=k) if is_reducible(name) and width > components else None
                for name, width in widths]
    transform = FeatureTransform(pooling, widths, scaler, reducers)
    for batch_rows in np.array_split(train, max(1, len(train) // PCA_BATCH)):
        batch = np.concatenate([transform.standardised(b) for b in data.blocks(batch_rows, BLOCK_STREAMS)])
        start = 0
        for (_, width), reducer in zip(widths, reducers):
            if reducer is not None:
                reducer.partial_fit(batch[:, start:start + width])
            start += width
    return transform


def build_features(data: FoldBlocks, pooling: str, reduce_above: int, components: int) -> Features:
    """Pool, standardise and (when the rule says so) reduce the features of every stream of the fold; every
    transform is fitted on the training part."""
    order = np.concatenate([data.rows[split] for split in SPLITS])
    n_train, n_val = len(data.rows["train"]), len(data.rows["val"])
    widths = pooled_widths(_dims(next(iter(data.blocks(order[:1], 1)))), pooling)
    if reduced_widths(widths, reduce_above, components, n_train) == widths:
        x = _pooled_matrix(data, order, pooling, sum(w for _, w in widths))
        transform = FeatureTransform(pooling, widths, StandardScaler().fit(x[:n_train]))
        for start in range(0, len(x), CHUNK_ROWS):
            x[start:start + CHUNK_ROWS] = transform.scaler.transform(x[start:start + CHUNK_ROWS])
        return Features(x, order, n_train, n_val, transform, len(data))
    transform = _fit_reduction(data, order[:n_train], pooling, widths, components)
    x = np.empty((len(order), sum(w for _, w in transform.out_widths)), dtype=np.float32)
    start = 0
    for block in data.blocks(order, BLOCK_STREAMS):
        reduced = transform.apply(block)
        x[start:start + len(reduced)] = reduced
        start += len(reduced)
    return Features(x, order, n_train, n_val, transform, len(data))


class ReferenceInputs:
    """One fold as the reference models see it; the features of each (pooling, reduction) are built once and kept
    for every tuning trial and seed of the job."""

    def __init__(self, data: FoldBlocks) -> None:
        self.data = data
        self._features: dict[tuple[str, int, int], Features] = {}

    @property
    def n_streams(self) -> int:
        return sum(len(rows) for rows in self.data.rows.values())

    def target(self, split: str) -> np.ndarray:
        return self.data.target(split)

    def features(self, opts: Mapping[str, Any]) -> Features:
        key = (str(opts["pooling"]), int(opts["reduce_above"]), int(opts["components"]))
        if key not in self._features:
            self._features[key] = build_features(self.data, *key)
        return self._features[key]


# --- the fitted model ----------------------------------------------------------------------------------------------


@dataclass
class ReferenceModel:
    """A fitted reference model: everything from standardised padded blocks to the prediction."""

    name: str
    constant: float | None = None  # mean: the training part's mean target
    transform: FeatureTransform | None = None
    block_pca: ColumnTransformer | None = None  # hgb's ``pca`` option: PCA per block of the model features
    estimator: Ridge | HistGradientBoostingRegressor | None = None
    iterations: int | None = None  # hgb: the boosting iterations kept

    def predict_features(self, x: np.ndarray) -> np.ndarray:
        """[n, F_model] model features -> [n] predictions, :data:`CHUNK_ROWS` rows at a time."""
        assert self.estimator is not None
        out = np.empty(len(x), dtype=np.float64)
        for start in range(0, len(x), CHUNK_ROWS):
            chunk = x[start:start + CHUNK_ROWS].astype(np.float64)  # float64 products: the same for any chunking
            if self.block_pca is not None:
                chunk = self.block_pca.transform(chunk)
            if self.iterations is not None:
                staged = self.estimator.staged_predict(chunk)
                out[start:start + len(chunk)] = next(itertools.islice(staged, self.iterations - 1, None))
            else:
                out[start:start + len(chunk)] = self.estimator.predict(chunk)
        return out

    def predict(self, blocks: Iterable[Mapping[str, np.ndarray]]) -> np.ndarray:
        """[S] predictions of the streams of ``blocks`` (padded arrays with standardised numeric inputs, as
        :meth:`memf.training.prepare.FoldData.blocks` yields them)."""
        parts = []
        for block in blocks:
            if self.constant is not None:
                parts.append(np.full(len(block["commodity/mask"]), self.constant))
            else:
                assert self.transform is not None
                parts.append(self.predict_features(self.transform.apply(block)))
        return np.concatenate(parts) if parts else np.empty(0)


@dataclass
class FittedReference:
    pred: np.ndarray  # [S] every stream of the fold, in the fold's stream order
    info: dict[str, Any]  # JSON-able record of what was fitted (the choices made)
    model: ReferenceModel


#: A reference model's fit: (fold, options over their defaults, seed) -> predictions, record and fitted model. The
#: torch-free catalog :data:`memf.training.matrix.REFERENCE_OPTIONS` lists the same names.
ReferenceFit = Callable[[ReferenceInputs, dict[str, Any], int], FittedReference]
REFERENCES: Registry[ReferenceFit] = Registry("reference model")


@REFERENCES.register("mean")
def fit_mean(inputs: ReferenceInputs, opts: dict[str, Any], seed: int) -> FittedReference:
    """The training part's mean target, for every stream."""
    value = float(inputs.target("train").mean())
    return FittedReference(np.full(inputs.n_streams, value), {"mean": value}, ReferenceModel("mean", constant=value))


@REFERENCES.register("ridge")
def fit_ridge(inputs: ReferenceInputs, opts: dict[str, Any], seed: int) -> FittedReference:
    """Ridge regression on the standardised (and, when wide, reduced) pooled features."""
    features = inputs.features(opts)
    # Solved in float64 (a float32 solve is ill-conditioned at small alphas): the one copy of the training part.
    estimator = Ridge(alpha=float(opts["alpha"]), copy_X=False).fit(features.train.astype(np.float64),
                                                                     inputs.target("train"))
    model = ReferenceModel("ridge", transform=features.transform, estimator=estimator)
    info = {**features.info(), "alpha": float(opts["alpha"]), "intercept": float(estimator.intercept_)}
    return FittedReference(features.in_stream_order(model.predict_features(features.x)), info, model)


def _block_pca(blocks: list[tuple[str, int]], components: int, n_train: int) -> ColumnTransformer:
    """Per block PCA to ``components`` (capped by the block's width and the training rows); numeric and counts pass."""
    parts, start = [], 0
    for name, width in blocks:
        cols = list(range(start, start + width))
        start += width
        if not is_reducible(name):
            parts.append((name, "passthrough", cols))
        else:
            parts.append((name, PCA(n_components=min(components, width, n_train), svd_solver="full"), cols))
    return ColumnTransformer(parts)


@REFERENCES.register("hgb")
def fit_hgb(inputs: ReferenceInputs, opts: dict[str, Any], seed: int) -> FittedReference:
    """Gradient boosting on the standardised (optionally PCA-reduced) pooled features, for ``max_iter`` iterations;
    the number of iterations with the lowest validation MSE (one staged pass) is kept."""
    features = inputs.features(opts)
    train, val, block_pca = features.train, features.val, None
    if int(opts["pca"]) > 0:  # fitted in float64 on the standardised training part, as the recipe's PCA
        block_pca = _block_pca(features.transform.out_widths, int(opts["pca"]), features.n_train)
        train = block_pca.fit_transform(train.astype(np.float64))
        val = block_pca.transform(val.astype(np.float64))
    y_val = inputs.target("val")
    max_iter = int(opts["max_iter"])
    hgb = {k: opts[k] for k in ("learning_rate", "max_leaf_nodes", "min_samples_leaf", "l2_regularization",
                                "max_bins", "max_features")}
    for key in ("max_leaf_nodes", "min_samples_leaf", "max_bins"):
        hgb[key] = int(hgb[key])
    estimator = HistGradientBoostingRegressor(max_iter=max_iter, early_stopping=False, random_state=seed, **hgb)
    estimator.fit(train, inputs.target("train"))
    # The validation MSE after every iteration, in one staged pass; the best number of iterations is kept.
    val_mse = np.array([np.mean((p - y_val) ** 2) for p in estimator.staged_predict(val)])
    best = int(np.argmin(val_mse)) + 1
    model = ReferenceModel("hgb", transform=features.transform, block_pca=block_pca, estimator=estimator,
                           iterations=best)
    info = {**features.info(), **hgb, "pca": int(opts["pca"]), "max_iter": max_iter, "iterations": best,
            "val_mse": float(val_mse[best - 1])}
    if block_pca is not None:
        info["n_model_features"] = int(train.shape[1])
    return FittedReference(features.in_stream_order(model.predict_features(features.x)), info, model)


def fit_reference(name: str, data: FoldBlocks | ReferenceInputs, options: dict[str, Any], seed: int) -> FittedReference:
    """Fit reference model ``name`` on the fold's training part (validation for hgb's length); predict every stream.

    ``data`` is a fold (:class:`FoldBlocks`) or its :class:`ReferenceInputs` (features kept between calls).
    """
    opts = reference_options(name, options)  # the catalog's checks first: an unknown name or option in one line
    inputs = data if isinstance(data, ReferenceInputs) else ReferenceInputs(data)
    return REFERENCES.lookup(name)(inputs, opts, seed)


# --- saving and loading: skops, with an explicit list of trusted types ---------------------------------------------


def _parts(model: ReferenceModel) -> dict[str, Any]:
    t = model.transform
    return {
        "name": model.name, "constant": model.constant, "pooling": t.pooling if t else None,
        "widths": [[name, width] for name, width in t.widths] if t else None, "scaler": t.scaler if t else None,
        "reducers": t.reducers if t else None, "block_pca": model.block_pca, "estimator": model.estimator,
        "iterations": model.iterations,
    }


def _expect(where: str, what: str, value: Any, types: tuple[type, ...]) -> None:
    if not isinstance(value, types):
        raise DataError(f"{where}: {what} is a {type(value).__name__}, expected "
                        f"{' or '.join(t.__name__ for t in types)}")


def _model(parts: Mapping[str, Any], where: str) -> ReferenceModel:
    """The :class:`ReferenceModel` of one seed's saved parts, every part checked to be what a reference holds."""
    if parts.get("name") not in REFERENCES:
        raise DataError(f"{where}: reference model {parts.get('name')!r}, expected one of {', '.join(REFERENCES)}")
    if parts["name"] == "mean":
        _expect(where, "the mean", parts["constant"], (float,))
        return ReferenceModel("mean", constant=float(parts["constant"]))
    _expect(where, "the scaler", parts["scaler"], (StandardScaler,))
    _expect(where, "the estimator", parts["estimator"], (Ridge, HistGradientBoostingRegressor))
    _expect(where, "the block PCA", parts["block_pca"], (ColumnTransformer, type(None)))
    for reducer in parts["reducers"] or []:
        _expect(where, "a reduction", reducer, (IncrementalPCA, type(None)))
    widths = [(str(name), int(width)) for name, width in parts["widths"]]
    transform = FeatureTransform(str(parts["pooling"]), widths, parts["scaler"], parts["reducers"])
    return ReferenceModel(parts["name"], transform=transform, block_pca=parts["block_pca"],
                          estimator=parts["estimator"], iterations=parts["iterations"])


def dumps_model(model: ReferenceModel) -> bytes:
    """One seed's fitted model as skops bytes."""
    return sio.dumps(_parts(model))


def _loads(content: bytes, where: str) -> Any:
    """skops bytes -> object, refusing any type outside skops' defaults and :data:`TRUSTED_TYPES`."""
    untrusted = sorted(set(sio.get_untrusted_types(data=content)) - set(TRUSTED_TYPES))
    if untrusted:
        raise DataError(f"{where}: untrusted types {untrusted}; a reference model holds scikit-learn scalers, PCA, "
                        f"ridge and gradient boosting only (trusted beyond skops' defaults: "
                        f"{', '.join(TRUSTED_TYPES)})")
    return sio.loads(content, trusted=list(TRUSTED_TYPES))


def loads_model(content: bytes, where: str) -> ReferenceModel:
    """The inverse of :func:`dumps_model`."""
    return _model(_loads(content, where), where)


def save_reference(path: str | Path, models: Mapping[int, ReferenceModel]) -> None:
    """Write every seed's fitted model to one skops file, atomically."""
    content = sio.dumps({"format": FILE_FORMAT, "seeds": {str(seed): _parts(m) for seed, m in models.items()}})
    with atomic_path(path) as tmp:
        tmp.write_bytes(content)


def load_reference(run_dir: str | Path) -> dict[int, ReferenceModel]:
    """Seed -> fitted model of a reference run folder (``results/runs/{experiment}/fold{k}``); each predicts padded
    blocks with standardised numeric inputs (model.json's ``numeric_scaler``) through :meth:`ReferenceModel.predict`.

    Raises:
        DataError: the file holds a type outside the trusted ones, or is not a reference model file.
    """
    path = Path(run_dir) / REFERENCE_MODEL_FILE
    saved = _loads(path.read_bytes(), str(path))
    if not isinstance(saved, dict) or saved.get("format") != FILE_FORMAT:
        raise DataError(f"{path}: not a reference model file (expected format {FILE_FORMAT})")
    return {int(seed): _model(parts, f"{path} seed {seed}") for seed, parts in saved["seeds"].items()}
