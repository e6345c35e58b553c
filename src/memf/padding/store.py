"""The padded store: stage 2's model-ready input, one HDF5 file per feature set (layout in docs/architecture.md,
"Padded tensor file").

Every stream of the validated dataset with its cross-validation fold id (:mod:`memf.data.folds`), ordered by
stream_id: per-stream datasets (``stream_id``, ``fold``, ``target``, the anchor's and the room's arrays) with one row
per stream, and ragged datasets for the sets: the items of all streams back to back (``commodity/text`` [N_items, L, D],
...) with ``commodity/offsets`` [S + 1] (stream ``i`` owns rows ``offsets[i]:offsets[i + 1]``), the same for video and
audio clips. Disk and memory follow the real number of items and clips; a batch is padded to its own longest lists
when it is read (:meth:`memf.padding.padded.RaggedBlock.padded`). Every dataset is chunked along its row axis and
written block by block (:class:`StoreWriter`), so neither writing nor reading holds all streams.

Feature vectors are stored in ``padding.dtype`` (float32 or float16); numeric fields and targets stay float32, and
every batch is float32 when read. The root attribute ``format`` is the layout's version; another one is refused.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from memf.core.io import DataError, atomic_path
from memf.data.folds import SPLIT_CODE, FoldPlan
from memf.padding.padded import (
    BATCH_KEYS,
    FIXED_KEYS,
    OBJECT_KEYS,
    SETS,
    VECTOR_KEYS,
    Padded,
    RaggedBlock,
    check_block_layout,
)

#: The store layout's version (root attribute ``format``); 1 was the dense layout padded to the longest list.
FORMAT = 2
DTYPES: tuple[str, ...] = ("float32", "float16")
#: Bytes per chunk of a dataset (rows of a chunk = this / the bytes of one row).
CHUNK_BYTES = 1 << 20
#: Store rows read at once: a selection of rows is read in contiguous spans of at most this many rows.
READ_ROWS = 128
#: Streams per block when a dense :class:`Padded` is written.
WRITE_ROWS = 256
_STRING = h5py.string_dtype("utf-8")


@dataclass(frozen=True)
class PadReport:
    """What a padding rule wrote: streams kept and dropped, records of what was cut, the longest kept lists."""

    streams: int
    dropped_streams: int
    records: int
    max_items: int
    max_clips: dict[str, int]


def _chunk_rows(rows: int, rest: tuple[int, ...], itemsize: int) -> int:
    """Rows per chunk: about :data:`CHUNK_BYTES`, and no more than the first block's ``rows`` (a small store stays
    small: HDF5 allocates whole chunks)."""
    return int(max(1, min(rows, CHUNK_BYTES // max(1, int(np.prod(rest)) * itemsize))))


class StoreWriter:
    """Appends :class:`RaggedBlock` s to an open HDF5 file in the store layout; :meth:`finish` writes the attributes.

    Datasets are created from the first block's shapes (later blocks must agree) and grow along their row axis.
    """

    def __init__(self, h5: h5py.File, dtype: str = "float32") -> None:
        if dtype not in DTYPES:
            raise ValueError(f"config key 'padding.dtype': {dtype!r}; expected one of {', '.join(DTYPES)}")
        self.h5, self.dtype = h5, dtype
        self.rows = 0
        self.objects = dict.fromkeys(SETS, 0)
        self.longest = dict.fromkeys(SETS, 0)
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.empty_rows: dict[str, int] = {}  # datasets whose rows hold no value: created at finish
        self.datasets: dict[str, h5py.Dataset] = {}  # open for the writer's life: a write fails where it is made

    def _type(self, key: str) -> Any:
        if key == "stream_id":
            return _STRING
        if key == "fold":
            return np.int8
        if key.endswith("/offsets"):
            return np.int64
        return np.dtype(self.dtype) if key in VECTOR_KEYS else np.float32

    def _append(self, key: str, arr: np.ndarray) -> None:
        rest = tuple(arr.shape[1:])
        dtype = self._type(key)
        if key not in self.shapes:
            self.shapes[key] = rest
            if 0 in rest:
                self.empty_rows[key] = 0
            else:
                itemsize = 16 if dtype is _STRING else np.dtype(dtype).itemsize
                self.datasets[key] = self.h5.create_dataset(
                    key, shape=(0, *rest), maxshape=(None, *rest), dtype=dtype,
                    chunks=(_chunk_rows(len(arr), rest, itemsize), *rest), track_times=False)
        elif self.shapes[key] != rest:
            raise DataError(f"padded store: '{key}' rows of shape {rest} after rows of shape {self.shapes[key]}")
        if key in self.empty_rows:
            self.empty_rows[key] += len(arr)
            return
        dataset = self.datasets[key]
        start = dataset.shape[0]
        dataset.resize(start + len(arr), axis=0)
        dataset[start:] = arr if dtype is _STRING else arr.astype(dtype, copy=False)

    def append(self, block: RaggedBlock) -> None:
        """Write the streams of ``block`` after those already written."""
        check_block_layout(block, "padded store block")
        self._append("stream_id", np.asarray(block.stream_id, dtype=object))
        self._append("fold", block.fold)
        self._append("target", block.target)
        for key in FIXED_KEYS:
            self._append(key, block.fixed[key])
        for entity, (_, keys) in SETS.items():
            off = block.offsets[entity]
            self._append(f"{entity}/offsets", off[1:] + self.objects[entity] if self.rows else off)
            self.objects[entity] += int(off[-1])
            self.longest[entity] = max(self.longest[entity], int(np.diff(off).max(initial=0)))
            for key in keys:
                self._append(key, block.objects[key])
        self.rows += len(block)
        self.h5.flush()  # the block is on disk (a full disk fails here, in one OSError)

    def finish(self, folds: int, attrs: Mapping[str, Any]) -> None:
        """Create the datasets without values, then the root attributes: ``format``, ``folds`` (K), and as JSON
        ``dtype``, ``axes`` (the longest item and clip lists, at least 1: the models' set axes) and ``attrs``."""
        for key, n in self.empty_rows.items():
            self.h5.create_dataset(key, shape=(n, *self.shapes[key]), dtype=self._type(key), track_times=False)
        self.h5.attrs["format"] = FORMAT
        self.h5.attrs["folds"] = int(folds)
        axes = {entity: max(1, n) for entity, n in self.longest.items()}
        for name, value in {**attrs, "dtype": self.dtype, "axes": axes}.items():
            self.h5.attrs[name] = json.dumps(value)


def write_padded(path: str | Path, padded: Padded, dtype: str = "float32") -> None:
    """Write the dense ``padded`` as a store, atomically, a block of streams at a time."""
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as h5:
        writer = StoreWriter(h5, dtype)
        for start in range(0, len(padded), WRITE_ROWS):
            writer.append(RaggedBlock.from_padded(padded, slice(start, start + WRITE_ROWS)))
        writer.finish(padded.folds, padded.attrs)


def file_digest(path: str | Path) -> str:
    """blake2b of the file's bytes, read in 1 MiB pieces (never the whole file at once)."""
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as fh:
        for piece in iter(lambda: fh.read(1 << 20), b""):
            h.update(piece)
    return h.hexdigest()


class PaddedStore:
    """A padded store opened for reading: the small per-stream arrays in memory (ids, folds, targets, offsets), the
    feature arrays read on demand, a selection of streams at a time (:meth:`read`).

    Raises:
        DataError: the file is not a readable store, has another ``format``, or its offsets disagree with its rows.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._splits: dict[int, np.ndarray] = {}  # run fold -> split codes
        try:
            self._h5 = h5py.File(self.path, "r")
        except OSError as exc:
            raise DataError(f"{self.path}: not a readable padded store ({exc})") from exc
        try:
            self._load()
        except BaseException:
            self._h5.close()
            raise

    def _load(self) -> None:
        h5 = self._h5
        version = h5.attrs.get("format")
        version = int(version) if isinstance(version, (int, np.integer)) else version
        if version != FORMAT:
            raise DataError(f"{self.path}: padded store format {version!r}, this memf reads format {FORMAT} (ragged "
                            "items and clips); run the pad rule again")
        try:
            self.stream_id = h5["stream_id"].asstr()[...].astype(object)  # [S]
            self.fold = h5["fold"][...]  # [S] int8
            self.target = h5["target"][...]  # [S] float32
            self.offsets = {entity: h5[f"{entity}/offsets"][...] for entity in SETS}  # [S + 1] each
            self.folds = int(h5.attrs["folds"])
            self.attrs = {k: json.loads(v) for k, v in h5.attrs.items() if k not in ("format", "folds")}
            shapes = {key: h5[key].shape for key in (*FIXED_KEYS, *OBJECT_KEYS)}
            self.axes = {entity: int(self.attrs["axes"][entity]) for entity in SETS}
        except (KeyError, OSError, ValueError) as exc:
            raise DataError(f"{self.path}: not a complete padded store ({exc})") from exc
        n = len(self.stream_id)
        for entity, (_, keys) in SETS.items():
            off = self.offsets[entity]
            rows = {shapes[k][0] for k in keys}
            if off.shape != (n + 1,) or off[0] != 0 or rows != {int(off[-1])} or (np.diff(off) < 0).any():
                raise DataError(f"{self.path}: '{entity}' offsets end at {int(off[-1])} for {sorted(rows)} object "
                                f"rows and {n} streams; the store is damaged, run the pad rule again")
        if any(shapes[k][0] != n for k in FIXED_KEYS) or self.fold.shape != (n,) or self.target.shape != (n,):
            raise DataError(f"{self.path}: per-stream datasets disagree on the number of streams ({n})")
        self.shapes = {key: tuple(shape[1:]) for key, shape in shapes.items()}

    def close(self) -> None:
        self._h5.close()

    def __enter__(self) -> PaddedStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __len__(self) -> int:
        return len(self.stream_id)

    @property
    def dtype(self) -> str:
        return str(self.attrs["dtype"])

    def dims(self) -> dict[str, tuple[int, ...]]:
        """Per-stream shape of every batch key (what ``memf.models.build_model`` takes): the item and clip axes are
        the store's longest lists (``axes``), the most any batch of it holds."""
        out = {}
        for key in BATCH_KEYS:
            entity = key.partition("/")[0]
            if key in FIXED_KEYS:
                out[key] = self.shapes[key]
            else:
                out[key] = (self.axes[entity], *self.shapes.get(key, ()))
        return out

    def split(self, fold: int) -> np.ndarray:
        """[S] int8 split code (memf.data.folds.SPLIT_CODE) of every stream in run fold ``fold`` (-1: in none)."""
        if fold not in self._splits:
            self._splits[fold] = self.plan.split(self.fold, fold, self.stream_id)
        return self._splits[fold]

    @functools.cached_property
    def plan(self) -> FoldPlan:
        """The run folds (memf.data.folds.FoldPlan; a store without a ``split`` record is K-fold with ``folds``)."""
        return FoldPlan.from_record(self.attrs.get("split") or {"k": self.folds})

    def index(self, split: str, fold: int) -> np.ndarray:
        """Row indices of one split ("train", "val" or "test") of run fold ``fold``, ascending."""
        return np.flatnonzero(self.split(fold) == SPLIT_CODE[split])

    def row_bytes(self, rows: np.ndarray) -> int:
        """Stored bytes of the streams ``rows``: their per-stream rows and their items' and clips' rows."""
        size = {key: int(np.prod(shape)) * self._h5[key].dtype.itemsize for key, shape in self.shapes.items()}
        total = len(rows) * sum(size[k] for k in FIXED_KEYS)
        for entity, (_, keys) in SETS.items():
            off = self.offsets[entity]
            total += int((off[rows + 1] - off[rows]).sum()) * sum(size[k] for k in keys)
        return total

    def read_range(self, start: int, stop: int, keys: Collection[str] | None = None) -> RaggedBlock:
        """Streams ``start:stop`` (and their items and clips), stored precision; only ``keys`` if given."""
        wanted = set(BATCH_KEYS) if keys is None else set(keys)
        fixed = {key: self._h5[key][start:stop] for key in FIXED_KEYS if key in wanted}
        offsets, objects = {}, {}
        for entity, (_, object_keys) in SETS.items():
            off = self.offsets[entity][start : stop + 1]
            offsets[entity] = off - off[0]
            objects.update({key: self._h5[key][off[0] : off[-1]] for key in object_keys if key in wanted})
        return RaggedBlock(self.stream_id[start:stop], self.fold[start:stop], self.target[start:stop], fixed, offsets,
                           objects)

    def read(self, rows: np.ndarray, keys: Collection[str] | None = None) -> RaggedBlock:
        """The streams ``rows`` (ascending store indices), read in contiguous spans of at most :data:`READ_ROWS`
        rows (h5py's point selection is far slower than a slice) into arrays allocated once."""
        rows = np.asarray(rows, np.int64)
        if len(rows) and (np.diff(rows) <= 0).any():
            raise ValueError("PaddedStore.read: rows must be ascending and unique")
        wanted = set(BATCH_KEYS) if keys is None else set(keys)
        offsets = {e: np.concatenate([[0], np.cumsum(off[rows + 1] - off[rows])]).astype(np.int64)
                   for e, off in self.offsets.items()}
        fixed = {k: np.empty((len(rows), *self.shapes[k]), self._h5[k].dtype) for k in FIXED_KEYS if k in wanted}
        objects = {k: np.empty((int(offsets[e][-1]), *self.shapes[k]), self._h5[k].dtype)
                   for e, (_, object_keys) in SETS.items() for k in object_keys if k in wanted}
        done = 0
        for group in np.split(rows, np.flatnonzero(np.diff((rows - rows[0]) // READ_ROWS)) + 1) if len(rows) else []:
            start, stop = int(group[0]), int(group[-1]) + 1
            span = self.read_range(start, stop, wanted)
            span = span if stop - start == len(group) else span.take(group - start)
            for key, value in span.fixed.items():
                fixed[key][done : done + len(group)] = value
            for entity, (_, object_keys) in SETS.items():
                first = int(offsets[entity][done])
                for key in (k for k in object_keys if k in objects):
                    objects[key][first : first + len(span.objects[key])] = span.objects[key]
            done += len(group)
        return RaggedBlock(self.stream_id[rows], self.fold[rows], self.target[rows], fixed, offsets, objects)

    def digest(self) -> str:
        """A streaming hash of the file (:func:`file_digest`)."""
        return file_digest(self.path)


def read_padded(path: str | Path) -> Padded:
    """Every stream of a store as dense arrays padded to its longest lists: for small stores (tests, a look in a
    notebook); stage 2 reads batches (:mod:`memf.padding.batches`)."""
    with PaddedStore(path) as store:
        block = store.read_range(0, len(store))
        return Padded(stream_id=block.stream_id, fold=block.fold, target=block.target, folds=store.folds,
                      arrays=block.padded(), attrs=store.attrs)
