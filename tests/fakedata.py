"""A small raw dataset written by hand, independent of the simulator: 'another program' using the documented format."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import polars as pl
import soundfile as sf
from PIL import Image

from memf.data.contract import DEFAULT_COLUMNS


def write_image(path: Path, rng: np.random.Generator, size: int = 32) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(path)


def write_video(path: Path, rng: np.random.Generator, frames: int = 8, size: int = 32) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=8)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for _ in range(frames):
            frame = av.VideoFrame.from_ndarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())


def write_audio(path: Path, rng: np.random.Generator, rate: int = 8000, seconds: float = 0.5) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, (0.1 * rng.standard_normal(int(rate * seconds))).astype(np.float32), rate)


def write_dataset(root: Path, n_streams: int = 6, seed: int = 0) -> Path:
    """Write ``n_streams`` streams (2 items, 2 video and 2 audio clips each) in the raw format under ``root``."""
    rng = np.random.default_rng(seed)
    cols = DEFAULT_COLUMNS
    anchors, streams, items, clips = [], [], [], []
    for a in range(max(1, n_streams // 2)):
        row = {"anchor_id": f"a{a}", "headImage": f"media/anchor{a}.png"}
        row |= {c: f"anchor {a} {c}" for c in cols["anchor"]["text"]}
        row |= {c: float(rng.integers(1, 10_000)) for c in cols["anchor"]["numeric"]}
        write_image(root / row["headImage"], rng)
        anchors.append(row)
    for s in range(n_streams):
        sid = f"s{s:03d}"
        row = {"stream_id": sid, "anchor_id": f"a{s % len(anchors)}", "title": f"room {s}", "tag": "服装",
               "headImage": f"media/room{s}.jpg", "duration": 3600.0, "sales": float(rng.integers(0, 5000))}
        write_image(root / row["headImage"], rng)
        streams.append(row)
        for i in range(2):
            item = {"stream_id": sid, "item_id": f"{sid}-i{i}", "position": i, "image": f"media/{sid}-i{i}.png"}
            item |= {c: f"item {i} {c}" for c in cols["commodity"]["text"]}
            item |= {"price": 99.0, "couponPrice": 79.0}
            write_image(root / item["image"], rng)
            items.append(item)
        for kind, ext in (("video", "mp4"), ("audio", "wav")):
            for c in range(2):
                path = f"media/{sid}-{kind}{c}.{ext}"
                (write_video if kind == "video" else write_audio)(root / path, rng)
                clips.append({"stream_id": sid, "clip_id": f"{sid}-{kind}{c}", "kind": kind, "position": c, "path": path})
    for name, rows in (("anchors", anchors), ("streams", streams), ("items", items), ("clips", clips)):
        pl.DataFrame(rows).write_parquet(root / f"{name}.parquet")
    return root
