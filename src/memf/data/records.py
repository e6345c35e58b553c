"""Paths of the data stage's per-shard records: the simulator's render records and validation's probe records.

Each is spelled once, here, in a module light enough for the workflow to import when it plans (the simulator's and
the validator's modules load media libraries); :mod:`memf.simulate.writer` and :mod:`memf.data.validate` write them.
"""

from __future__ import annotations

from pathlib import Path


def render_record_path(raw_root: str | Path, shard: int | str) -> Path:
    """``{raw_root}/media/render-{shard}.parquet``: the media files render shard ``shard`` wrote (``path`` relative to
    the root, ``bytes``), in the order it wrote them."""
    return Path(raw_root) / "media" / f"render-{shard}.parquet"


def probe_record_path(data_dir: str | Path, shard: int | str) -> Path:
    """``{data_dir}/probe/shard-{shard}.parquet``: per media file of probe shard ``shard``, why it does not decode
    and why it is truncated (``memf.data.validate.PROBE_SCHEMA``)."""
    return Path(data_dir) / "probe" / f"shard-{shard}.parquet"
