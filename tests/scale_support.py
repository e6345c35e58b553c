"""A synthetic validated dataset and feature store of any size, without media: what the padding rule reads, at the
shapes extraction writes (for the memory tests and bench/scale_bench.py).

Streams ``s0000000, ...`` with 1..``max_items`` items and 1..``max_clips`` clips of each kind, the default column
mapping (4 + 2 + 5 text fields, 1 image field per entity, 8 + 1 + 2 numeric fields), random vectors of the given
sizes. Each shard is written as extraction writes it: rows in stream, entity, position, field order, one Parquet
file per field modality (one row group, as ``pq.write_table`` makes it), one HDF5 clip shard per clip kind.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from memf.core.io import write_json, write_parquet
from memf.data.contract import DEFAULT_COLUMNS, FIELD_ENTITIES
from memf.data.dataset import shard_of
from memf.features.store import ClipShard, field_table, write_clip_shard, write_field_shard

DEMO_DIMS = {"text": 32, "image": 512, "numeric": 1, "video": 32, "audio": 32}
PAPER_DIMS = {"text": 768, "image": 2048, "numeric": 1, "video": 768, "audio": 768}


@dataclass(frozen=True)
class Synthetic:
    data: Path  # the validated dataset
    shards: dict[str, list[str]]  # modality -> shard files
    folds: int


def _meta(modality: str, dim: int) -> dict:
    identity = {"name": f"synthetic-{modality}", "kind": "synthetic", "modality": modality, "model": "synthetic",
                "options": {}, "precision": "fp32", "code_version": "synthetic"}
    return {"identity": identity, "dim": dim, "weights_id": "synthetic"}


def _tables(n: int, max_items: int, max_clips: int, folds: int, rng: np.random.Generator) -> dict[str, pl.DataFrame]:
    sids = [f"s{i:07d}" for i in range(n)]
    n_items = rng.integers(1, max_items + 1, n)
    streams = pl.DataFrame({"stream_id": sids, "anchor_id": [f"a{i % max(1, n // 4):06d}" for i in range(n)],
                            "fold": (np.arange(n) % folds).astype(np.int64),
                            "target": rng.normal(5.0, 1.0, n)})
    stream_of = np.repeat(np.arange(n), n_items)
    position = np.arange(len(stream_of)) - np.repeat(np.cumsum(n_items) - n_items, n_items)
    items = pl.DataFrame({"stream_id": [sids[s] for s in stream_of], "item_id": [f"i{i:08d}" for i in
                                                                                 range(len(stream_of))],
                          "position": position.astype(np.int32)})
    clips = []
    for kind in ("video", "audio"):
        count = rng.integers(1, max_clips + 1, n)
        clips += [(sids[s], f"{sids[s]}-{kind[0]}{p}", kind, p) for s in range(n) for p in range(int(count[s]))]
    return {"streams": streams, "items": items, "anchors": streams.select("anchor_id").unique().sort("anchor_id"),
            "clips": pl.DataFrame(clips, schema=["stream_id", "clip_id", "kind", "position"], orient="row")}


def _field_rows(tables: dict[str, pl.DataFrame], modality: str) -> pl.DataFrame:
    """One row per (stream, entity, owner, field) in extraction's order."""
    parts = []
    for order, entity in enumerate(FIELD_ENTITIES):
        fields = DEFAULT_COLUMNS[entity][modality]
        if entity == "anchor":
            base = tables["streams"].select("stream_id", owner_id=pl.col("anchor_id"), position=pl.lit(0, pl.Int32))
        elif entity == "room":
            base = tables["streams"].select("stream_id", owner_id=pl.col("stream_id"), position=pl.lit(0, pl.Int32))
        else:
            base = tables["items"].select("stream_id", owner_id=pl.col("item_id"), position=pl.col("position"))
        frame = base.join(pl.DataFrame({"field": fields, "field_order": range(len(fields))}), how="cross")
        parts.append(frame.with_columns(entity=pl.lit(entity), entity_order=pl.lit(order)))
    rows = pl.concat(parts).sort("stream_id", "entity_order", "position", "field_order")
    return rows.select("stream_id", "entity", "owner_id", "position", "field")


def write_synthetic(root: Path, n: int, dims: dict[str, int], n_shards: int = 2, max_items: int = 8,
                    max_clips: int = 5, folds: int = 5, seed: int = 0) -> Synthetic:
    """Write the validated tables under ``root/data`` and the five modalities' shards under ``root/features``."""
    rng = np.random.default_rng(seed)
    tables = _tables(n, max_items, max_clips, folds, rng)
    data = root / "data"
    for name, table in tables.items():
        write_parquet(data / f"{name}.parquet", table)
    write_json(data / "dataset.json", {"root": str(root / "raw"), "folds": {"k": folds}})
    shard = np.array([shard_of(s, n_shards) for s in tables["streams"]["stream_id"]])
    mine = {k: set(tables["streams"]["stream_id"].filter(pl.Series(shard == k)).to_list()) for k in range(n_shards)}
    shards: dict[str, list[str]] = {}
    for modality in ("text", "image", "numeric"):
        rows = _field_rows(tables, modality)
        shards[modality] = []
        for k in range(n_shards):
            part = rows.filter(pl.col("stream_id").is_in(sorted(mine[k])))
            if modality == "numeric":
                part = part.with_columns(value=pl.Series(rng.normal(size=part.height)))
                table = field_table(part, None, _meta(modality, 1))
            else:
                table = field_table(part, rng.random((part.height, dims[modality]), dtype=np.float32),
                                    _meta(modality, dims[modality]))
            path = root / "features" / modality / f"shard-{k}.parquet"
            write_field_shard(path, table)
            shards[modality].append(str(path))
    for kind in ("video", "audio"):
        clips = tables["clips"].filter(pl.col("kind") == kind).sort("stream_id", "position")
        shards[kind] = []
        for k in range(n_shards):
            part = clips.filter(pl.col("stream_id").is_in(sorted(mine[k])))
            ids = np.array(sorted(mine[k]), dtype=object)
            counts = dict(part.group_by("stream_id").len().iter_rows())
            offsets = np.concatenate([[0], np.cumsum([counts.get(s, 0) for s in ids])]).astype(np.int64)
            path = root / "features" / kind / f"shard-{k}.h5"
            write_clip_shard(path, ClipShard(rng.random((part.height, dims[kind]), dtype=np.float32),
                                             np.array(part["clip_id"].to_list(), dtype=object),
                                             part["position"].to_numpy().astype(np.int32), ids, offsets,
                                             _meta(kind, dims[kind])))
            shards[kind].append(str(path))
    return Synthetic(data, shards, folds)
