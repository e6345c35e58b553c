"""Which objects the simulator writes defective, and how (``simulator.defects``; all 0 in the demo).

Each switch is a fraction of the objects it applies to; a positive fraction damages at least one object. Objects are
drawn with their own random stream (``[seed, DEFECT_STREAM]``), so switching defects on leaves every other value of
the dataset unchanged. The writer records every damaged object in ``defects.parquet``.

- ``missing_modality`` (streams): one of ``item_text_null`` (a commodity text field is null), ``room_image_null``
  (the room image field is null) or ``no_audio_clips`` (the stream has no audio clip rows); the variants that the
  column mapping allows are drawn uniformly.
- ``corrupt_image`` (image files): random bytes saved under a ``.jpg`` name.
- ``truncated_video`` (video clips): the MP4 cut to half its bytes (the index, written last, is lost).
- ``corrupt_audio`` (audio clips): the WAV cut inside its 44-byte header.
- ``no_audio_stream`` (audio clips, disjoint from ``corrupt_audio``): the row points at an MP4 holding video only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

DEFECT_STREAM: int = 99
#: Bytes of a WAV kept by ``corrupt_audio``: inside the RIFF/fmt header.
WAV_HEADER_KEEP: int = 30


@dataclass
class DefectPlan:
    """Damaged objects, by index into the simulator's arrays."""

    missing: dict[int, tuple[str, int, str]] = field(default_factory=dict)  # stream -> (variant, item or -1, column)
    corrupt_images: set[tuple[str, int]] = field(default_factory=set)  # ("anchor" | "item" | "room", index)
    truncated_videos: set[int] = field(default_factory=set)
    corrupt_audio: set[int] = field(default_factory=set)
    no_audio_stream: set[int] = field(default_factory=set)


def _count(fraction: float, n: int) -> int:
    if fraction <= 0 or n == 0:
        return 0
    return min(n, max(1, round(fraction * n)))


def _sample(rng: np.random.Generator, pool: list, fraction: float) -> list:
    k = _count(fraction, len(pool))
    return [pool[i] for i in sorted(rng.choice(len(pool), size=k, replace=False))] if k else []


def plan_defects(
    seed: int,
    fractions: dict[str, float],
    item_offsets: np.ndarray,
    audio_offsets: np.ndarray,
    n_video: int,
    anchors_used: list[int],
    item_text_columns: list[str],
    image_columns: dict[str, str | None],
) -> DefectPlan:
    """Draw the damaged objects.

    Args:
        seed: the simulator seed.
        fractions: ``simulator.defects``.
        item_offsets, audio_offsets: [S + 1] CSR offsets of items and audio clips per stream.
        n_video: number of video clips.
        anchors_used: indices of the anchors that have streams.
        item_text_columns: commodity text columns written (for ``item_text_null``).
        image_columns: entity ("anchor", "commodity", "room") -> its image column, or None when not written.
    """
    rng = np.random.default_rng([seed, DEFECT_STREAM])
    plan = DefectPlan()
    n_streams = len(item_offsets) - 1
    allowed = {
        "item_text_null": bool(item_text_columns),
        "room_image_null": image_columns["room"] is not None,
        "no_audio_clips": True,
    }
    variants = [v for v, ok in allowed.items() if ok]
    for s in _sample(rng, list(range(n_streams)), fractions["missing_modality"]):
        variant = variants[int(rng.integers(len(variants)))]
        if variant == "item_text_null":
            item = int(rng.integers(item_offsets[s], item_offsets[s + 1]))
            plan.missing[s] = (variant, item, item_text_columns[int(rng.integers(len(item_text_columns)))])
        elif variant == "room_image_null":
            plan.missing[s] = (variant, -1, image_columns["room"])
        else:
            plan.missing[s] = (variant, -1, "")

    images: list[tuple[str, int]] = []
    if image_columns["anchor"] is not None:
        images += [("anchor", a) for a in anchors_used]
    if image_columns["commodity"] is not None:
        images += [("item", i) for i in range(int(item_offsets[-1]))]
    if image_columns["room"] is not None:
        images += [("room", s) for s in range(n_streams) if plan.missing.get(s, ("",))[0] != "room_image_null"]
    plan.corrupt_images = set(_sample(rng, images, fractions["corrupt_image"]))
    plan.truncated_videos = set(_sample(rng, list(range(n_video)), fractions["truncated_video"]))

    audio = [
        c for s in range(n_streams) if plan.missing.get(s, ("",))[0] != "no_audio_clips"
        for c in range(int(audio_offsets[s]), int(audio_offsets[s + 1]))
    ]
    plan.corrupt_audio = set(_sample(rng, audio, fractions["corrupt_audio"]))
    rest = [c for c in audio if c not in plan.corrupt_audio]
    plan.no_audio_stream = set(_sample(rng, rest, fractions["no_audio_stream"]))
    return plan


def garbage_bytes(rng: np.random.Generator, n: int = 2048) -> bytes:
    """Random bytes that no image decoder accepts (they never start with a JPEG or PNG signature)."""
    data = bytearray(rng.bytes(n))
    data[0] = 0x00
    return bytes(data)
