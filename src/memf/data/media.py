"""Decoding images, video clips and audio clips into arrays, and probing that a file decodes.

Every reader raises :class:`MediaError` with the path and a plain reason (``no video stream``, ``no audio stream``,
``video has no frames``, ``truncated MP4 ...``; :class:`MediaMissing`, ``file not found: <path>``, before any decoder
opens a file that is not there). Video readers may still crash the process on a corrupt file (decord
is unmaintained), so call them through :func:`memf.core.isolate.isolated_map`.

Every reader respects the job's :class:`~memf.data.contract.Limits` (config ``limits``; set them for a block with
:func:`applied_limits`, which forked decoding workers inherit), so that no single file can take unbounded memory:

- Images: Pillow, with its decompression-bomb guard set to ``max_image_pixels``: a larger image is refused from its
  header, before any pixel is decoded. CMYK, greyscale, palette and alpha images are converted to RGB explicitly
  (alpha composited on white). A truncated file raises (Pillow's truncated-image flag is left off).
- Video: decord ``VideoReader``; ``num_frames`` frames sampled uniformly over the clip's first
  ``min(frames, max_video_frames, max_video_seconds x fps)`` frames (a longer clip is truncated to that).
- Audio: WAV/FLAC/OGG through soundfile (a WAV shorter than its header declares is an error, not a silent short
  read); other containers (MP4, M4A, MP3, AAC) through PyAV. Only the first ``max_audio_seconds`` are decoded. Mono
  by channel mean; resampled with torchaudio.

An MP4/M4A/MOV file (ISO base media) is first checked box by box: a box that runs past the end of the file, or no
``moov`` box, is reported as a truncated file instead of FFmpeg's internal error.
"""

from __future__ import annotations

import contextlib
import functools
import math
import re
import struct
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from memf.core.io import DataError
from memf.data.contract import Limits

SOUNDFILE_SUFFIXES = frozenset({".wav", ".flac", ".ogg"})
_LIMITS = Limits()


class MediaError(DataError):
    """A media file that cannot be decoded; the message names the file (bad input data, like any DataError)."""


class MediaMissing(MediaError):
    """A media file a table names that is not there (``file not found: <path>``)."""


def _existing(path: str | Path) -> Path:
    """``path``, or :class:`MediaMissing` when there is no file there (before any decoder sees it)."""
    path = Path(path)
    if not path.is_file():
        raise MediaMissing(f"file not found: {path}" if not path.exists() else f"not a file: {path}")
    return path


def drop_reason(kind: str, failure: str) -> str:
    """The reason a media file that failed its probe is dropped with, from the failure as
    :func:`memf.core.isolate.isolated_map` reports it (``<exception type>: <message>``): ``video file not found:
    <path>`` for a missing file, ``video does not decode: <failure>`` for anything else."""
    name, _, message = failure.partition(": ")
    if name == MediaMissing.__name__:
        return f"{kind} {message}"
    return f"{kind} does not decode: {failure}"


def current_limits() -> Limits:
    return _LIMITS


@contextlib.contextmanager
def applied_limits(limits: Limits | None) -> Iterator[Limits]:
    """Make ``limits`` (None: the defaults) what every reader respects within the block, in this process and in the
    decoding workers it forks there."""
    global _LIMITS
    previous, _LIMITS = _LIMITS, limits or Limits()
    try:
        yield _LIMITS
    finally:
        _LIMITS = previous


# --- Container checks ----------------------------------------------------------------------------------------------
_ISO_BOXES = frozenset({b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot", b"uuid", b"styp", b"moof"})


def _check_iso_bmff(path: Path) -> None:
    """For an MP4/M4A/MOV file, raise :class:`MediaError` when a top-level box runs past the end of the file or there
    is no ``moov`` box (a file cut short, or still being written). Other files pass unchecked."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8 or head[4:8] not in _ISO_BOXES:
            return
        fh.seek(0)
        offset, seen = 0, set()
        while offset < size:
            header = fh.read(8)
            if len(header) < 8:
                raise MediaError(f"{path}: truncated MP4 (a box header is cut off at byte {offset} of {size})")
            length, kind = struct.unpack(">I4s", header)
            if length == 1:
                large = fh.read(8)
                if len(large) < 8:
                    raise MediaError(f"{path}: truncated MP4 (a box header is cut off at byte {offset} of {size})")
                length = struct.unpack(">Q", large)[0]
            elif length == 0:  # the last box, up to the end of the file
                length = size - offset
            if length < 8 or not all(32 <= c < 127 for c in kind):
                raise MediaError(f"{path}: corrupt MP4 (no valid box at byte {offset})")
            if offset + length > size:
                name = kind.decode("latin-1")
                raise MediaError(f"{path}: truncated MP4 (box '{name}' declares {length} bytes at byte {offset}, "
                                 f"the file ends at {size})")
            seen.add(kind)
            offset += length
            fh.seek(offset)
    if b"moov" not in seen and b"moof" not in seen:
        raise MediaError(f"{path}: truncated or unfinished MP4 (no 'moov' box)")


# --- Images ---------------------------------------------------------------------------------------------------------
def read_image(path: str | Path) -> np.ndarray:
    """Decode an image to RGB uint8 ``[H, W, 3]``; an image over ``limits.max_image_pixels`` is refused unread."""
    from PIL import Image

    limit = _LIMITS.max_image_pixels
    path = _existing(path)
    try:
        with warnings.catch_warnings():
            # Pillow warns past MAX_IMAGE_PIXELS and raises past twice that; both are a refusal here.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            Image.MAX_IMAGE_PIXELS = limit
            with Image.open(path) as img:
                img.load()
                if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
                    rgba = img.convert("RGBA")
                    canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                    img = Image.alpha_composite(canvas, rgba)
                rgb = img.convert("RGB")
                return np.asarray(rgb, dtype=np.uint8)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        found = re.search(r"\((\d+) pixels\)", str(exc))
        pixels = f"{int(found.group(1)):,} pixels" if found else "too many pixels"
        raise MediaError(f"{path}: image has {pixels}, over limits.max_image_pixels = {limit:,} "
                         "(refused before decoding)") from exc
    except (OSError, ValueError, SyntaxError) as exc:
        raise MediaError(f"{path}: cannot decode image ({exc})") from exc


# --- Video ----------------------------------------------------------------------------------------------------------
def sample_indices(n_frames: int, num: int) -> np.ndarray:
    """``num`` frame indices spread uniformly over ``n_frames`` (centres of equal segments)."""
    return np.minimum(((np.arange(num) + 0.5) * n_frames / num).astype(np.int64), n_frames - 1)


_DECORD_PREFIX = re.compile(r"^\[[\d:]+\] \S+:\d+: ")


def _video_reason(exc: Exception) -> str:
    """A plain reason for a decord error (its messages carry source locations and FFmpeg error numbers)."""
    msg = _DECORD_PREFIX.sub("", str(exc).strip().splitlines()[0] if str(exc).strip() else "")
    if "cannot find video stream" in msg or "st_nb >= 0" in msg:
        return "no video stream"
    if msg.startswith("Error reading") or "ERROR opening" in msg:
        return "not a video file FFmpeg can open (unknown format, or truncated)"
    if "av_read_frame failed" in msg:
        return "truncated or corrupt video data (reading a frame failed)"
    return f"cannot decode video ({msg or type(exc).__name__})"


@dataclass(frozen=True)
class _Video:
    reader: Any
    frames: int  # in the file
    fps: float
    usable: int  # the first frames within the limits
    truncated: str | None  # why fewer than all frames are used


def _open_video(path: str | Path, size: int | None = None) -> _Video:
    import decord

    path = _existing(path)
    _check_iso_bmff(path)
    kwargs = {"width": size, "height": size} if size else {}
    try:
        reader = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1, **kwargs)
        n = len(reader)
        fps = float(reader.get_avg_fps())
    except (decord.DECORDError, RuntimeError) as exc:
        raise MediaError(f"{path}: {_video_reason(exc)}") from exc
    if n == 0:
        raise MediaError(f"{path}: video has no frames")
    limits = _LIMITS
    by_time = math.floor(limits.max_video_seconds * fps) if fps > 0 and math.isfinite(fps) else n
    usable = max(1, min(n, limits.max_video_frames, by_time))
    truncated = None
    if usable < n:
        seconds = f"{n / fps:.1f} s" if fps > 0 else "unknown length"
        truncated = (f"video clip of {n} frames ({seconds}) read up to frame {usable} "
                     f"(limits.max_video_seconds = {limits.max_video_seconds:g}, "
                     f"limits.max_video_frames = {limits.max_video_frames})")
    return _Video(reader, n, fps, usable, truncated)


def _get_frames(path: str | Path, video: _Video, indices: list[int]) -> np.ndarray:
    import decord

    try:
        return video.reader.get_batch(indices).asnumpy()
    except (decord.DECORDError, RuntimeError) as exc:
        raise MediaError(f"{path}: {_video_reason(exc)}") from exc


def read_video(path: str | Path, num_frames: int, size: int | None = None) -> np.ndarray:
    """Decode ``num_frames`` frames sampled uniformly over the clip's frames within the limits, as uint8
    ``[T, H, W, 3]`` (resized to ``size`` if given)."""
    video = _open_video(path, size)
    return _get_frames(path, video, sample_indices(video.usable, num_frames).tolist())


# --- Audio ----------------------------------------------------------------------------------------------------------
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


@dataclass(frozen=True)
class _Audio:
    wave: np.ndarray  # mono float32 at the file's rate
    rate: int
    truncated: str | None


def _truncation(seconds: float | None, limit: float) -> str:
    length = f"{seconds:.1f} s" if seconds is not None else "longer"
    return f"audio clip of {length} decoded up to {limit:g} s (limits.max_audio_seconds)"


def _decode_soundfile(path: Path, limit_s: float) -> _Audio:
    import soundfile as sf

    declared = _wav_declared_bytes(path)
    if declared is not None and declared[1] < declared[0]:
        raise MediaError(f"{path}: truncated WAV ({declared[1]} of {declared[0]} data bytes present)")
    try:
        info = sf.info(str(path))
        keep = int(limit_s * info.samplerate)
        data, rate = sf.read(path, frames=keep, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as exc:
        raise MediaError(f"{path}: cannot decode audio ({exc})") from exc
    truncated = _truncation(info.frames / info.samplerate, limit_s) if info.frames > keep else None
    return _Audio(data.mean(axis=1, dtype=np.float32), int(rate), truncated)


def _decode_pyav(path: Path, limit_s: float) -> _Audio:
    import av

    _check_iso_bmff(path)
    try:
        container = av.open(str(path))
    except av.error.FFmpegError as exc:
        raise MediaError(f"{path}: not an audio file FFmpeg can open ({exc.strerror or exc})") from exc
    with container:
        if not container.streams.audio:
            raise MediaError(f"{path}: no audio stream")
        stream = container.streams.audio[0]
        rate = int(stream.codec_context.sample_rate or stream.rate or 0)
        if rate <= 0:
            raise MediaError(f"{path}: audio stream without a sample rate")
        keep = int(limit_s * rate)
        resampler = av.AudioResampler(format="fltp")  # planar float, the stream's own layout and rate
        parts: list[np.ndarray] = []
        have, more = 0, False  # samples kept; whether the clip goes on past the limit
        try:
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    block = out.to_ndarray().mean(axis=0, dtype=np.float32)  # [samples], channel mean
                    take = min(block.size, keep - have)
                    parts.append(block[:take])
                    have += take
                    more = more or take < block.size
                if more:  # at most one frame is decoded past the limit
                    break
        except av.error.FFmpegError as exc:
            raise MediaError(f"{path}: truncated or corrupt audio data ({exc.strerror or exc})") from exc
        seconds = float(stream.duration * stream.time_base) if stream.duration else None
        truncated = _truncation(seconds, limit_s) if more else None
    wave = np.concatenate(parts) if parts else np.zeros(0, np.float32)
    return _Audio(wave, rate, truncated)


def _decode(path: str | Path) -> _Audio:
    path = _existing(path)
    limit_s = _LIMITS.max_audio_seconds
    audio = _decode_soundfile(path, limit_s) if path.suffix.lower() in SOUNDFILE_SUFFIXES else _decode_pyav(path, limit_s)
    if audio.wave.size == 0:
        raise MediaError(f"{path}: audio has no samples")
    if not np.isfinite(audio.wave).all():
        raise MediaError(f"{path}: audio has non-finite samples")
    return _Audio(np.ascontiguousarray(audio.wave, dtype=np.float32), audio.rate, audio.truncated)


def decode_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """Decode an audio clip (its first ``limits.max_audio_seconds``) to mono float32 ``[N]`` at the file's own rate;
    returns (waveform, rate)."""
    audio = _decode(path)
    return audio.wave, audio.rate


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


# --- Probe ----------------------------------------------------------------------------------------------------------
def probe(kind: str, path: str | Path) -> dict[str, Any]:
    """Decode a file once as the extractors will and return its basic facts; raises :class:`MediaError` if it does not
    decode. ``truncated`` is set (to the reason) when the limits cut the clip short.

    ``kind`` is "image", "video" or "audio".
    """
    if kind == "image":
        arr = read_image(path)
        return {"height": arr.shape[0], "width": arr.shape[1], "truncated": None}
    if kind == "video":
        video = _open_video(path)
        n = video.usable
        frames = _get_frames(path, video, sorted({0, n // 2, n - 1})).shape
        return {"frames": video.frames, "fps": video.fps, "height": frames[1], "width": frames[2],
                "truncated": video.truncated}
    if kind == "audio":
        audio = _decode(path)
        return {"seconds": audio.wave.size / audio.rate, "sample_rate": audio.rate, "truncated": audio.truncated}
    raise ValueError(f"unknown media kind '{kind}' (expected image, video or audio)")
