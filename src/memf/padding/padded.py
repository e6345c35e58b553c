"""The padded tensor file: stage 2's model-ready input (layout in docs/architecture.md).

One HDF5 file per feature set holds every stream of the validated dataset with its cross-validation fold id
(:mod:`memf.data.folds`); a run of fold ``k`` takes its train, validation and test rows from those ids. Arrays are keyed
by the batch keys the models read (``"anchor/text"``, ``"commodity/mask"``, ...); masks are True at real items and
clips, and padded positions hold zeros. Nothing in the file is fitted on any split: numeric fields hold their policy
transform (stage 1), and every standardisation is fitted per fold in stage 2 (:mod:`memf.training.prepare`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from memf.data.folds import SPLIT_CODE, split_of
from memf.core.io import DataError, atomic_path

#: Batch key -> rank of one stream's array (without the stream dimension).
BATCH_KEYS: dict[str, int] = {
    "anchor/text": 2, "anchor/image": 2, "anchor/numeric": 1,
    "room/text": 2, "room/image": 2, "room/numeric": 1,
    "commodity/text": 3, "commodity/image": 3, "commodity/numeric": 2, "commodity/mask": 1,
    "video/x": 2, "video/mask": 1,
    "audio/x": 2, "audio/mask": 1,
}
MASK_KEYS: tuple[str, ...] = ("commodity/mask", "video/mask", "audio/mask")


@dataclass
class Padded:
    """All streams of one feature set, as NumPy arrays in stream order."""

    stream_id: np.ndarray  # [S] str
    fold: np.ndarray  # [S] int8 fold id (memf.data.folds); -1 in a dataset to predict (no folds)
    target: np.ndarray  # [S] float32 log(sales + offset); NaN where sales are unknown
    folds: int  # K (0 in a dataset to predict)
    arrays: dict[str, np.ndarray]  # batch key -> [S, ...]
    attrs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.stream_id)
        missing = sorted(set(BATCH_KEYS) - set(self.arrays))
        if missing:
            raise DataError(f"padded tensors: missing arrays {missing}")
        for key, arr in self.arrays.items():
            if key not in BATCH_KEYS:
                raise DataError(f"padded tensors: unknown array '{key}'")
            if arr.ndim != BATCH_KEYS[key] + 1 or arr.shape[0] != n:
                raise DataError(
                    f"padded tensors: '{key}' has shape {arr.shape}, expected {BATCH_KEYS[key] + 1} dims with {n} streams"
                )
        if self.fold.shape != (n,) or self.target.shape != (n,):
            raise DataError(f"padded tensors: fold {self.fold.shape} / target {self.target.shape}, expected ({n},)")
        if self.folds and (self.fold.min(initial=0) < 0 or self.fold.max(initial=0) >= self.folds):
            raise DataError(f"padded tensors: fold ids outside 0..{self.folds - 1}")

    def __len__(self) -> int:
        return len(self.stream_id)

    def split(self, fold: int) -> np.ndarray:
        """[S] int8 split code (memf.data.folds.SPLIT_CODE) of every stream in run fold ``fold``."""
        return split_of(self.fold, fold, self.folds)

    def index(self, split: str, fold: int) -> np.ndarray:
        """Row indices of one split ("train", "val" or "test") of run fold ``fold``."""
        return np.flatnonzero(self.split(fold) == SPLIT_CODE[split])

    def dims(self) -> dict[str, tuple[int, ...]]:
        """Per-stream shape of every batch key (what ``memf.models.build_model`` takes)."""
        return {key: tuple(arr.shape[1:]) for key, arr in self.arrays.items()}

    def tensors(self, rows: np.ndarray | None = None, device: torch.device | str | None = None) -> dict[str, torch.Tensor]:
        """The batch dict for ``rows`` (all streams by default), as tensors on ``device``."""
        sel = slice(None) if rows is None else rows
        return {key: torch.from_numpy(np.ascontiguousarray(arr[sel])).to(device) for key, arr in self.arrays.items()}


def write_padded(path: str | Path, padded: Padded) -> None:
    """Write ``padded`` to one HDF5 file, atomically."""
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as h5:
        h5.create_dataset("stream_id", data=padded.stream_id.astype(object), dtype=h5py.string_dtype("utf-8"))
        h5.create_dataset("fold", data=padded.fold.astype(np.int8))
        h5.attrs["folds"] = int(padded.folds)
        h5.create_dataset("target", data=padded.target.astype(np.float32))
        for key, arr in padded.arrays.items():
            dtype = bool if key in MASK_KEYS else np.float32
            h5.create_dataset(key, data=arr.astype(dtype), compression="lzf" if arr.size > 4096 else None)
        for name, value in padded.attrs.items():
            h5.attrs[name] = json.dumps(value)


def read_padded(path: str | Path) -> Padded:
    """Read a padded tensor file written by :func:`write_padded`, checking its layout."""
    path = Path(path)
    try:
        with h5py.File(path, "r") as h5:
            stream_id = h5["stream_id"].asstr()[...]
            fold = h5["fold"][...]
            target = h5["target"][...]
            arrays = {key: h5[key][...] for key in BATCH_KEYS if key in h5}
            folds = int(h5.attrs["folds"])
            attrs = {name: json.loads(value) for name, value in h5.attrs.items() if name != "folds"}
    except (OSError, KeyError) as exc:
        raise DataError(f"{path}: not a padded tensor file ({exc})") from exc
    try:
        return Padded(stream_id=stream_id, fold=fold, target=target, folds=folds, arrays=arrays, attrs=attrs)
    except DataError as exc:
        raise DataError(f"{path}: {exc}") from exc
