"""A small synthetic validated dataset for the extraction tests and benchmark (test data; not the demo simulator).

:func:`write_fixture_dataset` writes raw media (PNG images, H.264 MP4 clips through PyAV, WAV clips through
soundfile) under ``root`` and the validated tables that ``memf.data.dataset.load_clean`` reads under ``data_dir``:
the raw columns of the default mapping plus ``fold`` (3 folds) and ``target`` on streams, and ``dataset.json``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from memf.core.io import write_json, write_parquet
from memf.data.contract import DEFAULT_COLUMNS

WORDS = ["连衣裙", "女装", "春季", "新款", "口红", "美妆", "运动鞋", "sale", "brand", "shop", "fashion", "nike", "零食", "包邮"]


@dataclass(frozen=True)
class FixtureSizes:
    n_streams: int = 6
    n_anchors: int = 3
    items: tuple[int, int] = (1, 3)  # inclusive range per stream
    clips: tuple[int, int] = (1, 2)  # inclusive range per stream and kind
    image_size: int = 40
    video_frames: int = 8
    video_size: int = 32
    audio_seconds: float = 1.0
    audio_rates: tuple[int, ...] = (8000, 16000, 22050)


def write_png(path: Path, rgb: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(path)


def write_mp4(path: Path, frames: np.ndarray, fps: int = 8) -> None:
    """H.264 MP4 of uint8 ``[T, H, W, 3]`` frames through PyAV."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def write_wav(path: Path, wave: np.ndarray, rate: int) -> None:
    import soundfile as sf

    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, wave, rate, subtype="PCM_16")


def _text(rng: np.random.Generator, lo: int = 1, hi: int = 5) -> str:
    return " ".join(rng.choice(WORDS, size=int(rng.integers(lo, hi + 1))).tolist())


def write_fixture_dataset(root: str | Path, data_dir: str | Path, sizes: FixtureSizes = FixtureSizes(), seed: int = 0) -> None:
    """Write the raw media under ``root`` and the validated tables under ``data_dir``."""
    rng = np.random.default_rng(seed)
    root, data_dir = Path(root), Path(data_dir)
    s = sizes

    def image(rel: str) -> str:
        write_png(root / rel, rng.integers(0, 256, size=(s.image_size, s.image_size + 8, 3), dtype=np.uint8))
        return rel

    anchors = []
    for a in range(s.n_anchors):
        row = {"anchor_id": f"a{a:03d}", "headImage": image(f"anchors/a{a:03d}.png")}
        row.update({c: _text(rng) for c in DEFAULT_COLUMNS["anchor"]["text"]})
        row.update({c: float(rng.integers(0, 10_000)) for c in DEFAULT_COLUMNS["anchor"]["numeric"]})
        row["score"] = float(rng.uniform(-1, 5))
        anchors.append(row)
    streams, items, clips = [], [], []
    for i in range(s.n_streams):
        sid = f"s{i:04d}"
        sales = float(rng.integers(0, 5000))
        row = {"stream_id": sid, "anchor_id": f"a{i % s.n_anchors:03d}", "sales": sales,
               "headImage": image(f"rooms/{sid}.png"), "duration": float(rng.integers(600, 20_000)),
               "fold": i % 3, "target": float(np.log1p(sales))}
        row.update({c: _text(rng) for c in DEFAULT_COLUMNS["room"]["text"]})
        streams.append(row)
        for p in range(int(rng.integers(s.items[0], s.items[1] + 1))):
            item = {"stream_id": sid, "item_id": f"{sid}-i{p}", "position": p, "image": image(f"items/{sid}-{p}.png"),
                    "price": float(rng.uniform(1, 500)), "couponPrice": float(rng.uniform(0, 50))}
            item.update({c: _text(rng, 1, 8) for c in DEFAULT_COLUMNS["commodity"]["text"]})
            items.append(item)
        for kind in ("video", "audio"):
            for p in range(int(rng.integers(s.clips[0], s.clips[1] + 1))):
                cid = f"{sid}-{kind[0]}{p}"
                if kind == "video":
                    rel = f"clips/{cid}.mp4"
                    frames = (s.video_frames, s.video_size, s.video_size, 3)
                    write_mp4(root / rel, rng.integers(0, 256, size=frames, dtype=np.uint8))
                else:
                    rel = f"clips/{cid}.wav"
                    rate = int(rng.choice(s.audio_rates))
                    write_wav(root / rel, (0.3 * rng.standard_normal(int(s.audio_seconds * rate))).astype(np.float32), rate)
                clips.append({"stream_id": sid, "clip_id": cid, "kind": kind, "position": p, "path": rel})
    write_parquet(data_dir / "streams.parquet", pl.DataFrame(streams).sort("stream_id"))
    write_parquet(data_dir / "anchors.parquet", pl.DataFrame(anchors).sort("anchor_id"))
    write_parquet(data_dir / "items.parquet", pl.DataFrame(items).sort("stream_id", "position"))
    write_parquet(data_dir / "clips.parquet", pl.DataFrame(clips).sort("stream_id", "kind", "position"))
    write_json(data_dir / "dataset.json", {"root": str(root.resolve()), "folds": {"k": 3, "seed": 0, "group_by": None}})
