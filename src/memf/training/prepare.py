"""One fold's model input: the padded store split into train / validation / test, with every fitted transform fitted
on that fold's training part only, read a batch at a time (:mod:`memf.padding.batches`).

Fitted here (and nowhere before): the standardisation of each numeric field (mean and sd over the training streams;
commodity fields over the real items of the training streams; a field constant on the training part gets sd 1),
streamed over blocks of the training part. It is applied to every batch as it is read. The target's standardisation
is the training loop's (:mod:`memf.training.loop`). The statistics are JSON-able, so a model bundle carries them to
new data (they are never refitted there).
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from memf.core.io import DataError
from memf.data.folds import SPLITS
from memf.padding.batches import BLOCK_ROWS, DEFAULT_CACHE_MB, BatchReader, BlockCache
from memf.padding.padded import RaggedBlock
from memf.padding.store import PaddedStore

#: Numeric batch keys and the mask that tells their real rows (None: one value per stream).
NUMERIC_KEYS: dict[str, str | None] = {
    "anchor/numeric": None, "room/numeric": None, "commodity/numeric": "commodity/mask",
}


@dataclass
class _Moments:
    """Count, mean and sum of squared deviations of each field, merged block by block (Chan et al.'s pairwise update:
    as exact as a two-pass mean and sd over all rows at once)."""

    n: int = 0
    mean: np.ndarray = field(default_factory=lambda: np.zeros(0))
    m2: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def add(self, x: np.ndarray) -> None:
        # x: [n_b, L] float64
        if len(x) == 0:
            return
        mean_b = x.mean(axis=0)
        m2_b = ((x - mean_b) ** 2).sum(axis=0)
        if self.n == 0:
            self.n, self.mean, self.m2 = len(x), mean_b, m2_b
            return
        total = self.n + len(x)
        delta = mean_b - self.mean
        self.mean = self.mean + delta * len(x) / total
        self.m2 = self.m2 + m2_b + delta**2 * self.n * len(x) / total
        self.n = total


@dataclass(frozen=True)
class NumericScaler:
    """Per-field mean and sd of the numeric inputs: batch key -> ([L] mean, [L] sd)."""

    stats: dict[str, tuple[np.ndarray, np.ndarray]]

    @classmethod
    def fit(cls, blocks: Iterable[RaggedBlock]) -> NumericScaler:
        """Fit on the streams of ``blocks`` (a fold's training part, block by block): the anchor's and room's fields
        over the streams, the commodity fields over the real items."""
        moments = {key: _Moments() for key in NUMERIC_KEYS}
        for block in blocks:
            for key, mask_key in NUMERIC_KEYS.items():
                x = block.objects[key] if mask_key is not None else block.fixed[key]  # [n, L]: streams or real items
                moments[key].add(x.astype(np.float64))
        stats = {}
        for key, m in moments.items():
            if m.n == 0:
                raise DataError(f"numeric standardisation: no training values for '{key}'")
            sd = np.sqrt(m.m2 / m.n)
            stats[key] = (m.mean, np.where(sd > 0, sd, 1.0))
        return cls(stats)

    def apply(self, arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """A copy of the padded batch ``arrays`` with the numeric keys standardised; padded items stay 0."""
        out = dict(arrays)
        for key, (mean, sd) in self.stats.items():
            z = ((arrays[key] - mean) / sd).astype(np.float32)
            mask_key = NUMERIC_KEYS[key]
            if mask_key is not None:
                z = z * arrays[mask_key][..., None]
            out[key] = z
        return out

    def to_json(self) -> dict[str, Any]:
        return {key: {"mean": mean.tolist(), "sd": sd.tolist()} for key, (mean, sd) in self.stats.items()}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> NumericScaler:
        return cls({key: (np.asarray(v["mean"], np.float64), np.asarray(v["sd"], np.float64))
                    for key, v in data.items()})


@dataclass
class FoldData:
    """The padded store of one feature set as one fold sees it: its rows per split and the numeric standardisation;
    the arrays stay in the file and are read a batch at a time."""

    store: PaddedStore
    fold: int
    rows: dict[str, np.ndarray]  # split -> ascending row indices into the store
    scaler: NumericScaler
    cache: BlockCache

    @functools.cached_property
    def digest(self) -> str:
        """A hash of this fold's data: the store file (hashed as a stream of bytes) and the fold's split; part of
        every run's fingerprint (memf.training.settings.run_fingerprint)."""
        h = hashlib.blake2b(digest_size=16)
        h.update(self.store.digest().encode())
        h.update(f"fold {self.fold}".encode())
        h.update(np.ascontiguousarray(self.split_code).tobytes())
        return h.hexdigest()

    def __len__(self) -> int:
        return len(self.store)

    @property
    def stream_id(self) -> np.ndarray:
        return self.store.stream_id

    @property
    def split_code(self) -> np.ndarray:
        """[S] int8 split code of every stream in this fold."""
        return self.store.split(self.fold)

    @property
    def members(self) -> np.ndarray:
        """Ascending row indices of the fold's streams: every stream in K-fold, the training subset, validation and
        test sets in the fixed protocol."""
        return np.sort(np.concatenate(list(self.rows.values())))

    def dims(self) -> dict[str, tuple[int, ...]]:
        return self.store.dims()

    def target(self, split: str) -> np.ndarray:
        return self.store.target[self.rows[split]].astype(np.float64)

    def reader(self, rows: np.ndarray, block_rows: int) -> BatchReader:
        """Standardised padded batches of the streams ``rows`` (ascending) read in blocks of ``block_rows`` of them,
        through the fold's cache."""
        return BatchReader(self.store, rows, block_rows=block_rows, cache=self.cache, transform=self.scaler.apply)

    def batches(self, rows: np.ndarray, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
        """Standardised padded batches of ``batch_size`` consecutive streams of ``rows`` (a block each), each padded
        to its own longest lists."""
        for _, arrays in self.reader(rows, batch_size).batches(batch_size):
            yield arrays

    def arrays(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        """The streams ``rows`` as one standardised padded batch (a small selection)."""
        return self.scaler.apply(self.store.read(np.asarray(rows)).padded())

    def blocks(self, rows: np.ndarray, size: int) -> Iterator[dict[str, np.ndarray]]:
        """The padded arrays (numeric inputs standardised) of the streams ``rows``, in that order, at most ``size``
        streams at a time, each block padded to its own longest lists: the block source the reference models read
        (memf.training.references.FoldBlocks)."""
        rows = np.asarray(rows, np.int64)
        for start in range(0, len(rows), size):
            sel = rows[start:start + size]
            ascending = np.argsort(sel, kind="stable")
            block = self.store.read(sel[ascending]).take(np.argsort(ascending, kind="stable"))
            yield self.scaler.apply(block.padded())


def fold_data(store: PaddedStore, fold: int, cache_mb: float = DEFAULT_CACHE_MB) -> FoldData:
    """Split ``store`` for run fold ``fold`` and fit the numeric standardisation on the fold's training part, reading
    it block by block (numeric fields only).

    Args:
        cache_mb: megabytes of blocks kept in memory between reads (``train.cache_mb``; speed only).

    Raises:
        DataError: a K-fold store has fewer than 2 folds (a dataset to predict has none), or a split has fewer than 2
            streams. A fixed-protocol store may have a single run fold (one training size, one replicate).
    """
    if not store.plan.fixed and store.folds < 2:
        raise DataError(f"padded store: {store.folds} folds; a dataset without folds cannot be trained on")
    rows = {split: store.index(split, fold) for split in SPLITS}
    for split, idx in rows.items():
        if len(idx) < 2:
            raise DataError(f"fold {fold}: the {split} part has {len(idx)} streams, expected at least 2")
    train = rows["train"]
    blocks = (store.read(train[i : i + BLOCK_ROWS], NUMERIC_KEYS) for i in range(0, len(train), BLOCK_ROWS))
    return FoldData(store=store, fold=fold, rows=rows, scaler=NumericScaler.fit(blocks), cache=BlockCache(cache_mb))
