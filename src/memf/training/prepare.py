"""One fold's model input: the padded streams split into train / validation / test, with every fitted transform
fitted on that fold's training part only.

Fitted here (and nowhere before): the standardisation of each numeric field (mean and sd over the training streams;
commodity fields over the real items of the training streams; a field constant on the training part gets sd 1).
The target's standardisation is the training loop's (:mod:`memf.training.loop`). The statistics are JSON-able, so a
model bundle carries them to new data (they are never refitted there).
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from memf.core.io import DataError
from memf.data.folds import SPLITS
from memf.padding.padded import Padded

#: Numeric batch keys and the mask that tells their real rows (None: one value per stream).
NUMERIC_KEYS: dict[str, str | None] = {"anchor/numeric": None, "room/numeric": None, "commodity/numeric": "commodity/mask"}


@dataclass(frozen=True)
class NumericScaler:
    """Per-field mean and sd of the numeric inputs: batch key -> ([L] mean, [L] sd)."""

    stats: dict[str, tuple[np.ndarray, np.ndarray]]

    @classmethod
    def fit(cls, padded: Padded, rows: np.ndarray) -> NumericScaler:
        """Fit on the streams ``rows`` (a fold's training part)."""
        stats = {}
        for key, mask_key in NUMERIC_KEYS.items():
            x = padded.arrays[key][rows].astype(np.float64)  # [N, L] or [N, M, L]
            if mask_key is not None:
                x = x[padded.arrays[mask_key][rows]]  # real items only: [n_items, L]
            if x.shape[0] == 0:
                raise DataError(f"numeric standardisation: no training values for '{key}'")
            mean, sd = x.mean(axis=0), x.std(axis=0)
            stats[key] = (mean, np.where(sd > 0, sd, 1.0))
        return cls(stats)

    def apply(self, arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """A copy of ``arrays`` with the numeric keys standardised; padded items stay 0."""
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
        return cls({key: (np.asarray(v["mean"], np.float64), np.asarray(v["sd"], np.float64)) for key, v in data.items()})


@dataclass
class FoldData:
    """The padded streams of one feature set as one fold sees them."""

    padded: Padded  # numeric inputs standardised with ``scaler``
    fold: int
    rows: dict[str, np.ndarray]  # split -> row indices into padded
    scaler: NumericScaler

    @functools.cached_property
    def digest(self) -> str:
        """A hash of this fold's data: the ids, the splits, the targets and every (standardised) array; part of
        every run's fingerprint (memf.training.settings.run_fingerprint)."""
        h = hashlib.blake2b(digest_size=16)
        h.update("\n".join(self.padded.stream_id.astype(str)).encode())
        for arr in (self.split_code, self.padded.target, *(self.padded.arrays[k] for k in sorted(self.padded.arrays))):
            h.update(str(arr.shape).encode())
            h.update(np.ascontiguousarray(arr).tobytes())
        return h.hexdigest()

    @property
    def split_code(self) -> np.ndarray:
        """[S] int8 split code of every stream in this fold."""
        return self.padded.split(self.fold)

    def target(self, split: str) -> np.ndarray:
        return self.padded.target[self.rows[split]].astype(np.float64)

    def tensors(self, rows: np.ndarray, device: torch.device | str | None = None) -> dict[str, torch.Tensor]:
        return self.padded.tensors(rows, device)

    def blocks(self, rows: np.ndarray, size: int) -> Iterator[dict[str, np.ndarray]]:
        """The padded arrays (numeric inputs standardised) of the streams ``rows``, in that order, at most ``size``
        streams at a time: the block source the reference models read (memf.training.references.FoldBlocks)."""
        for start in range(0, len(rows), size):
            sel = rows[start:start + size]
            yield {key: arr[sel] for key, arr in self.padded.arrays.items()}


def fold_data(padded: Padded, fold: int) -> FoldData:
    """Split ``padded`` for run fold ``fold`` and standardise its numeric inputs on the fold's training part.

    Raises:
        DataError: the padded file has no folds, or a split has fewer than 2 streams.
    """
    if padded.folds < 2:
        raise DataError(f"padded tensors: {padded.folds} folds; a dataset without folds cannot be trained on")
    rows = {split: padded.index(split, fold) for split in SPLITS}
    for split, idx in rows.items():
        if len(idx) < 2:
            raise DataError(f"fold {fold}: the {split} part has {len(idx)} streams, expected at least 2")
    scaler = NumericScaler.fit(padded, rows["train"])
    scaled = Padded(stream_id=padded.stream_id, fold=padded.fold, target=padded.target, folds=padded.folds,
                    arrays=scaler.apply(padded.arrays), attrs=padded.attrs)
    return FoldData(padded=scaled, fold=fold, rows=rows, scaler=scaler)
