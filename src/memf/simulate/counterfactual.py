"""Counterfactual truth of what-if variants of simulated streams (docs/simulator.md, "Counterfactual truth").

A merchant asks what a planned stream would sell with another anchor, other commodities or another room. On
simulated data the answer is known: the simulator's expected log(sales) of the stream run that way, computed from the
latent factors of the objects the variant names, with the formulas, effect sizes and **fixed** population
calibration of the world the dataset was simulated in (recorded in ``ground_truth.json``), so that predicted
rankings of variants can be checked against the truth::

    from memf.simulate.counterfactual import Variant, counterfactual_truth

    truth = counterfactual_truth("results/demo/raw", [
        Variant("s00012"),                                             # as planned
        Variant("s00012", anchor_id="a0007"),                          # another anchor
        Variant("s00012", items=("i000061", "i000062", "i000310")),    # drop an item, add one of another stream
        Variant("s00012", room_from="s00040", label="room of s00040"),
    ])

What a swap changes follows the generative model (memf.simulate.latent): the objects a variant names bring their own
latents, and the clips keep the planned stream's own draws, except that their stream level follows the anchor's
skill, so an anchor swap moves every video clip's energy and every audio clip's energy by ``coupling * (k_new -
k_planned)`` (audio tempo does not follow the anchor; nothing follows the room).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from memf.core.io import DataError, read_json
from memf.simulate.factors import Factor, read_latents
from memf.simulate.latent import Latents, raw_contributions
from memf.simulate.worlds import WORLDS, WorldModel

#: Clip latents whose stream level follows the anchor's skill (``level = coupling * k_a + sqrt(1 - coupling^2) *
#: N(0, 1)`` in :func:`memf.simulate.latent.draw_latents`): an anchor swap moves them by ``coupling * delta k``.
ANCHOR_DRIVEN_CLIPS: tuple[str, ...] = ("video_energy", "audio_energy")
#: Where each entity's latents live: the :class:`Latents` axis they are indexed by.
_AXIS: dict[str, str] = {"anchor": "anchor", "room": "stream", "commodity": "item", "video": "video",
                         "audio": "audio"}


@dataclass(frozen=True)
class Variant:
    """One what-if version of a planned stream of a simulated dataset; a change left at None keeps the plan's.

    Attributes:
        stream_id: the planned stream (a stream of the dataset).
        anchor_id: book this anchor instead (an anchor of the dataset): its own latents.
        items: every item the variant sells, in order (``item_id``s of items.parquet, possibly of other streams);
            replacing and adding items are both this list.
        room_from: run in the room of that stream: its room latents (attractiveness, duration).
        label: a name for the variant in the result; by default a description of its changes.
    """

    stream_id: str
    anchor_id: str | None = None
    items: tuple[str, ...] | None = None
    room_from: str | None = None
    label: str = ""

    def __post_init__(self) -> None:
        if isinstance(self.items, str):
            raise TypeError(f"variant of {self.stream_id}: items '{self.items}' is a string, expected a list of "
                            "item_ids")
        if self.items is not None:
            object.__setattr__(self, "items", tuple(self.items))
            if not self.items:
                raise ValueError(f"variant of {self.stream_id}: items is empty, expected at least one item_id "
                                 "(None keeps the planned items)")
            seen = set()
            for item in self.items:
                if item in seen:
                    raise ValueError(f"variant of {self.stream_id}: item '{item}' listed twice")
                seen.add(item)

    def describe(self) -> str:
        """The label, or the changes in words ("as planned" when there are none)."""
        if self.label:
            return self.label
        changes = [f"anchor {self.anchor_id}" if self.anchor_id is not None else "",
                   f"items {'+'.join(self.items)}" if self.items is not None else "",
                   f"room of {self.room_from}" if self.room_from is not None else ""]
        return "; ".join(c for c in changes if c) or "as planned"


@dataclass(frozen=True)
class _Dataset:
    """A simulated dataset's latents in the simulator's arrays, the ids that index them, and the constants its world
    recorded in ground_truth.json."""

    root: Path
    model: WorldModel
    ids: dict[str, dict[str, int]]  # "anchor" | "stream" | "item" -> id -> index
    values: dict[str, np.ndarray]  # Latents attribute -> [A], [S], [I], [V] or [U] values
    stream_anchor: np.ndarray  # [S] index into the anchors
    offsets: dict[str, np.ndarray]  # "item" | "video" | "audio" -> [S + 1] CSR offsets, streams in id order
    effects: dict[str, float]  # contribution -> its sd in this world
    calibration: dict[str, tuple[float, float]]  # contribution -> population (mean, sd) of its raw term
    log_sales_mean: float
    coupling: float


def _recorded(truth: dict, key: str, path: Path) -> Any:
    if key not in truth:
        raise DataError(f"{path}: no '{key}', which the counterfactual truth needs; simulate the dataset again")
    return truth[key]


def _latent_arrays(frame: pl.DataFrame, factors: tuple[Factor, ...], where: Path
                   ) -> tuple[dict[str, dict[str, int]], dict[str, np.ndarray], dict[str, np.ndarray], np.ndarray]:
    """From latents.parquet (long format): the ids per axis, each factor's array, the CSR offsets of items and clips
    and each stream's anchor index, streams in id order."""
    sids = frame["stream_id"].unique().sort().to_list()
    ids: dict[str, dict[str, int]] = {"stream": {s: i for i, s in enumerate(sids)}}
    values: dict[str, np.ndarray] = {}
    offsets: dict[str, np.ndarray] = {}
    for entity, axis in _AXIS.items():
        rows = frame.filter(pl.col("entity") == entity)
        if axis == "anchor":  # repeated for each stream of the anchor
            wide = rows.unique(["object_id", "factor"]).pivot("factor", index="object_id", values="value")
        else:
            wide = rows.pivot("factor", index=["stream_id", "object_id", "position"], values="value")
        wide = wide.sort("object_id" if axis == "anchor" else ["stream_id", "position"])
        if axis != "anchor" and wide["stream_id"].unique().sort().to_list() != sids:
            raise DataError(f"{where}: some stream has no {entity} rows")
        for f in (f for f in factors if f.entity == entity):
            if f.name not in wide.columns:
                raise DataError(f"{where}: no rows of {entity} factor '{f.name}'")
            kind = np.int64 if f.kind.startswith("categorical") else np.float64
            values[f.attribute] = wide[f.name].to_numpy().astype(kind)
        if axis in ("anchor", "item"):
            ids[axis] = {o: i for i, o in enumerate(wide["object_id"].to_list())}
        if axis in ("item", "video", "audio"):
            counts = wide.group_by("stream_id").len().sort("stream_id")["len"].to_numpy()
            offsets[axis] = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    anchors = frame.filter(pl.col("entity") == "anchor").select("stream_id", "object_id").unique().sort("stream_id")
    if anchors["stream_id"].to_list() != sids:
        raise DataError(f"{where}: a stream has no anchor rows or rows of two anchors")
    return ids, values, offsets, np.array([ids["anchor"][a] for a in anchors["object_id"].to_list()], np.int64)


def _read_dataset(root: str | Path) -> _Dataset:
    """Read ``root``'s latents.parquet and ground_truth.json."""
    root = Path(root)
    path = root / "ground_truth.json"
    truth = read_json(path)
    world = _recorded(truth, "world", path)
    if world.get("name") not in WORLDS:
        raise DataError(f"{path}: world '{world.get('name')}', expected one of {', '.join(WORLDS)}")
    model = WORLDS[world["name"]](world.get("settings"))
    ids, values, offsets, stream_anchor = _latent_arrays(read_latents(root), model.all_factors(),
                                                         root / "latents.parquet")
    return _Dataset(
        root=root, model=model, ids=ids, values=values, stream_anchor=stream_anchor, offsets=offsets,
        effects={n: float(v) for n, v in _recorded(truth, "effects", path).items()},
        calibration={n: (float(v["mean"]), float(v["sd"])) for n, v in _recorded(truth, "calibration", path).items()},
        log_sales_mean=float(_recorded(truth, "log_sales_mean", path)),
        coupling=float(_recorded(truth, "coupling", path)),
    )


def _index(ds: _Dataset, axis: str, key: str, variant: int, what: str) -> int:
    if key not in ds.ids[axis]:
        raise ValueError(f"variant {variant}: unknown {what} '{key}' (not in {ds.root / 'latents.parquet'})")
    return ds.ids[axis][key]


def _resolve(ds: _Dataset, variants: Sequence[Variant]) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[np.ndarray]]:
    """Per variant: the planned stream's index, the anchor's, the room's stream, and the items' indices."""
    plan, anchor, room, items = [], [], [], []
    for i, v in enumerate(variants):
        s = _index(ds, "stream", v.stream_id, i, "stream_id")
        plan.append(s)
        anchor.append(ds.stream_anchor[s] if v.anchor_id is None else _index(ds, "anchor", v.anchor_id, i, "anchor_id"))
        room.append(s if v.room_from is None else _index(ds, "stream", v.room_from, i, "room_from stream"))
        items.append(np.arange(ds.offsets["item"][s], ds.offsets["item"][s + 1]) if v.items is None else
                     np.array([_index(ds, "item", item, i, "item_id") for item in v.items], np.int64))
    return np.array(plan, np.int64), np.array(anchor, np.int64), np.array(room, np.int64), items


def _ragged(offsets: np.ndarray, streams: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The objects of ``streams`` in turn (CSR ``offsets``): their indices and the new [len(streams) + 1] offsets."""
    counts = np.diff(offsets)[streams]
    new = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return np.repeat(offsets[streams] - new[:-1], counts) + np.arange(int(new[-1])), new


def _variant_latents(ds: _Dataset, plan: np.ndarray, anchor: np.ndarray, room: np.ndarray,
                     items: list[np.ndarray]) -> Latents:
    """The latents of the variants as streams of their own (one anchor each): the named objects' latents, the
    planned stream's clips with the anchor-driven clip latents moved by ``coupling * delta skill``."""
    item_index = np.concatenate(items)
    index = {"anchor": anchor, "room": room, "commodity": item_index}
    offsets = {"item": np.concatenate([[0], np.cumsum([len(i) for i in items])]).astype(np.int64)}
    for kind in ("video", "audio"):
        index[kind], offsets[kind] = _ragged(ds.offsets[kind], plan)
    kwargs = {f.attribute: ds.values[f.attribute][index[f.entity]] for f in ds.model.all_factors()}
    skill = ds.values["anchor_skill"]
    shift = ds.coupling * (skill[anchor] - skill[ds.stream_anchor[plan]])  # [V], 0 where the anchor is kept
    for attribute in ANCHOR_DRIVEN_CLIPS:
        kind = attribute.partition("_")[0]
        kwargs[attribute] = kwargs[attribute] + np.repeat(shift, np.diff(offsets[kind]))
    return Latents(stream_anchor=np.arange(len(plan)), item_offsets=offsets["item"], video_offsets=offsets["video"],
                   audio_offsets=offsets["audio"], **kwargs)


def counterfactual_truth(root: str | Path, variants: Sequence[Variant]) -> pl.DataFrame:
    """The simulator's expected log(sales) of each variant, with its per-entity contributions.

    Every raw contribution, and the world's signal, is recomputed from the variant's latents and standardised with
    the calibration and effect sizes recorded in ``root/ground_truth.json`` when the dataset was simulated (never
    recalibrated on the variants), so ``Variant(stream_id)`` gives that stream's ``expected_log_sales`` of
    ground_truth.parquet.

    Args:
        root: a simulated raw dataset (latents.parquet, ground_truth.json).
        variants: the what-if variants; several may share a planned stream.

    Returns:
        One row per variant, in order: ``stream_id``, ``variant`` (its index in ``variants``), ``label``
        (:meth:`Variant.describe`), ``expected_log_sales`` and ``contrib_<name>`` for the six default contributions
        and the world's signal (the columns of ground_truth.parquet).

    Raises:
        ValueError: no variants, or a variant names a stream, anchor or item the dataset does not have.
        DataError: the dataset's files lack what the truth needs.
    """
    if not variants:
        raise ValueError("counterfactual_truth: no variants, expected at least one")
    ds = _read_dataset(root)
    plan, anchor, room, items = _resolve(ds, variants)
    lat = _variant_latents(ds, plan, anchor, room, items)
    contributions: dict[str, np.ndarray] = {}
    for name, raw in {**raw_contributions(lat), **ds.model.signals(lat)}.items():
        if name not in ds.effects or name not in ds.calibration:
            raise DataError(f"{ds.root / 'ground_truth.json'}: no effect or calibration of '{name}'")
        mean, sd = ds.calibration[name]
        contributions[name] = ds.effects[name] * (raw - mean) / sd  # [V], as memf.simulate.truth standardises
    return pl.DataFrame({
        "stream_id": [v.stream_id for v in variants], "variant": np.arange(len(variants)),
        "label": [v.describe() for v in variants],
        "expected_log_sales": ds.log_sales_mean + sum(contributions.values()),
        **{f"contrib_{name}": values for name, values in contributions.items()},
    })
