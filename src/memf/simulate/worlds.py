"""Simulator worlds: latent structures whose effect on sales only a particular kind of fusion can see.

In the default world a linear function of per-entity pooled latents explains nearly all of the expected log(sales),
so a table on it rewards good pooling only. Each other world adds one **signal** term that needs more
(docs/simulator.md, "Worlds"):

- ``cross_modal``: an item sells when the colour its photo shows agrees with the colour its title names; neither
  modality alone carries any of it (entity-level fusion of an item's image and text);
- ``fit``: sales follow how well the anchor's field and audience price level fit the items' categories and price
  levels, a pure cross-entity interaction (no main effect of either entity);
- ``dynamics``: a stream whose video-clip energy rises sells more than one whose energy falls at the same mean, which
  only a model that sees the clip order can tell.

A world is a :class:`WorldModel`: it draws its latents from its own random stream ``[seed, WORLD_STREAM, code]``
(so every default latent and the noise stay those of the default world, stream by stream), computes its raw signal
from the latents, names the latent factors it adds to latents.parquet, credits its signal to entities, and states its
formula. What a world renders differently follows from the latents it sets (an item's colours, an anchor's field and
audience, the clip energies); the writer hands them to the renderers. The signal's share of the population variance
of the expected log(sales) is a setting: the default contributions are scaled by ``sqrt(1 - share)`` and the signal
gets sd ``sqrt(share * V0)`` (V0 the default world's variance), so the target's spread and the oracle R^2 stay those
of the default world.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np

from memf.core.registry import Registry
from memf.simulate.factors import FACTORS, Factor
from memf.simulate.latent import CALIBRATION_SEED, Latents, calibration_sample, ragged_mean
from memf.simulate.vocab import BROADCASTER_FIELDS, CATEGORIES, COLOURS, FIELD_SELLS

#: Code of the worlds' random streams: ``default_rng([seed, WORLD_STREAM, world.code])``.
WORLD_STREAM: int = 98
#: Probability that an item's title names the colour its photo shows (``cross_modal``); 1/2 maximises the signal.
AGREEMENT: float = 0.5
#: Sd of a stream's energy trend across its video clips (``dynamics``): energy moves by ``TREND_SD * tau`` from the
#: middle to the last clip, ``tau ~ N(0, 1)``; comparable to the clips' own spread (``latent.CLIP_SD``).
TREND_SD: float = 0.5


#: The worlds by name, in registration order: ``simulator.world`` names one of these.
WORLDS: Registry[type[WorldModel]] = Registry("world")


def register_world(cls: type[WorldModel]) -> type[WorldModel]:
    """Class decorator adding a world to :data:`WORLDS` under its ``name``."""
    return WORLDS.register(cls.name)(cls)


@register_world
class WorldModel:
    """The default world: no latents beyond the default ones and no signal term. Subclasses add one signal."""

    name: ClassVar[str] = "default"
    code: ClassVar[int] = 0
    #: Settings (``simulator.worlds.<name>``) and their defaults.
    defaults: ClassVar[dict[str, float]] = {}
    #: Latent factors the world adds to latents.parquet.
    factors: ClassVar[tuple[Factor, ...]] = ()
    #: Default factors the world renders in other media than the default world: (entity, factor) -> routes.
    reroutes: ClassVar[dict[tuple[str, str], tuple[str, ...]]] = {}
    formula: ClassVar[str] = (
        "expected_log_sales = log_sales_mean + sum of contrib_X over X in anchor, commodity, room, video, audio, "
        "interaction (docs/simulator.md, 'Contributions to log(sales)')"
    )

    def __init__(self, settings: dict[str, float] | None = None):
        self.settings = {**self.defaults, **(settings or {})}

    @property
    def share(self) -> float:
        """Share of the population variance of the expected log(sales) carried by the world's signal."""
        return float(self.settings.get("share", 0.0))

    def all_factors(self) -> tuple[Factor, ...]:
        """Every latent factor of the world, the default ones first, each with the routes of the media that render
        it in this world."""
        default = tuple(dataclasses.replace(f, routes=self.reroutes.get((f.entity, f.name), f.routes)) for f in FACTORS)
        return default + self.factors

    def extend(self, rng: np.random.Generator, lat: Latents) -> Latents:
        """The latents with the world's own drawn (from ``rng``) or changed; the default world's are kept."""
        return lat

    def signals(self, lat: Latents) -> dict[str, np.ndarray]:
        """Raw signal term(s), name -> [S], before standardisation; none in the default world."""
        return {}

    def credit(self) -> dict[str, dict[str, float]]:
        """Signal -> entity -> share of the signal's covariance credited to that entity (entity importance)."""
        return {}


class SignalWorld(WorldModel, ABC):
    """A world with one signal term ``contrib_<signal>`` credited to ``entities``."""

    signal: ClassVar[str]
    entities: ClassVar[dict[str, float]]
    defaults: ClassVar[dict[str, float]] = {"share": 0.3}

    @abstractmethod
    def raw_signal(self, lat: Latents) -> np.ndarray:
        """[S] the world's signal before standardisation."""

    def signals(self, lat: Latents) -> dict[str, np.ndarray]:
        return {self.signal: self.raw_signal(lat)}

    def credit(self) -> dict[str, dict[str, float]]:
        return {self.signal: dict(self.entities)}


@register_world
class CrossModalWorld(SignalWorld):
    """Each item's photo shows a colour family and its title names one; they agree with probability
    :data:`AGREEMENT`. The photo colour is uniform and the title names it or, if not, another colour uniformly, so
    each side alone is independent of the agreement: only the pair within one item carries the signal."""

    name = "cross_modal"
    code = 1
    signal = "match"
    entities = {"commodity": 1.0}
    factors = (
        # the photo's hue and the product's colour
        Factor("commodity", "photo_colour", "item_photo_colour", ("commodity/image",), f"categorical({len(COLOURS)})"),
        # the colour word of the title
        Factor("commodity", "title_colour", "item_title_colour", ("commodity/text",), f"categorical({len(COLOURS)})"),
    )
    # The photo's hue is the colour's, no longer the category's.
    reroutes = {("commodity", "category"): ("commodity/text", "room/text")}
    formula = (
        "M = mean_j (2*[photo_colour_j == title_colour_j] - 1) over the stream's items; contrib_match = "
        "effects.match * (M - mu_M) / sd_M; the default contributions are scaled by sqrt(1 - share)"
    )

    def extend(self, rng: np.random.Generator, lat: Latents) -> Latents:
        n, k = len(lat.item_appeal), len(COLOURS)
        photo = rng.integers(k, size=n)
        agree = rng.random(n) < AGREEMENT
        other = (photo + rng.integers(1, k, size=n)) % k
        return dataclasses.replace(lat, item_photo_colour=photo, item_title_colour=np.where(agree, photo, other))

    def raw_signal(self, lat: Latents) -> np.ndarray:
        match = 2.0 * (lat.item_photo_colour == lat.item_title_colour) - 1.0
        return ragged_mean(match, lat.item_offsets)


def _field_fit() -> np.ndarray:
    """[F, C] fit of anchor field f with item category c: whether the field sells the category
    (:data:`vocab.FIELD_SELLS`), double-centred under the population weights of fields and categories (so it has no
    main effect of either) and scaled to population sd 1."""
    sells = np.array([[cat.en in FIELD_SELLS[field] for cat in CATEGORIES] for field, _, _ in BROADCASTER_FIELDS],
                     dtype=np.float64)
    w = np.array([weight for _, weight, _ in BROADCASTER_FIELDS])
    pi = np.array([cat.weight for cat in CATEGORIES])
    w, pi = w / w.sum(), pi / pi.sum()
    centred = sells - (sells @ pi)[:, None] - (w @ sells)[None, :] + w @ sells @ pi
    return centred / math.sqrt(w @ centred**2 @ pi)


@register_world
class FitWorld(SignalWorld):
    """Each anchor has a field (written as its ``broadCasterField``, drawn with the field weights) and an audience
    price level ``b ~ N(0, 1)`` (an audience tag); an item fits when the field sells its category and when its price
    level matches the audience's. Both parts are centred so neither entity alone predicts the fit."""

    name = "fit"
    code = 2
    signal = "fit"
    entities = {"anchor": 0.5, "commodity": 0.5}
    factors = (
        # broadCasterField and the categoryName that goes with it
        Factor("anchor", "field", "anchor_field", ("anchor/text",), f"categorical({len(BROADCASTER_FIELDS)})"),
        Factor("anchor", "audience", "anchor_audience", ("anchor/text",)),  # the audience tag among the tags
    )
    formula = (
        "F = mean_j (fit(field_a, category_j) + b_a * p_j) over the stream's items, fit the double-centred "
        "field-sells-category table with population sd 1, b_a the audience price level, p_j the item price level; "
        "contrib_fit = effects.fit * (F - mu_F) / sd_F; the default contributions are scaled by sqrt(1 - share)"
    )
    table: ClassVar[np.ndarray] = _field_fit()

    def extend(self, rng: np.random.Generator, lat: Latents) -> Latents:
        n = len(lat.anchor_reach)
        w = np.array([weight for _, weight, _ in BROADCASTER_FIELDS])
        return dataclasses.replace(lat, anchor_field=rng.choice(len(w), size=n, p=w / w.sum()),
                                   anchor_audience=rng.standard_normal(n))

    def raw_signal(self, lat: Latents) -> np.ndarray:
        anchor = lat.stream_anchor[lat.item_stream()]  # [I] anchor of each item
        category_fit = self.table[lat.anchor_field[anchor], lat.item_category]
        per_item = category_fit + lat.anchor_audience[anchor] * lat.item_price
        return ragged_mean(per_item, lat.item_offsets)


def clip_position_scale(offsets: np.ndarray) -> np.ndarray:
    """[clips] each clip's position within its stream mapped linearly onto [-1, 1] (0 for a lone clip)."""
    counts = np.diff(offsets)
    stream = np.repeat(np.arange(len(counts)), counts)
    position = np.arange(int(offsets[-1])) - offsets[:-1][stream]
    half = (counts[stream] - 1) / 2.0
    return np.divide(position - half, half, out=np.zeros(len(position)), where=half > 0)


def clip_slope(values: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """[S] least-squares slope of each stream's clip values on the clip's centred position, scaled so the positions
    run from -1 (first clip) to 1 (last); 0 for a stream with one clip."""
    counts = np.diff(offsets)
    stream = np.repeat(np.arange(len(counts)), counts)
    z = clip_position_scale(offsets)
    centred = values - ragged_mean(values, offsets)[stream]
    zz = np.add.reduceat(z * z, offsets[:-1])
    zv = np.add.reduceat(z * centred, offsets[:-1])
    return np.divide(zv, zz, out=np.zeros(len(counts)), where=zz > 0)


@register_world
class DynamicsWorld(SignalWorld):
    """Each stream's video-clip energy follows a linear trend over the clip positions, ``TREND_SD * tau_s`` from the
    middle to the last clip, ``tau_s ~ N(0, 1)``. The trend has mean 0 over the clips, so the stream's mean energy
    (the video contribution) is unchanged; the signal is the realised slope, whose sign no order-free summary of the
    clips can tell (reversing the clips flips it and is as likely)."""

    name = "dynamics"
    code = 3
    signal = "trend"
    entities = {"video": 1.0}
    formula = (
        "D = least-squares slope of the stream's video clip energies e_i on their position scaled to [-1, 1] "
        "(0 for one clip); contrib_trend = effects.trend * (D - mu_D) / sd_D; the default contributions are scaled "
        "by sqrt(1 - share)"
    )

    def extend(self, rng: np.random.Generator, lat: Latents) -> Latents:
        tau = rng.standard_normal(lat.n_streams)
        stream = np.repeat(np.arange(lat.n_streams), np.diff(lat.video_offsets))
        trend = TREND_SD * tau[stream] * clip_position_scale(lat.video_offsets)
        return dataclasses.replace(lat, video_energy=lat.video_energy + trend)

    def raw_signal(self, lat: Latents) -> np.ndarray:
        return clip_slope(lat.video_energy, lat.video_offsets)


def world_rng(seed: int, model: WorldModel) -> np.random.Generator:
    """The world's own random stream (independent of the default latents and of the noise)."""
    return np.random.default_rng([seed, WORLD_STREAM, model.code])


@functools.lru_cache(maxsize=16)
def signal_calibration(name: str, items_per_stream: tuple[int, int], clips_per_stream: tuple[int, int]
                       ) -> dict[str, tuple[float, float]]:
    """Population (mean, sd) of the world's raw signal, on the calibration sample extended with the world's latents
    (fixed seed; the settings do not enter the raw signal)."""
    model = WORLDS[name]()
    lat = model.extend(world_rng(CALIBRATION_SEED, model), calibration_sample(items_per_stream, clips_per_stream))
    return {signal: (float(v.mean()), float(v.std())) for signal, v in model.signals(lat).items()}


def describe(model: WorldModel) -> dict[str, Any]:
    """The world as recorded in ground_truth.json: name, settings, formula and how its signal is credited."""
    return {"name": model.name, "settings": dict(model.settings), "formula": model.formula, "credit": model.credit()}
