"""The sharded feature store: ``results/features/{modality}/{extractor}/shard-{k}.{parquet|h5}`` and its manifests.

- Field modalities (text, image, numeric) go to Parquet, one row per (stream, entity, owner, field): columns
  ``stream_id``, ``entity``, ``owner_id`` (anchor_id, item_id, or the stream_id for the room), ``position`` (item
  position; 0 for anchor and room), ``field``, and ``vector`` (fixed-size list<float32>) or ``value`` (float32, numeric).
  An anchor shared by several streams of a shard has one row per stream (its vector is computed once).
- Clip modalities (video, audio) go to HDF5 with flat datasets: ``vectors`` [N, D] float32, ``clip_ids`` [N],
  ``positions`` [N] int32, ``stream_ids`` [S] (every stream of the shard, sorted) and ``offsets`` [S + 1] int64: stream
  ``i`` owns rows ``offsets[i]:offsets[i + 1]`` (an empty range when all its clips failed).
- ``shard-{k}.failures.parquet``: ``stream_id``, ``entity``, ``object_id``, ``field``, ``file``, ``reason``; one row
  per input that produced no feature (decode error, crash, timeout, missing value).

Each shard carries its extractor's metadata (identity, dimension, weights id, the bounds of config ``limits`` its
modality depends on, and for numeric fields each one's transform) as JSON under the key
``memf`` (Parquet schema metadata, HDF5 root attribute). Files hold no timestamps, so a rerun writes identical bytes.
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

from memf.core.io import DataError, atomic_path, write_json, write_parquet
from memf.features.spec import CLIP_MODALITIES, RANDOM_INIT

FAILURE_SCHEMA = pa.schema(
    [
        ("stream_id", pa.string()),
        ("entity", pa.string()),
        ("object_id", pa.string()),
        ("field", pa.string()),
        ("file", pa.string()),
        ("reason", pa.string()),
    ]
)
META_KEY = "memf"


def shard_suffix(modality: str) -> str:
    return "h5" if modality in CLIP_MODALITIES else "parquet"


@dataclass
class ClipShard:
    """The clip vectors of one shard, grouped by stream (see the module docstring for the layout)."""

    vectors: np.ndarray  # [N, D] float32
    clip_ids: np.ndarray  # [N] str
    positions: np.ndarray  # [N] int32
    stream_ids: np.ndarray  # [S] str
    offsets: np.ndarray  # [S + 1] int64
    meta: dict[str, Any]

    def clips_of(self, i: int) -> slice:
        return slice(int(self.offsets[i]), int(self.offsets[i + 1]))


def field_table(rows: pl.DataFrame, vectors: np.ndarray | None, meta: dict[str, Any]) -> pa.Table:
    """Arrow table of a field shard: key columns of ``rows`` plus ``vector`` (``vectors`` [N, D]) or ``value``."""
    keys = rows.select("stream_id", "entity", "owner_id", pl.col("position").cast(pl.Int32), "field").to_arrow()
    columns = {name: keys[name] for name in keys.column_names}
    if vectors is None:
        columns["value"] = pa.array(rows["value"].to_numpy().astype(np.float32), type=pa.float32())
    else:
        if vectors.ndim != 2 or vectors.shape[0] != rows.height:
            raise ValueError(f"field shard: vectors {vectors.shape}, expected [{rows.height}, D]")
        flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1), type=pa.float32())
        columns["vector"] = pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1])
    table = pa.table(columns)
    return table.replace_schema_metadata({META_KEY: json.dumps(meta, sort_keys=True)})


def write_field_shard(path: str | Path, table: pa.Table) -> None:
    write_parquet(path, table)


def read_field_shard(path: str | Path) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Rows of a field shard as polars (``vector`` as a fixed-size array) and its metadata."""
    path = Path(path)
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as exc:
        raise DataError(f"{path}: not a readable feature shard ({exc})") from exc
    meta = table.schema.metadata or {}
    if META_KEY.encode() not in meta:
        raise DataError(f"{path}: feature shard without '{META_KEY}' metadata")
    return pl.from_arrow(table), json.loads(meta[META_KEY.encode()])


def field_vectors(frame: pl.DataFrame) -> np.ndarray:
    """``[N, D]`` float32 from the ``vector`` column of a field shard frame."""
    if frame.height == 0:
        return np.zeros((0, 0), dtype=np.float32)
    return frame["vector"].to_numpy().astype(np.float32, copy=False).reshape(frame.height, -1)


def write_clip_shard(path: str | Path, shard: ClipShard) -> None:
    """Write a clip shard to HDF5 atomically (flat datasets, no timestamps)."""
    n, s = len(shard.clip_ids), len(shard.stream_ids)
    if shard.vectors.shape[0] != n or shard.positions.shape != (n,) or shard.offsets.shape != (s + 1,):
        raise ValueError(
            f"clip shard: vectors {shard.vectors.shape}, positions {shard.positions.shape}, offsets {shard.offsets.shape}"
            f" for {n} clips and {s} streams"
        )
    if int(shard.offsets[-1]) != n:
        raise ValueError(f"clip shard: offsets end at {int(shard.offsets[-1])}, expected {n} clips")
    text = h5py.string_dtype("utf-8")
    with atomic_path(path) as tmp, h5py.File(tmp, "w", libver="earliest") as h5:
        h5.create_dataset("vectors", data=shard.vectors.astype(np.float32), track_times=False)
        h5.create_dataset("clip_ids", data=shard.clip_ids.astype(object), dtype=text, track_times=False)
        h5.create_dataset("positions", data=shard.positions.astype(np.int32), track_times=False)
        h5.create_dataset("stream_ids", data=shard.stream_ids.astype(object), dtype=text, track_times=False)
        h5.create_dataset("offsets", data=shard.offsets.astype(np.int64), track_times=False)
        h5.attrs[META_KEY] = json.dumps(shard.meta, sort_keys=True)


def read_clip_shard(path: str | Path) -> ClipShard:
    path = Path(path)
    try:
        with h5py.File(path, "r") as h5:
            return ClipShard(
                vectors=h5["vectors"][...],
                clip_ids=h5["clip_ids"].asstr()[...],
                positions=h5["positions"][...],
                stream_ids=h5["stream_ids"].asstr()[...],
                offsets=h5["offsets"][...],
                meta=json.loads(h5.attrs[META_KEY]),
            )
    except (OSError, KeyError) as exc:
        raise DataError(f"{path}: not a clip feature shard ({exc})") from exc


def read_shard_meta(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if path.suffix == ".h5":
        return read_clip_shard(path).meta
    return read_field_shard(path)[1]


def shard_rows(path: str | Path) -> int:
    path = Path(path)
    if path.suffix == ".h5":
        return len(read_clip_shard(path).clip_ids)
    return pq.read_metadata(path).num_rows


def write_failures(path: str | Path, failures: Sequence[dict[str, str | None]]) -> None:
    rows = sorted(failures, key=lambda r: tuple(r.get(k) or "" for k in FAILURE_SCHEMA.names))
    write_parquet(path, pa.Table.from_pylist(list(rows), schema=FAILURE_SCHEMA))


def read_failures(path: str | Path) -> pl.DataFrame:
    return pl.read_parquet(path)


def write_manifest(shards: Sequence[str | Path], failures: Sequence[str | Path], out: str | Path) -> dict[str, Any]:
    """Gather the shards of one extractor into ``manifest.json``; refuses shards of different identity, dimension,
    weights, numeric transforms or limits."""
    if len(shards) != len(failures):
        raise ValueError(f"manifest: {len(shards)} shards but {len(failures)} failure files")
    metas = [read_shard_meta(p) for p in shards]
    first = metas[0]
    for path, meta in zip(shards, metas, strict=True):
        for key in ("identity", "dim", "weights_id", "transforms", "limits"):
            if meta.get(key) != first.get(key):
                raise DataError(f"{path}: {key} {meta.get(key)!r} differs from {shards[0]}'s {first.get(key)!r}")
    per_shard = [
        {"file": Path(s).name, "rows": shard_rows(s), "failures": pl.scan_parquet(f).select(pl.len()).collect().item()}
        for s, f in zip(shards, failures, strict=True)
    ]
    identity = first["identity"]
    manifest = {
        "extractor": identity["name"],
        "kind": identity["kind"],
        "modality": identity["modality"],
        "model": identity["model"],
        "weights": first["weights_id"],
        "random_init": first["weights_id"] == RANDOM_INIT,
        "dimension": first["dim"],
        "settings": identity["options"],
        "precision": identity["precision"],
        "code_version": identity["code_version"],
        "n_shards": len(shards),
        "shards": per_shard,
        "rows": sum(s["rows"] for s in per_shard),
        "failures": sum(s["failures"] for s in per_shard),
    }
    if "preprocessing" in identity:
        manifest["preprocessing"] = identity["preprocessing"]
    for key in ("transforms", "limits"):
        if first.get(key):
            manifest[key] = first[key]
    write_json(out, manifest)
    return manifest
