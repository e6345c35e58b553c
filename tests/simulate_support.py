"""Shared by the simulator tests: a tiny simulator config and readers of a written dataset."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import polars as pl

from memf.core.io import write_json, write_parquet
from memf.simulate import World
from memf.simulate.factors import latents_table

#: 14 streams of 32-pixel media and quarter-second clips: a whole dataset in about half a second.
TINY: dict = {
    "seed": 3,
    "n_streams": 14,
    "n_anchors": 5,
    "items_per_stream": [1, 4],
    "clips_per_stream": [1, 3],
    "image_size": 32,
    "video": {"frames": 4, "size": 32, "fps": 4},
    "audio": {"seconds": 0.25, "sample_rates": [8000, 16000, 22050]},
    "effects": {"anchor": 0.45, "commodity": 0.55, "room": 0.3, "video": 0.3, "audio": 0.15, "interaction": 0.15,
                "noise": 0.4},
    "log_sales_mean": 5.0,
    "defects": {"missing_modality": 0.0, "corrupt_image": 0.0, "truncated_video": 0.0, "corrupt_audio": 0.0,
                "no_audio_stream": 0.0},
}


def tiny(**changes) -> dict:
    """A copy of :data:`TINY` with top-level keys replaced."""
    cfg = copy.deepcopy(TINY)
    cfg.update(changes)
    return cfg


def read(root: Path, table: str) -> pl.DataFrame:
    """``root/<table>.parquet``."""
    return pl.read_parquet(root / f"{table}.parquet")


def files(root: Path) -> dict[str, bytes]:
    """Relative path -> bytes of every file under ``root``."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def write_latent_dataset(world: World, raw: Path, data: Path, folds: int = 3) -> None:
    """What :func:`memf.padding.pad.pad_latents` reads, without media: the world's latents.parquet and
    ground_truth.json under ``raw`` (as the writer writes them) and stand-ins of its validated tables under ``data``
    (ids, positions, a fold per stream, the target)."""
    lat = world.latents
    n, n_items = lat.n_streams, int(lat.item_offsets[-1])
    sids, aids = [f"s{i:05d}" for i in range(n)], [f"a{i:04d}" for i in range(len(lat.anchor_reach))]
    iids = [f"i{i:06d}" for i in range(n_items)]
    write_parquet(raw / "latents.parquet", latents_table(lat, sids, aids, iids, world.model.all_factors()))
    write_json(raw / "ground_truth.json", world.report())
    item_stream = lat.item_stream()
    write_parquet(data / "streams.parquet", pl.DataFrame({
        "stream_id": sids, "anchor_id": [aids[a] for a in lat.stream_anchor], "fold": np.arange(n) % folds,
        "target": world.target}))
    write_parquet(data / "anchors.parquet", pl.DataFrame({"anchor_id": sorted({aids[a] for a in lat.stream_anchor})}))
    write_parquet(data / "items.parquet", pl.DataFrame({
        "stream_id": [sids[s] for s in item_stream], "item_id": iids,
        "position": np.arange(n_items) - lat.item_offsets[item_stream]}))
    clips = []
    for kind, offsets in (("video", lat.video_offsets), ("audio", lat.audio_offsets)):
        for s in range(n):
            clips += [(sids[s], f"{sids[s]}-{kind[0]}{p}", kind, p) for p in range(int(offsets[s + 1] - offsets[s]))]
    write_parquet(data / "clips.parquet", pl.DataFrame(clips, schema=["stream_id", "clip_id", "kind", "position"],
                                                       orient="row"))
    write_json(data / "dataset.json", {"root": str(raw), "folds": {"k": folds}})
