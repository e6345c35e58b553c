"""What the padding rules read: columns of the validated tables, and feature-store shards a run of streams at a time
(layout in :mod:`memf.features.store`). Both kinds of shard hold their streams in stream_id order, so a shard is read
once, front to back, whatever its size: a field shard (Parquet) in record batches of :data:`FIELD_BATCH_ROWS` rows, a
clip shard (HDF5) by slices of its ragged datasets.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from memf.core.io import DataError
from memf.features.store import META_KEY, field_vectors

#: Rows of a field shard decoded at once (a record batch; Parquet pages are read as they are needed).
FIELD_BATCH_ROWS = 2048
_KEY_COLUMNS = ("stream_id", "entity", "owner_id", "field")


def validated_table(data_dir: str | Path, table: str, columns: Sequence[str]) -> pl.DataFrame:
    """``columns`` of one table of the validated dataset (``streams``, ``items``, ``clips``; memf.data.dataset),
    sorted by stream_id (and position): the ids padding needs, without the rest of each row."""
    frame = pl.read_parquet(Path(data_dir) / f"{table}.parquet", columns=list(columns))
    return frame.sort("stream_id", *(["position"] if "position" in columns else []))


def shard_meta(path: str | Path) -> dict[str, Any]:
    """A shard's extractor metadata (identity, dim, weights id, ...), read without its vectors."""
    path = Path(path)
    try:
        if path.suffix == ".h5":
            with h5py.File(path, "r") as h5:
                return json.loads(h5.attrs[META_KEY])
        return json.loads((pq.read_schema(path).metadata or {})[META_KEY.encode()])
    except (OSError, pa.ArrowException) as exc:
        raise DataError(f"{path}: not a readable feature shard ({exc})") from exc
    except KeyError as exc:
        raise DataError(f"{path}: feature shard without '{META_KEY}' metadata") from exc


@dataclass
class FieldRows:
    """One field modality's vectors of a run of streams, looked up by (stream_id, entity, owner_id, field)."""

    vectors: np.ndarray  # [N, D] (numeric: [N, 1])
    index: dict[tuple[str, str, str, str], int]

    def get(self, stream_id: str, entity: str, owner_id: str, field: str) -> int | None:
        """The row of that field's vector, or None when the store has none."""
        return self.index.get((stream_id, entity, owner_id, field))


class FieldSource:
    """A field shard (text, image, numeric), read front to back: :meth:`take` returns the rows of the next streams.

    Raises:
        DataError: the file is not a readable feature shard, or its rows are not in stream_id order.
    """

    def __init__(self, path: str | Path, modality: str) -> None:
        self.path, self.numeric = Path(path), modality == "numeric"
        self.meta = shard_meta(self.path)
        try:
            self._file = pq.ParquetFile(self.path, buffer_size=1 << 20, pre_buffer=False)
        except (OSError, pa.ArrowException) as exc:
            raise DataError(f"{self.path}: not a readable feature shard ({exc})") from exc
        self.dim = 1 if self.numeric else int(self.meta["dim"])
        columns = [*_KEY_COLUMNS, "value" if self.numeric else "vector"]
        self._batches = self._file.iter_batches(batch_size=FIELD_BATCH_ROWS, columns=columns)
        self._buffer: pl.DataFrame | None = None
        self._done = False

    def close(self) -> None:
        self._file.close()

    def _pull(self) -> bool:
        batch = next(self._batches, None)
        if batch is None:
            self._done = True
            return False
        frame = pl.from_arrow(batch)
        assert isinstance(frame, pl.DataFrame)
        joined = frame if self._buffer is None else pl.concat([self._buffer, frame])
        if not joined["stream_id"].is_sorted():
            raise DataError(f"{self.path}: rows are not in stream_id order (a feature shard is written sorted); "
                            "extract this shard again")
        self._buffer = joined
        return True

    def take(self, stream_ids: Sequence[str]) -> FieldRows:
        """The rows of the streams ``stream_ids`` (ascending), which must follow those taken before.

        Raises:
            DataError: a row belongs to a stream between them that is not one of ``stream_ids`` (the shard does not
                hold the streams this shard of the dataset holds).
        """
        last = stream_ids[-1]
        while not self._done and (self._buffer is None or self._buffer.height == 0
                                  or self._buffer["stream_id"][-1] <= last):
            self._pull()
        buffer = self._buffer if self._buffer is not None else pl.DataFrame()
        cut = int(buffer["stream_id"].search_sorted(last, side="right")) if buffer.height else 0
        rows, self._buffer = buffer[:cut], buffer[cut:]
        stray = set(rows["stream_id"].unique().to_list()) - set(stream_ids) if rows.height else set()
        if stray:
            raise DataError(f"{self.path}: rows of stream {sorted(stray)[0]}, which is not a stream of this shard "
                            "(memf.data.dataset.shard_of with the feature set's shard count); extract it again")
        if self.numeric:
            vectors = rows["value"].to_numpy().astype(np.float32).reshape(-1, 1) if rows.height else \
                np.zeros((0, 1), np.float32)
        else:
            vectors = field_vectors(rows).reshape(-1, self.dim)
        keys = zip(*(rows[c].to_list() for c in _KEY_COLUMNS), strict=True) if rows.height else []
        return FieldRows(vectors, {k: i for i, k in enumerate(keys)})


@dataclass
class StreamClips:
    """One stream's clips in position order (failed clips are not in the store)."""

    vectors: np.ndarray  # [n, D]
    clip_ids: np.ndarray  # [n] str


class ClipSource:
    """A clip shard (video, audio): the clips of a run of streams at a time, read as one slice.

    Raises:
        DataError: the file is not a readable clip shard.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self._h5 = h5py.File(self.path, "r")
            self.meta: dict[str, Any] = json.loads(self._h5.attrs[META_KEY])
            self._offsets = self._h5["offsets"][...]  # [S_shard + 1]
            ids = self._h5["stream_ids"].asstr()[...]
        except (OSError, KeyError) as exc:
            raise DataError(f"{self.path}: not a clip feature shard ({exc})") from exc
        self.dim = int(self.meta["dim"])
        self._row = {sid: i for i, sid in enumerate(ids)}

    def close(self) -> None:
        self._h5.close()

    def take(self, stream_ids: Sequence[str]) -> dict[str, StreamClips]:
        """The clips of each of ``stream_ids`` that the shard holds (a stream it does not hold has no clips)."""
        rows = [self._row[s] for s in stream_ids if s in self._row]
        if not rows:
            return {}
        first, last = min(rows), max(rows)
        start, stop = int(self._offsets[first]), int(self._offsets[last + 1])
        vectors = self._h5["vectors"][start:stop].reshape(-1, self.dim)  # [n, D] of the run
        clip_ids = self._h5["clip_ids"].asstr()[start:stop]
        out = {}
        for sid in stream_ids:
            i = self._row.get(sid)
            if i is not None:
                a, b = int(self._offsets[i]) - start, int(self._offsets[i + 1]) - start
                out[sid] = StreamClips(vectors[a:b], clip_ids[a:b])
        return out
