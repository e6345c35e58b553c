"""Rendering latents into media bytes: images (JPEG/PNG), H.264 MP4 clips (PyAV) and mono WAV clips (soundfile).

The downstream demo extracts features with random-initialised networks, so each latent drives a global, simple
property that such features keep (docs/simulator.md, "Rendering"):

- images: brightness, saturation, hue and stripe frequency of the whole picture;
- video: background brightness and the speed of moving discs;
- audio: loudness and pitch of a harmonic tone, and the tempo of its beat.
"""

from __future__ import annotations

import colorsys
import io
import math

import av
import numpy as np
import soundfile as sf
from PIL import Image

from memf.simulate.vocab import CATEGORIES, COLOURS

#: Encodings of generated images: name -> (file suffix, Pillow mode, Pillow format). Non-RGB modes exercise the
#: pipeline's conversion to RGB.
IMAGE_ENCODINGS: dict[str, tuple[str, str, str]] = {
    "jpeg": (".jpg", "RGB", "JPEG"),
    "jpeg_grey": (".jpg", "L", "JPEG"),
    "png": (".png", "RGB", "PNG"),
    "png_rgba": (".png", "RGBA", "PNG"),
    "png_palette": (".png", "P", "PNG"),
    "png_grey": (".png", "L", "PNG"),
}
#: Share of each encoding per kind of image.
IMAGE_MIX: dict[str, dict[str, float]] = {
    "anchor": {"jpeg": 0.7, "png": 0.15, "png_rgba": 0.15},
    "item": {"jpeg": 0.6, "png": 0.2, "png_palette": 0.1, "png_grey": 0.1},
    # cross_modal world: a product's colour carries signal, so its photo is never greyscale.
    "item_colour": {"jpeg": 0.6, "png": 0.3, "png_palette": 0.1},
    "room": {"jpeg": 0.8, "jpeg_grey": 0.1, "png_rgba": 0.1},
}


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.asarray(colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0)))


def _picture(
    rng: np.random.Generator, size: int, hue: float, sat: float, val: float, freq: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Striped background in one colour. Returns ([H, W, 3] float image in [0, 1], yy, xx grids in [0, 1))."""
    yy, xx = np.mgrid[0:size, 0:size] / size  # [H, W] each
    angle = rng.uniform(0, math.pi)
    stripes = np.sin(2 * math.pi * freq * (xx * math.cos(angle) + yy * math.sin(angle)) + rng.uniform(0, 2 * math.pi))
    img = _hsv(hue, sat, val)[None, None, :] * (1.0 + 0.3 * stripes)[..., None]  # [H, W, 3]
    return img, yy, xx


def _blob(img: np.ndarray, yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, ry: float, rx: float,
          colour: np.ndarray) -> None:
    inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1.0
    img[inside] = colour


def _to_uint8(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    img = img + rng.normal(0.0, 0.015, size=img.shape)
    return (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def anchor_avatar(rng: np.random.Generator, size: int, reach: float, skill: float) -> np.ndarray:
    """[H, W, 3] uint8 avatar: brightness follows reach, saturation and stripe frequency follow skill; a face-like
    oval on top."""
    val = 0.25 + 0.7 * sigmoid(1.2 * reach)
    sat = 0.1 + 0.85 * sigmoid(1.5 * skill)
    img, yy, xx = _picture(rng, size, rng.random(), sat, val, 2.0 + 10.0 * sigmoid(1.2 * skill))
    skin = _hsv(0.07 + 0.03 * rng.random(), 0.35 + 0.2 * rng.random(), val)
    _blob(img, yy, xx, 0.5 + 0.05 * rng.standard_normal(), 0.5 + 0.05 * rng.standard_normal(), 0.3, 0.22, skin)
    return _to_uint8(rng, img)


def item_photo(
    rng: np.random.Generator, size: int, appeal: float, price: float, discount: float, category: int,
    colour: int | None = None,
) -> np.ndarray:
    """[H, W, 3] uint8 product photo: saturation and brightness follow appeal, stripe frequency the price level,
    the height of a red "sale" banner the discount depth; the hue is the category's and the product (an oval) has the
    complementary hue. With ``colour`` (an index into ``vocab.COLOURS``, ``cross_modal`` world) the whole photo takes
    that colour's hue instead, the product is drawn in it at saturation 0.9, so the colour shows whatever the item's
    appeal, and the banner is white, so the photo's mean hue is the colour's (the random draws are the default
    photo's)."""
    jitter = rng.standard_normal()
    hue = CATEGORIES[category].hue + 0.04 * jitter if colour is None else COLOURS[colour].hue + 0.015 * jitter
    sat = 0.15 + 0.8 * sigmoid(1.5 * appeal)
    val = 0.3 + 0.65 * sigmoid(1.2 * appeal)
    img, yy, xx = _picture(rng, size, hue, sat, val, 1.5 + 12.0 * sigmoid(1.2 * price))
    product = _hsv(hue + 0.5, sat * 0.6, val) if colour is None else _hsv(hue, 0.9, max(val, 0.6))
    _blob(img, yy, xx, rng.uniform(0.35, 0.55), rng.uniform(0.35, 0.65), rng.uniform(0.15, 0.3),
          rng.uniform(0.12, 0.25), product)
    banner = 0.05 + 0.35 * sigmoid(1.5 * discount)
    img[yy > 1.0 - banner] = _hsv(0.0, 0.9, 0.9) if colour is None else _hsv(0.0, 0.0, 0.95)
    return _to_uint8(rng, img)


def room_cover(rng: np.random.Generator, size: int, attractiveness: float, hue: float) -> np.ndarray:
    """[H, W, 3] uint8 room cover: brightness and saturation follow the room's attractiveness; ``hue`` is the room's
    colour (its video clips share it)."""
    img, _, _ = _picture(rng, size, hue, 0.2 + 0.7 * sigmoid(attractiveness),
                           0.25 + 0.7 * sigmoid(1.2 * attractiveness), rng.uniform(2.0, 6.0))
    return _to_uint8(rng, img)


def choose_encoding(rng: np.random.Generator, kind: str) -> str:
    """Draw an encoding name for an image of ``kind`` ("anchor", "item", "room") from :data:`IMAGE_MIX`."""
    names = list(IMAGE_MIX[kind])
    p = np.asarray([IMAGE_MIX[kind][n] for n in names])
    return names[int(rng.choice(len(names), p=p / p.sum()))]


def encode_image(rgb: np.ndarray, encoding: str) -> bytes:
    """Encode an [H, W, 3] uint8 image with one of :data:`IMAGE_ENCODINGS`."""
    _, mode, fmt = IMAGE_ENCODINGS[encoding]
    img = Image.fromarray(rgb, mode="RGB")
    if mode == "RGBA":
        alpha = np.repeat(np.linspace(128, 255, rgb.shape[0]).astype(np.uint8)[:, None], rgb.shape[1], axis=1)
        img = Image.fromarray(np.dstack([rgb, alpha]), mode="RGBA")
    elif mode == "P":
        img = img.quantize(colors=64, method=Image.Quantize.FASTOCTREE)
    elif mode != "RGB":
        img = img.convert(mode)
    buf = io.BytesIO()
    img.save(buf, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buf.getvalue()


def video_frames(rng: np.random.Generator, energy: float, size: int, frames: int, hue: float) -> np.ndarray:
    """[T, H, W, 3] uint8 frames: background brightness and the discs' speed both rise with ``energy``."""
    val = 0.15 + 0.75 * sigmoid(1.2 * energy)
    ramp = 0.85 + 0.3 * np.arange(size) / size  # [H] vertical light gradient
    background = _hsv(hue, 0.35, val)[None, :] * ramp[:, None]  # [H, 3]
    speed = 1.2 * math.exp(0.7 * energy) * size / 64.0  # pixels per frame
    n_discs = 3
    radius = rng.uniform(0.08, 0.14, n_discs) * size  # [N]
    pos = rng.uniform(radius[:, None], size - radius[:, None], (n_discs, 2))  # [N, (y, x)]
    angle = rng.uniform(0, 2 * math.pi, n_discs)
    vel = speed * np.stack([np.sin(angle), np.cos(angle)], axis=1)  # [N, 2]
    colours = np.stack([_hsv(rng.random(), 0.8, 0.95) for _ in range(n_discs)])  # [N, 3]
    track = np.empty((frames, n_discs, 2))  # [T, N, 2]
    for t in range(frames):
        track[t] = pos
        pos = pos + vel
        out_of_bounds = (pos < radius[:, None]) | (pos > size - radius[:, None])  # bounce off the walls
        vel = np.where(out_of_bounds, -vel, vel)
        pos = np.clip(pos, radius[:, None], size - radius[:, None])
    grid = np.arange(size, dtype=np.float64)
    dy = (grid[None, None, :] - track[..., 0:1]) ** 2  # [T, N, H]
    dx = (grid[None, None, :] - track[..., 1:2]) ** 2  # [T, N, W]
    inside = dy[..., :, None] + dx[..., None, :] < (radius**2)[None, :, None, None]  # [T, N, H, W]
    # Label 0 is the background, n + 1 the n-th disc (the last disc drawn on top); colours by lookup per row.
    label = np.max(inside * np.arange(1, n_discs + 1)[None, :, None, None], axis=1)  # [T, H, W]
    lut = np.concatenate([background[:, None, :], np.broadcast_to(colours[None], (size, n_discs, 3))], axis=1)
    lut = (np.clip(lut, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)  # [H, N + 1, 3]
    return lut[np.arange(size)[None, :, None], label]  # [T, H, W, 3]


def encode_video(frames: np.ndarray, fps: int) -> bytes:
    """H.264 (yuv420p) MP4 of [T, H, W, 3] uint8 frames, reproducible to the byte: one encoder thread and a constant
    quantiser. (With ``crf`` rate control, x264's macroblock-tree and adaptive quantisation gave the same frames
    different bytes in about one clip in ten, within one process.)"""
    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.codec_context.thread_count = 1
        stream.options = {"preset": "veryfast", "qp": "20"}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode(None))
    return buf.getvalue()


def audio_wave(rng: np.random.Generator, energy: float, tempo: float, seconds: float, sample_rate: int) -> np.ndarray:
    """[N] float32 mono waveform: a harmonic tone whose loudness and pitch rise with ``energy``, pulsed at a beat
    rate that rises with ``tempo``."""
    t = np.arange(int(round(seconds * sample_rate)), dtype=np.float32) / np.float32(sample_rate)
    amplitude = 0.08 + 0.6 * sigmoid(1.2 * energy)
    f0 = min(220.0 * 2.0 ** (0.5 * energy), 0.15 * sample_rate)  # Hz; the third harmonic stays below Nyquist
    beats = 2.0 ** (1.2 + 0.6 * tempo)  # per second
    envelope = np.square(0.5 * (1.0 + np.sin(np.float32(2 * math.pi * beats) * t + np.float32(rng.uniform(0, 6.28)))))
    base = np.float32(2 * math.pi * f0) * t + np.float32(rng.uniform(0, 2 * math.pi))
    tone = (np.sin(base) + 0.5 * np.sin(2 * base) + 0.25 * np.sin(3 * base)) / np.float32(1.75)
    wave = np.float32(amplitude) * (0.2 + 0.8 * envelope) * tone
    wave += 0.01 * rng.standard_normal(len(t), dtype=np.float32)
    return np.clip(wave, -1.0, 1.0)


def encode_wav(wave: np.ndarray, sample_rate: int) -> bytes:
    """16-bit PCM mono WAV."""
    buf = io.BytesIO()
    sf.write(buf, wave, sample_rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()
