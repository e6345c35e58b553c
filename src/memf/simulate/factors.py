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


@dataclass(frozen=True)
class Factor:
    """One latent factor: its entity, its name in latents.parquet, the :class:`Latents` array holding it (one value
    per anchor, item, stream or clip) and its kind ("continuous" or "categorical(n)")."""

    entity: str
    name: str
    attribute: str
    kind: str = "continuous"


#: Every factor of the default world, in the order written within an object.
FACTORS: tuple[Factor, ...] = (
    Factor("anchor", "reach", "anchor_reach"),
    Factor("anchor", "skill", "anchor_skill"),
    Factor("commodity", "appeal", "item_appeal"),
    Factor("commodity", "price", "item_price"),
    Factor("commodity", "discount", "item_discount"),
    Factor("commodity", "category", "item_category", f"categorical({len(CATEGORIES)})"),
    Factor("room", "attractiveness", "room_attractiveness"),
    Factor("room", "duration", "room_duration"),
    Factor("video", "energy", "video_energy"),
    Factor("audio", "energy", "audio_energy"),
    Factor("audio", "tempo", "audio_tempo"),
)


def latent_factors(factors: tuple[Factor, ...] = FACTORS) -> dict[str, dict[str, str]]:
    """``{entity: {factor: kind}}``, recorded in ground_truth.json under ``latent_factors``."""
    out: dict[str, dict[str, str]] = {}
    for f in factors:
        out.setdefault(f.entity, {})[f.name] = f.kind
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
