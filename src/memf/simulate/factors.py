"""The simulator's true latent factors as a table: ``latents.parquet`` (docs/simulator.md, "Outputs").

The table lets a study fit its models on what a perfect feature extractor would recover (the latent ceiling): one row
per (object, factor) in long format, keyed by the same ids as the raw tables. Anchor rows are repeated for every
stream of the anchor, so the file joins on ``stream_id`` alone. Categorical factors are written as float codes and
declared in ``ground_truth.json["latent_factors"]`` as ``"categorical(n)"``, so a consumer can one-hot them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa

from memf.core.io import DataError, read_parquet_checked
from memf.simulate.latent import Latents
from memf.simulate.vocab import CATEGORIES

#: Entities in the order their rows are written within a stream.
ENTITIES: tuple[str, ...] = ("anchor", "commodity", "room", "video", "audio")
#: Arrow schema of latents.parquet.
LATENTS_SCHEMA = pa.schema([
    ("stream_id", pa.string()), ("entity", pa.string()), ("object_id", pa.string()), ("position", pa.int32()),
    ("factor", pa.string()), ("value", pa.float64()),
])
#: Column -> type family for :func:`memf.core.io.read_parquet_checked`.
LATENTS_COLUMNS: dict[str, str] = {
    "stream_id": "string", "entity": "string", "object_id": "string", "position": "integer", "factor": "string",
    "value": "float",
}


#: Where a factor can be rendered, named by the padded array of the latent feature set that holds it
#: (docs/simulator.md, "Latents by modality"): an entity's text, image or numeric fields, or the clips.
ROUTES: tuple[str, ...] = (
    "anchor/text", "anchor/image", "anchor/numeric", "room/text", "room/image", "room/numeric",
    "commodity/text", "commodity/image", "commodity/numeric", "video/x", "audio/x",
)

#: (factor entity, array entity) of the cross-entity routes: the array holds the stream's first item's value.
FIRST_ITEM_ROUTES: frozenset[tuple[str, str]] = frozenset({("commodity", "room")})


@dataclass(frozen=True)
class Factor:
    """One latent factor: its entity, its name in latents.parquet, the :class:`Latents` array holding it (one value
    per anchor, item, stream or clip), the modalities that render it and its kind ("continuous" or
    "categorical(n)").

    ``routes`` names, among :data:`ROUTES`, every table column or medium whose content the factor drives: an
    entity's own text, image or numeric fields, or its clips. A commodity factor may also be routed to the room's
    fields (:data:`FIRST_ITEM_ROUTES`): those render the stream's first item's value (the room's title and tag name
    the first item's category).
    """

    entity: str
    name: str
    attribute: str
    routes: tuple[str, ...]
    kind: str = "continuous"
    #: Arrays whose media the factor also moves but that do not hold it, each for a reason the docs give (the
    #: category's median price shifts the price, which the numeric fields hold as the price level).
    left_out: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.routes:
            raise ValueError(f"factor {self.entity}/{self.name}: no routes, expected some of {list(ROUTES)}")
        if set(self.routes) & set(self.left_out):
            raise ValueError(f"factor {self.entity}/{self.name}: {sorted(set(self.routes) & set(self.left_out))} "
                             "both routed and left out")
        for route in self.routes + self.left_out:
            target = route.partition("/")[0]
            if route not in ROUTES or (target != self.entity and (self.entity, target) not in FIRST_ITEM_ROUTES):
                raise ValueError(f"factor {self.entity}/{self.name}: route '{route}' is not one of its entity's "
                                 f"arrays (or a room array for a commodity factor) among {list(ROUTES)}")


#: Every factor of the default world, in the order written within an object, with the media that render it
#: (docs/simulator.md, "Latents by modality"; the comments say how).
FACTORS: tuple[Factor, ...] = (
    # reach tags; avatar brightness; fans, views, likes, comments
    Factor("anchor", "reach", "anchor_reach", ("anchor/text", "anchor/image", "anchor/numeric")),
    # skill tags; avatar saturation and stripes; views, likes, comments, followTopCount, score
    Factor("anchor", "skill", "anchor_skill", ("anchor/text", "anchor/image", "anchor/numeric")),
    # hot or cold title words; photo saturation and brightness
    Factor("commodity", "appeal", "item_appeal", ("commodity/text", "commodity/image")),
    # premium or budget words and brand tier; photo stripe frequency; price and coupon price
    Factor("commodity", "price", "item_price", ("commodity/text", "commodity/image", "commodity/numeric")),
    # discount phrase; height of the sale banner; coupon price
    Factor("commodity", "discount", "item_discount", ("commodity/text", "commodity/image", "commodity/numeric")),
    # category name and title word; the photo's hue; the room's title and tag name the first item's category. The
    # price is drawn around the category's median, but the numeric fields hold the price level, not 17 indicators.
    Factor("commodity", "category", "item_category", ("commodity/text", "commodity/image", "room/text"),
           f"categorical({len(CATEGORIES)})", left_out=("commodity/numeric",)),
    # title hooks and tags; cover brightness and saturation
    Factor("room", "attractiveness", "room_attractiveness", ("room/text", "room/image")),
    Factor("room", "duration", "room_duration", ("room/numeric",)),  # duration in seconds
    Factor("video", "energy", "video_energy", ("video/x",)),  # background brightness, disc speed
    Factor("audio", "energy", "audio_energy", ("audio/x",)),  # loudness, pitch
    Factor("audio", "tempo", "audio_tempo", ("audio/x",)),  # beat rate
)


def latent_factors(factors: tuple[Factor, ...] = FACTORS) -> dict[str, dict[str, str]]:
    """``{entity: {factor: kind}}``, recorded in ground_truth.json under ``latent_factors``."""
    out: dict[str, dict[str, str]] = {}
    for f in factors:
        out.setdefault(f.entity, {})[f.name] = f.kind
    return out


def latent_routing(factors: tuple[Factor, ...]) -> dict[str, dict[str, list[str]]]:
    """``{entity: {factor: [route, ...]}}``, recorded in ground_truth.json under ``latent_routing``: the padded
    arrays of the latent feature set that hold each factor (:func:`memf.padding.pad.pad_latents`)."""
    out: dict[str, dict[str, list[str]]] = {}
    for f in factors:
        out.setdefault(f.entity, {})[f.name] = list(f.routes)
    return out


def _objects(lat: Latents, entity: str, stream_ids: list[str], anchor_ids: list[str], item_ids: list[str]
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per object of ``entity`` (repeated anchors included): stream index, object id, position, and the index of
    the object's values in its :class:`Latents` arrays."""
    n = lat.n_streams
    if entity in ("anchor", "room"):
        streams = np.arange(n)
        ids = np.asarray(anchor_ids, dtype=object)[lat.stream_anchor] if entity == "anchor" else \
            np.asarray(stream_ids, dtype=object)
        index = lat.stream_anchor if entity == "anchor" else streams
        return streams, ids, np.zeros(n, dtype=np.int32), index
    offsets = {"commodity": lat.item_offsets, "video": lat.video_offsets, "audio": lat.audio_offsets}[entity]
    counts = np.diff(offsets)
    streams = np.repeat(np.arange(n), counts)
    index = np.arange(int(offsets[-1]))
    position = (index - offsets[:-1][streams]).astype(np.int32)
    if entity == "commodity":
        ids = np.asarray(item_ids, dtype=object)
    else:
        tag = {"video": "v", "audio": "a"}[entity]
        ids = np.asarray([f"{stream_ids[s]}-{tag}{p}" for s, p in zip(streams.tolist(), position.tolist())],
                         dtype=object)
    return streams, ids, position, index


def latents_table(lat: Latents, stream_ids: list[str], anchor_ids: list[str], item_ids: list[str],
                  factors: tuple[Factor, ...] = FACTORS) -> pa.Table:
    """latents.parquet of one world: rows sorted by stream, entity (:data:`ENTITIES` order), position, factor.

    The ids are the writer's (``stream_ids[s]``, ``anchor_ids[a]``, ``item_ids[i]``; clips ``{stream_id}-v{pos}``
    and ``{stream_id}-a{pos}``), so the file joins the raw tables on ``object_id``.
    """
    blocks: list[dict[str, np.ndarray]] = []
    for rank, entity in enumerate(ENTITIES):
        mine = [f for f in factors if f.entity == entity]
        if not mine:
            continue
        streams, ids, position, index = _objects(lat, entity, stream_ids, anchor_ids, item_ids)
        k, n_obj = len(mine), len(streams)
        values = np.stack([np.asarray(getattr(lat, f.attribute), dtype=np.float64)[index] for f in mine], axis=1)
        blocks.append({
            "stream": np.repeat(streams, k), "rank": np.full(n_obj * k, rank), "row": np.arange(n_obj * k),
            "object_id": np.repeat(ids, k), "position": np.repeat(position, k),
            "factor": np.tile(np.asarray([f.name for f in mine], dtype=object), n_obj),
            "entity": np.full(n_obj * k, entity, dtype=object), "value": values.reshape(-1),
        })
    cat = {key: np.concatenate([b[key] for b in blocks]) for key in blocks[0]}
    order = np.lexsort((cat["row"], cat["rank"], cat["stream"]))  # objects are already in position order
    return pa.table({
        "stream_id": pa.array(np.asarray(stream_ids, dtype=object)[cat["stream"][order]], pa.string()),
        "entity": pa.array(cat["entity"][order], pa.string()),
        "object_id": pa.array(cat["object_id"][order], pa.string()),
        "position": pa.array(cat["position"][order], pa.int32()),
        "factor": pa.array(cat["factor"][order], pa.string()),
        "value": pa.array(cat["value"][order], pa.float64()),
    }, schema=LATENTS_SCHEMA)


def read_latents(root: str | Path) -> pl.DataFrame:
    """Read ``root/latents.parquet``, checking its columns, their types and the entity names.

    Raises:
        DataError: the file is missing or unreadable, a column is missing or mistyped, or an entity is unknown.
    """
    path = Path(root) / "latents.parquet"
    frame = pl.from_arrow(read_parquet_checked(path, LATENTS_COLUMNS))
    unknown = sorted(set(frame["entity"].unique().to_list()) - set(ENTITIES))
    if unknown:
        raise DataError(f"{path}: column 'entity' has unknown value(s) {unknown}, expected among {list(ENTITIES)}")
    return frame
