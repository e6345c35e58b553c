"""The validated dataset (``results/data``): loading its tables and assigning streams to shards."""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from memf.core.io import read_json


def shard_of(stream_id: str, n_shards: int) -> int:
    """Shard of a stream: CRC32 of its id modulo the shard count (stable across runs, machines and Python versions)."""
    return zlib.crc32(stream_id.encode("utf-8")) % n_shards


@dataclass(frozen=True)
class CleanDataset:
    """The four validated tables plus the raw dataset root their media paths are relative to."""

    root: Path
    streams: pl.DataFrame
    anchors: pl.DataFrame
    items: pl.DataFrame
    clips: pl.DataFrame

    def media_path(self, rel: str) -> Path:
        return self.root / rel

    def shard(self, k: int, n_shards: int) -> CleanDataset:
        """The part of the dataset whose streams fall in shard ``k`` of ``n_shards``."""
        ids = [s for s in self.streams["stream_id"].to_list() if shard_of(s, n_shards) == k]
        streams = self.streams.filter(pl.col("stream_id").is_in(ids))
        return CleanDataset(
            root=self.root,
            streams=streams,
            anchors=self.anchors.filter(pl.col("anchor_id").is_in(streams["anchor_id"].unique().to_list())),
            items=self.items.filter(pl.col("stream_id").is_in(ids)),
            clips=self.clips.filter(pl.col("stream_id").is_in(ids)),
        )


def load_clean(data_dir: str | Path) -> CleanDataset:
    """Load ``results/data`` (the output of the validate rule)."""
    data_dir = Path(data_dir)
    meta = read_json(data_dir / "dataset.json")
    return CleanDataset(
        root=Path(meta["root"]),
        streams=pl.read_parquet(data_dir / "streams.parquet"),
        anchors=pl.read_parquet(data_dir / "anchors.parquet"),
        items=pl.read_parquet(data_dir / "items.parquet"),
        clips=pl.read_parquet(data_dir / "clips.parquet"),
    )
