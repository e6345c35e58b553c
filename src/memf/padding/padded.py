"""The model input in memory (layout in docs/architecture.md, "Padded tensor file"): a batch padded to its own longest
item and clip lists (:class:`Padded` holds one), and the ragged form the padded store keeps on disk
(:class:`RaggedBlock`: every stream's items and clips back to back, with offsets, as CSR).

Arrays are keyed by the batch keys the models read (``"anchor/text"``, ``"commodity/mask"``, ...); masks are True at
real items and clips, and padded positions hold zeros. Nothing here is fitted on any split: numeric fields hold their
policy transform (stage 1), and every standardisation is fitted per fold in stage 2 (:mod:`memf.training.prepare`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from memf.core.io import DataError
from memf.data.folds import FIXED_ROLE

#: Batch key -> rank of one stream's array (without the stream dimension).
BATCH_KEYS: dict[str, int] = {
    "anchor/text": 2, "anchor/image": 2, "anchor/numeric": 1,
    "room/text": 2, "room/image": 2, "room/numeric": 1,
    "commodity/text": 3, "commodity/image": 3, "commodity/numeric": 2, "commodity/mask": 1,
    "video/x": 2, "video/mask": 1,
    "audio/x": 2, "audio/mask": 1,
}
MASK_KEYS: tuple[str, ...] = ("commodity/mask", "video/mask", "audio/mask")
#: Set entity -> (its mask, the batch keys of its objects): a stream's items and its clips of each kind.
SETS: dict[str, tuple[str, tuple[str, ...]]] = {
    "commodity": ("commodity/mask", ("commodity/text", "commodity/image", "commodity/numeric")),
    "video": ("video/mask", ("video/x",)),
    "audio": ("audio/mask", ("audio/x",)),
}
#: One array per stream: the anchor's and the room's fields.
FIXED_KEYS: tuple[str, ...] = tuple(k for k in BATCH_KEYS if k.partition("/")[0] in ("anchor", "room"))
#: Object keys of the sets (one row per item or clip in the ragged form).
OBJECT_KEYS: tuple[str, ...] = tuple(k for _, keys in SETS.values() for k in keys)
#: Keys holding feature vectors: stored in ``padding.dtype``; numeric fields and masks keep their own types.
VECTOR_KEYS: tuple[str, ...] = tuple(k for k in BATCH_KEYS if k.rpartition("/")[2] in ("text", "image", "x"))


@dataclass
class Padded:
    """Streams of one feature set as dense NumPy arrays in stream order, every set padded to one length."""

    stream_id: np.ndarray  # [S] str
    fold: np.ndarray  # [S] int8 fold id, or role in the fixed protocol (memf.data.folds); -1 in a dataset to predict
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
                raise DataError(f"padded tensors: '{key}' has shape {arr.shape}, expected {BATCH_KEYS[key] + 1} dims "
                                f"with {n} streams")
        if self.fold.shape != (n,) or self.target.shape != (n,):
            raise DataError(f"padded tensors: fold {self.fold.shape} / target {self.target.shape}, expected ({n},)")
        ids = len(FIXED_ROLE) if self.attrs.get("split", {}).get("mode") == "fixed" else self.folds  # role or fold
        if self.folds and (self.fold.min(initial=0) < 0 or self.fold.max(initial=0) >= ids):
            raise DataError(f"padded tensors: fold ids outside 0..{ids - 1}")

    def __len__(self) -> int:
        return len(self.stream_id)

    def dims(self) -> dict[str, tuple[int, ...]]:
        """Per-stream shape of every batch key (what ``memf.models.build_model`` takes)."""
        return {key: tuple(arr.shape[1:]) for key, arr in self.arrays.items()}


def _ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The concatenation of ``arange(s, s + n)`` for every (s, n) of ``starts`` and ``lengths`` [B] -> [sum(n)]."""
    lengths = np.asarray(lengths, np.int64)
    ends = np.cumsum(lengths)
    total = int(ends[-1]) if len(ends) else 0
    return np.repeat(np.asarray(starts, np.int64) - (ends - lengths), lengths) + np.arange(total)


@dataclass
class RaggedBlock:
    """Consecutive or selected streams in the store's ragged layout: one row per stream for the anchor and room
    arrays, one row per item or clip for the sets, with per-set offsets (stream ``i`` owns object rows
    ``offsets[i]:offsets[i + 1]``)."""

    stream_id: np.ndarray  # [b] str
    fold: np.ndarray  # [b] int8
    target: np.ndarray  # [b] float32
    fixed: dict[str, np.ndarray]  # anchor/room key -> [b, ...]
    offsets: dict[str, np.ndarray]  # set entity -> [b + 1] int64, starting at 0
    objects: dict[str, np.ndarray]  # object key -> [n_objects of its set, ...]

    def __len__(self) -> int:
        return len(self.stream_id)

    @property
    def nbytes(self) -> int:
        arrays = (*self.fixed.values(), *self.offsets.values(), *self.objects.values(), self.fold, self.target)
        return sum(a.nbytes for a in arrays) + 64 * len(self.stream_id)

    def counts(self, entity: str) -> np.ndarray:
        """[b] number of items (``commodity``) or clips (``video``, ``audio``) of each stream."""
        return np.diff(self.offsets[entity])

    def take(self, rows: np.ndarray | Sequence[int]) -> RaggedBlock:
        """The streams at positions ``rows`` of this block, in that order (repeats allowed)."""
        rows = np.asarray(rows, np.int64)
        offsets, objects = {}, {}
        for entity, (_, keys) in SETS.items():
            off = self.offsets[entity]
            lengths = off[rows + 1] - off[rows]
            index = _ranges(off[rows], lengths)
            offsets[entity] = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
            objects.update({key: self.objects[key][index] for key in keys if key in self.objects})
        return RaggedBlock(self.stream_id[rows], self.fold[rows], self.target[rows],
                           {k: v[rows] for k, v in self.fixed.items()}, offsets, objects)

    @classmethod
    def concat(cls, blocks: Sequence[RaggedBlock]) -> RaggedBlock:
        """The streams of ``blocks`` one after the other."""
        if len(blocks) == 1:
            return blocks[0]
        offsets = {}
        for entity in SETS:
            parts = [b.offsets[entity][1:] + base for b, base in
                     zip(blocks, np.cumsum([0] + [int(b.offsets[entity][-1]) for b in blocks[:-1]]), strict=True)]
            offsets[entity] = np.concatenate([[0], *parts]).astype(np.int64)
        first = blocks[0]
        return cls(np.concatenate([b.stream_id for b in blocks]), np.concatenate([b.fold for b in blocks]),
                   np.concatenate([b.target for b in blocks]),
                   {k: np.concatenate([b.fixed[k] for b in blocks]) for k in first.fixed}, offsets,
                   {k: np.concatenate([b.objects[k] for b in blocks]) for k in first.objects})

    def padded(self) -> dict[str, np.ndarray]:
        """The batch dict of these streams: every set padded to this block's own longest list (M, C; at least 1),
        float32 arrays (whatever the stored precision), bool masks True at real objects, zeros elsewhere."""
        n = len(self)
        out = {key: np.asarray(value, np.float32) for key, value in self.fixed.items()}
        for entity, (mask_key, keys) in SETS.items():
            off = self.offsets[entity]
            lengths = np.diff(off)
            width = max(1, int(lengths.max(initial=0)))  # at least 1: a set without objects is one padded slot
            row = np.repeat(np.arange(n), lengths)
            slot = np.arange(int(off[-1])) - np.repeat(off[:-1], lengths)
            mask = np.zeros((n, width), bool)  # [B, M]
            mask[row, slot] = True
            out[mask_key] = mask
            for key in keys:
                if key not in self.objects:
                    continue
                obj = self.objects[key]  # [n_objects, ...]
                dense = np.zeros((n, width, *obj.shape[1:]), np.float32)  # [B, M, ...]
                dense[row, slot] = obj
                out[key] = dense
        return out

    @classmethod
    def from_padded(cls, padded: Padded, rows: slice | np.ndarray = slice(None)) -> RaggedBlock:
        """The streams ``rows`` of dense padded arrays, made ragged: the objects where the masks are True."""
        arrays = padded.arrays
        offsets, objects = {}, {}
        for entity, (mask_key, keys) in SETS.items():
            mask = arrays[mask_key][rows]  # [b, M]
            offsets[entity] = np.concatenate([[0], np.cumsum(mask.sum(axis=1))]).astype(np.int64)
            objects.update({key: arrays[key][rows][mask] for key in keys})
        return cls(np.asarray(padded.stream_id[rows], dtype=object), padded.fold[rows], padded.target[rows],
                   {key: arrays[key][rows] for key in FIXED_KEYS}, offsets, objects)


def check_block_layout(block: RaggedBlock, where: str) -> None:
    """Every batch key of the layout present, one row per stream or object (raises DataError naming ``where``)."""
    n = len(block)
    missing = sorted((set(FIXED_KEYS) - set(block.fixed)) | (set(OBJECT_KEYS) - set(block.objects))
                     | (set(SETS) - set(block.offsets)))
    if missing:
        raise DataError(f"{where}: missing arrays {missing}")
    for key, arr in block.fixed.items():
        if arr.ndim != BATCH_KEYS[key] + 1 or arr.shape[0] != n:
            raise DataError(f"{where}: '{key}' has shape {arr.shape}, expected {BATCH_KEYS[key] + 1} dims with {n} "
                            "streams")
    for entity, (_, keys) in SETS.items():
        off = block.offsets[entity]
        if off.shape != (n + 1,) or off[0] != 0 or (np.diff(off) < 0).any():
            raise DataError(f"{where}: '{entity}' offsets {off.shape} are not {n + 1} non-decreasing values from 0")
        for key in keys:
            arr = block.objects[key]
            if arr.ndim != BATCH_KEYS[key] or arr.shape[0] != off[-1]:
                raise DataError(f"{where}: '{key}' has shape {arr.shape}, expected {BATCH_KEYS[key]} dims with "
                                f"{int(off[-1])} rows")

