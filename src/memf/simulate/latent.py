"""Latent factors of the default world and their raw contributions to log(sales) (docs/simulator.md has the formulas).

Every quantity here is a plain NumPy array; nothing is rendered. The worlds (:mod:`memf.simulate.worlds`) add their
own latents to these; :mod:`memf.simulate.truth` turns them into the ground truth.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from memf.simulate.vocab import CATEGORIES

#: Correlation of the anchor's latents with what the anchor sells and shows: item appeal and room attractiveness
#: follow the anchor's reach, video and audio energy follow the anchor's skill (strong anchors get strong goods and
#: produce lively streams). It makes the entity contributions positively correlated, which lifts the sd of log(sales)
#: with the default effects from 0.98 (no coupling) to the paper's ~1.07 (Table 5), measured on 2,000 streams.
COUPLING: float = 0.2
#: Spread of one clip's energy or tempo around its stream's level.
CLIP_SD: float = 0.5
#: Weights of the commodity-set summary (before standardisation): best appeal, mean discount depth, mean price level,
#: price spread (population sd of the items' price levels) and log of the number of items.
COMMODITY_WEIGHTS: dict[str, float] = {
    "best_appeal": 1.0, "discount": 0.5, "price": -0.4, "spread": 0.3, "n_items": 0.3,
}
#: Mix of clip energy and tempo in the audio contribution.
AUDIO_WEIGHTS: dict[str, float] = {"energy": 0.8, "tempo": 0.6}
#: Mix of room attractiveness and the duration latent in the room contribution.
ROOM_WEIGHTS: dict[str, float] = {"attractiveness": 0.8, "duration": 0.6}
#: Monte Carlo draws that fix each raw contribution's population mean and sd (independent of the user's seed).
CALIBRATION_STREAMS: int = 60_000
CALIBRATION_SEED: int = 20211001
#: The contributions in ground-truth order; ``noise`` is drawn separately.
CONTRIBUTIONS: tuple[str, ...] = ("anchor", "commodity", "room", "video", "audio", "interaction")


@dataclass(frozen=True)
class Latents:
    """All latent factors. S streams, A anchors, I items, V video clips, U audio clips; ``*_offsets`` are [S + 1]
    CSR offsets: the items of stream s are ``item_*[item_offsets[s]:item_offsets[s + 1]]`` (same for clips)."""

    anchor_reach: np.ndarray  # [A]
    anchor_skill: np.ndarray  # [A]
    stream_anchor: np.ndarray  # [S] int, index into the anchors
    room_attractiveness: np.ndarray  # [S]
    room_duration: np.ndarray  # [S] latent of the stream's length
    item_offsets: np.ndarray  # [S + 1]
    item_appeal: np.ndarray  # [I]
    item_price: np.ndarray  # [I] price level within the item's category
    item_discount: np.ndarray  # [I] discount depth
    item_category: np.ndarray  # [I] int, index into vocab.CATEGORIES
    video_offsets: np.ndarray  # [S + 1]
    video_energy: np.ndarray  # [V]
    audio_offsets: np.ndarray  # [S + 1]
    audio_energy: np.ndarray  # [U]
    audio_tempo: np.ndarray  # [U]
    # Latents that only some worlds draw (memf.simulate.worlds); None in the others.
    item_photo_colour: np.ndarray | None = None  # [I] int, index into vocab.COLOURS: the colour the photo shows
    item_title_colour: np.ndarray | None = None  # [I] int, index into vocab.COLOURS: the colour the title names
    anchor_field: np.ndarray | None = None  # [A] int, index into vocab.BROADCASTER_FIELDS
    anchor_audience: np.ndarray | None = None  # [A] price level of the anchor's audience

    @property
    def n_streams(self) -> int:
        return len(self.stream_anchor)

    def item_stream(self) -> np.ndarray:
        """[I] stream index of each item."""
        return np.repeat(np.arange(self.n_streams), np.diff(self.item_offsets))


def _ragged_counts(rng: np.random.Generator, n: int, bounds: tuple[int, int]) -> np.ndarray:
    return rng.integers(bounds[0], bounds[1] + 1, size=n)


def _offsets(counts: np.ndarray) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)


def _assign_anchors(rng: np.random.Generator, n_streams: int, n_anchors: int) -> np.ndarray:
    """Each anchor gets one stream (while streams last); the others go to anchors with heavy-tailed popularity."""
    first = rng.permutation(n_anchors)[: min(n_anchors, n_streams)]
    popularity = rng.gamma(0.7, size=n_anchors)
    rest = rng.choice(n_anchors, size=n_streams - len(first), p=popularity / popularity.sum())
    return rng.permutation(np.concatenate([first, rest])).astype(np.int64)


def draw_latents(
    rng: np.random.Generator,
    n_streams: int,
    n_anchors: int,
    items_per_stream: tuple[int, int],
    clips_per_stream: tuple[int, int],
) -> Latents:
    """Draw every latent factor (see docs/simulator.md, "Latent factors")."""
    c, s = COUPLING, math.sqrt(1.0 - COUPLING**2)
    reach = rng.standard_normal(n_anchors)
    skill = rng.standard_normal(n_anchors)
    anchor = _assign_anchors(rng, n_streams, n_anchors)
    n_items = _ragged_counts(rng, n_streams, items_per_stream)
    n_video = _ragged_counts(rng, n_streams, clips_per_stream)
    n_audio = _ragged_counts(rng, n_streams, clips_per_stream)
    r, k = reach[anchor], skill[anchor]  # [S]
    room = c * r + s * rng.standard_normal(n_streams)
    duration = rng.standard_normal(n_streams)
    video_level = c * k + s * rng.standard_normal(n_streams)
    audio_level = c * k + s * rng.standard_normal(n_streams)
    tempo_level = rng.standard_normal(n_streams)

    n_total = int(n_items.sum())
    item_r = np.repeat(r, n_items)
    appeal = c * item_r + s * rng.standard_normal(n_total)
    price = rng.standard_normal(n_total)
    discount = rng.standard_normal(n_total)
    weights = np.array([cat.weight for cat in CATEGORIES])
    category = rng.choice(len(CATEGORIES), size=n_total, p=weights / weights.sum())

    video_energy = np.repeat(video_level, n_video) + CLIP_SD * rng.standard_normal(int(n_video.sum()))
    n_au = int(n_audio.sum())
    audio_energy = np.repeat(audio_level, n_audio) + CLIP_SD * rng.standard_normal(n_au)
    audio_tempo = np.repeat(tempo_level, n_audio) + CLIP_SD * rng.standard_normal(n_au)
    return Latents(
        anchor_reach=reach, anchor_skill=skill, stream_anchor=anchor,
        room_attractiveness=room, room_duration=duration,
        item_offsets=_offsets(n_items), item_appeal=appeal, item_price=price, item_discount=discount,
        item_category=category.astype(np.int64),
        video_offsets=_offsets(n_video), video_energy=video_energy,
        audio_offsets=_offsets(n_audio), audio_energy=audio_energy, audio_tempo=audio_tempo,
    )


def ragged_mean(values: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """[S] mean of each stream's values (CSR ``offsets``, every stream non-empty)."""
    return np.add.reduceat(values, offsets[:-1]) / np.diff(offsets)


def raw_contributions(lat: Latents) -> dict[str, np.ndarray]:
    """Unscaled per-stream contributions ([S] each), before standardisation to the configured sds."""
    r = lat.anchor_reach[lat.stream_anchor]
    k = lat.anchor_skill[lat.stream_anchor]
    off = lat.item_offsets
    best = np.maximum.reduceat(lat.item_appeal, off[:-1])
    mean_price = ragged_mean(lat.item_price, off)
    spread = np.sqrt(np.maximum(ragged_mean(lat.item_price**2, off) - mean_price**2, 0.0))
    w = COMMODITY_WEIGHTS
    commodity = (
        w["best_appeal"] * best
        + w["discount"] * ragged_mean(lat.item_discount, off)
        + w["price"] * mean_price
        + w["spread"] * spread
        + w["n_items"] * np.log(np.diff(off))
    )
    audio_clip = AUDIO_WEIGHTS["energy"] * lat.audio_energy + AUDIO_WEIGHTS["tempo"] * lat.audio_tempo
    return {
        "anchor": (r + k) / math.sqrt(2.0),
        "commodity": commodity,
        "room": ROOM_WEIGHTS["attractiveness"] * lat.room_attractiveness + ROOM_WEIGHTS["duration"] * lat.room_duration,
        "video": ragged_mean(lat.video_energy, lat.video_offsets),
        "audio": ragged_mean(audio_clip, lat.audio_offsets),
        "interaction": k * best,
    }


@functools.lru_cache(maxsize=4)
def calibration_sample(items_per_stream: tuple[int, int], clips_per_stream: tuple[int, int]) -> Latents:
    """The Monte Carlo population (fixed seed, one anchor per stream) that the calibrations are measured on."""
    rng = np.random.default_rng(CALIBRATION_SEED)
    return draw_latents(rng, CALIBRATION_STREAMS, CALIBRATION_STREAMS, items_per_stream, clips_per_stream)


@functools.lru_cache(maxsize=16)
def calibration(items_per_stream: tuple[int, int], clips_per_stream: tuple[int, int]) -> dict[str, tuple[float, float]]:
    """Population (mean, sd) of each raw contribution, by Monte Carlo with a fixed seed.

    Standardising with population values (not the sample's) keeps a stream's contribution independent of the other
    streams drawn, so a dataset of 20 streams and one of 20,000 follow the same law.
    """
    lat = calibration_sample(items_per_stream, clips_per_stream)
    return {name: (float(v.mean()), float(v.std())) for name, v in raw_contributions(lat).items()}


@functools.lru_cache(maxsize=16)
def population_variance(items_per_stream: tuple[int, int], clips_per_stream: tuple[int, int],
                        effects: tuple[float, ...]) -> float:
    """Population variance of the default world's expected log(sales) when contribution ``CONTRIBUTIONS[i]`` has sd
    ``effects[i]``: the sum of the contributions' variances and covariances (they are correlated through the
    coupling), on the calibration sample."""
    lat = calibration_sample(items_per_stream, clips_per_stream)
    cal = calibration(items_per_stream, clips_per_stream)
    raw = raw_contributions(lat)
    total = sum(sd * (raw[name] - cal[name][0]) / cal[name][1] for name, sd in zip(CONTRIBUTIONS, effects, strict=True))
    return float(np.var(total))
