"""Decoding images, video clips and audio clips into arrays, and probing that a file decodes.

Every reader raises :class:`MediaError` with the path and the reason. Video and audio readers may still crash the
process on a corrupt file (decord is unmaintained), so call them through :func:`memf.core.isolate.isolated_map`.

- Images: Pillow; CMYK, greyscale, palette and alpha images are converted to RGB explicitly (alpha composited on
  white). A truncated file raises (Pillow's truncated-image flag is left off).
- Video: decord ``VideoReader``; ``num_frames`` frames sampled uniformly over the clip.
- Audio: WAV/FLAC/OGG through soundfile (a WAV shorter than its header declares is an error, not a silent short
  read); other containers (MP4, M4A, MP3, AAC) through decord ``AudioReader``. Mono by channel mean; resampled with
  ``torchaudio.functional.resample``.
"""

from __future__ import annotations

import functools
import struct
from pathlib import Path
from typing import Any

import numpy as np

SOUNDFILE_SUFFIXES = frozenset({".wav", ".flac", ".ogg"})


class MediaError(Exception):
    """A media file that cannot be decoded; the message names the file."""


def read_image(path: str | Path) -> np.ndarray:
    """Decode an image to RGB uint8 ``[H, W, 3]``."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            img.load()
            if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
                rgba = img.convert("RGBA")
                canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                img = Image.alpha_composite(canvas, rgba)
            rgb = img.convert("RGB")
            return np.asarray(rgb, dtype=np.uint8)
    except (OSError, ValueError, SyntaxError) as exc:
        raise MediaError(f"{path}: cannot decode image ({exc})") from exc


def sample_indices(n_frames: int, num: int) -> np.ndarray:
    """``num`` frame indices spread uniformly over ``n_frames`` (centres of equal segments)."""
    return np.minimum(((np.arange(num) + 0.5) * n_frames / num).astype(np.int64), n_frames - 1)


def read_video(path: str | Path, num_frames: int, size: int | None = None) -> np.ndarray:
    """Decode ``num_frames`` uniformly sampled frames as uint8 ``[T, H, W, 3]`` (resized to ``size`` if given)."""
    import decord

    try:
        kwargs = {"width": size, "height": size} if size else {}
        reader = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1, **kwargs)
        n = len(reader)
        if n == 0:
            raise MediaError(f"{path}: video has no frames")
        return reader.get_batch(sample_indices(n, num_frames).tolist()).asnumpy()
    except decord.DECORDError as exc:
        raise MediaError(f"{path}: cannot decode video ({exc})") from exc
    except RuntimeError as exc:
        raise MediaError(f"{path}: cannot decode video ({exc})") from exc


def _wav_declared_bytes(path: Path) -> tuple[int, int] | None:
    """(declared, available) bytes of a RIFF/WAVE file's data chunk, or None if it is not RIFF."""
    with open(path, "rb") as fh:
        head = fh.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        size = path.stat().st_size
        while True:
            chunk = fh.read(8)
            if len(chunk) < 8:
                raise MediaError(f"{path}: WAV file has no data chunk")
            cid, length = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            if cid == b"data":
                return length, size - fh.tell()
            fh.seek(length + (length & 1), 1)


def decode_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """Decode an audio clip to mono float32 ``[N]`` at the file's own sample rate; returns (waveform, rate)."""
    path = Path(path)
    if path.suffix.lower() in SOUNDFILE_SUFFIXES:
        import soundfile as sf

        declared = _wav_declared_bytes(path)
        if declared is not None and declared[1] < declared[0]:
            raise MediaError(f"{path}: truncated WAV ({declared[1]} of {declared[0]} data bytes present)")
        try:
            data, rate = sf.read(path, dtype="float32", always_2d=True)
        except (sf.LibsndfileError, RuntimeError) as exc:
            raise MediaError(f"{path}: cannot decode audio ({exc})") from exc
        wave = data.mean(axis=1)
    else:
        import decord

        try:
            reader = decord.AudioReader(str(path), mono=True)
            wave, rate = reader[:].asnumpy().reshape(-1).astype(np.float32), int(reader.sample_rate)
        except (decord.DECORDError, RuntimeError) as exc:
            raise MediaError(f"{path}: cannot decode audio ({exc})") from exc
    if wave.size == 0:
        raise MediaError(f"{path}: audio has no samples")
    if not np.isfinite(wave).all():
        raise MediaError(f"{path}: audio has non-finite samples")
    return np.ascontiguousarray(wave, dtype=np.float32), int(rate)


@functools.lru_cache(maxsize=16)
def _resampler(orig: int, new: int) -> Any:
    """torchaudio's resampler between two rates; it computes its sinc kernel once, so it is kept per rate pair."""
    import torchaudio.transforms as AT

    return AT.Resample(orig, new)


def read_audio(path: str | Path, sample_rate: int = 16000) -> np.ndarray:
    """Decode an audio clip to mono float32 ``[N]`` at ``sample_rate`` (resampled with torchaudio if needed)."""
    wave, rate = decode_audio(path)
    if rate != sample_rate:
        import torch

        with torch.inference_mode():
            wave = _resampler(rate, sample_rate)(torch.from_numpy(wave)).numpy()
    return np.ascontiguousarray(wave, dtype=np.float32)


def probe(kind: str, path: str | Path) -> dict[str, float]:
    """Decode a file fully once and return its basic facts; raises :class:`MediaError` if it does not decode.

    ``kind`` is "image", "video" or "audio".
    """
    if kind == "image":
        arr = read_image(path)
        return {"height": arr.shape[0], "width": arr.shape[1]}
    if kind == "video":
        import decord

        try:
            reader = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
            n = len(reader)
            if n == 0:
                raise MediaError(f"{path}: video has no frames")
            frames = reader.get_batch([0, n // 2, n - 1]).shape
            return {"frames": n, "fps": float(reader.get_avg_fps()), "height": frames[1], "width": frames[2]}
        except (decord.DECORDError, RuntimeError) as exc:
            raise MediaError(f"{path}: cannot decode video ({exc})") from exc
    if kind == "audio":
        wave, rate = decode_audio(path)
        return {"seconds": wave.size / rate, "sample_rate": rate}
    raise ValueError(f"unknown media kind '{kind}' (expected image, video or audio)")
