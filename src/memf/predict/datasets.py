"""Raw datasets for checking a bundle: a copy of some streams of a dataset, in the documented raw format.

Predicting a copy of a run's own test streams, without their sales, must give that run's test predictions
(docs/predict.md, "Checking a bundle"); :func:`copy_streams` writes that copy.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from pathlib import Path

import polars as pl

from memf.core.io import read_json, write_json, write_parquet


def copy_streams(root: str | os.PathLike[str], out: str | os.PathLike[str], stream_ids: Iterable[str], *,
                 columns: dict[str, dict[str, list[str]]], keep_sales: bool = False) -> Path:
    """Write the streams ``stream_ids`` of the raw dataset ``root`` to ``out``: the four tables restricted to them
    (their anchors, items and clips), every media file they reference (copied), and on simulated data the rows of
    ``ground_truth.parquet`` and ``ground_truth.json``.

    Args:
        columns: the column mapping (the image columns say which media files to copy).
        keep_sales: keep the ``sales`` column (default: drop it, as for streams still to come).
    """
    root, out = Path(root), Path(out)
    ids = sorted(set(stream_ids))
    streams = pl.read_parquet(root / "streams.parquet").filter(pl.col("stream_id").is_in(ids))
    if not keep_sales:
        streams = streams.drop("sales")
    anchors = pl.read_parquet(root / "anchors.parquet").filter(pl.col("anchor_id").is_in(streams["anchor_id"].implode()))
    items = pl.read_parquet(root / "items.parquet").filter(pl.col("stream_id").is_in(ids))
    clips = pl.read_parquet(root / "clips.parquet").filter(pl.col("stream_id").is_in(ids))
    media = set(clips["path"].drop_nulls().to_list())
    for table, entity in ((anchors, "anchor"), (items, "commodity"), (streams, "room")):
        for col in columns[entity]["image"]:
            media |= set(table[col].drop_nulls().to_list())
    for rel in sorted(media):
        source = root / rel
        if source.is_file():
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, out / rel)
    for name, table in (("streams", streams), ("anchors", anchors), ("items", items), ("clips", clips)):
        write_parquet(out / f"{name}.parquet", table)
    if (root / "ground_truth.parquet").is_file():
        truth = pl.read_parquet(root / "ground_truth.parquet").filter(pl.col("stream_id").is_in(ids))
        write_parquet(out / "ground_truth.parquet", truth)
    if (root / "ground_truth.json").is_file():
        write_json(out / "ground_truth.json", read_json(root / "ground_truth.json"))
    return out
