"""The latent feature set (rule ``pad_latent``, the latent ceiling): the simulator's true latent factors in the padded
layout, each factor in the arrays of the modalities that render it (docs/simulator.md, "Latents by modality").

Built and written :data:`LATENT_BLOCK` streams at a time: ``latents.parquet`` is scanned lazily, once for its
layout and once per block for that block's rows, so memory does not grow with the number of streams.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import polars as pl

from memf.core.io import DataError, atomic_path, read_json
from memf.data.contract import CLIP_KINDS, FIELD_ENTITIES, MODALITIES
from memf.data.dataset import CleanDataset
from memf.padding.padded import Padded, RaggedBlock
from memf.padding.sources import validated_table
from memf.padding.store import PadReport, StoreWriter

log = logging.getLogger(__name__)

LATENT_COLUMNS = {"stream_id": "string", "entity": "string", "object_id": "string", "position": "integer",
                  "factor": "string", "value": "float"}
#: Entity -> the arrays of the latent feature set that hold its factors (the suffixes of its batch keys).
LATENT_ARRAYS: dict[str, tuple[str, ...]] = {
    **{e: MODALITIES for e in FIELD_ENTITIES}, **{kind: ("x",) for kind in CLIP_KINDS},
}
#: Streams built and written at once.
LATENT_BLOCK = 4096
#: How an error names an object without latent factors.
_OBJECT_NAMES: dict[str, str] = {
    "anchor": "anchor of stream {stream_id}", "room": "room of stream {stream_id}", "commodity": "item {object_id}",
    "video": "video clip {object_id}", "audio": "audio clip {object_id}",
}


@dataclass(frozen=True)
class _Entry:
    """One entry on the last axis of a latent array: ``factor`` of ``entity``, as its value (``level`` None) or as
    the one-hot indicator of a categorical factor's ``level``; ``first_item``: a commodity factor in a room array,
    read off the stream's first item (position 0)."""

    entity: str
    factor: str
    level: int | None
    first_item: bool

    @property
    def column(self) -> str:
        """The factor's column in the table of an array's objects (:func:`_latent_values`)."""
        return f"first_item.{self.factor}" if self.first_item else self.factor

    @property
    def name(self) -> str:
        return self.column if self.level is None else f"{self.column}={self.level}"


def _levels(kind: str, where: str) -> list[int | None]:
    """One-hot levels of a factor of ``kind`` ("continuous" -> [None], "categorical(n)" -> 0..n-1)."""
    if kind == "continuous":
        return [None]
    if kind.startswith("categorical(") and kind.endswith(")") and kind[len("categorical("):-1].isdigit():
        return list(range(int(kind[len("categorical("):-1])))
    raise DataError(f"{where}: kind '{kind}', expected 'continuous' or 'categorical(n)'")


def _latent_layout(ground_truth_json: str | Path | None, frame: pl.LazyFrame, latents: str | Path
                   ) -> dict[str, list[_Entry]]:
    """Batch key -> the entries of its last axis, from the factors' kinds (``latent_factors``) and routes
    (``latent_routing``) in ground_truth.json; an entity's own factors first, each in the routing's order."""
    if ground_truth_json is None or not Path(ground_truth_json).is_file():
        raise DataError(f"the latent feature set needs the simulator's ground_truth.json (the factors' kinds and "
                        f"routes), got {ground_truth_json}")
    truth = read_json(ground_truth_json)
    if "latent_routing" not in truth:
        raise DataError(f"{ground_truth_json}: no 'latent_routing' (the arrays each latent factor goes to); "
                        "simulate the dataset again")
    kinds, routing = truth.get("latent_factors", {}), truth["latent_routing"]
    routed = {(e, f) for e, factors in routing.items() for f in factors}
    present = set(frame.select("entity", "factor").unique().collect().iter_rows())
    for entity, factor in sorted(present ^ routed):
        where = f"in {latents} but not under latent_routing" if (entity, factor) in present else \
            f"under latent_routing but not in {latents}"
        raise DataError(f"{ground_truth_json}: factor {entity}/{factor} is {where}")
    layout: dict[str, list[_Entry]] = {f"{e}/{a}": [] for e, arrays in LATENT_ARRAYS.items() for a in arrays}
    for entity, factor in ((e, f) for e, factors in routing.items() for f in factors):
        levels = _levels(kinds.get(entity, {}).get(factor, "continuous"), f"{ground_truth_json}: {entity}/{factor}")
        codes = pl.col("value").is_in([float(v) for v in levels if v is not None])
        mine = (pl.col("entity") == entity) & (pl.col("factor") == factor) & ~codes
        outside = frame.filter(mine).select("value").head(1).collect() if levels != [None] else pl.DataFrame()
        if outside.height:
            bad = outside["value"][0]
            raise DataError(f"{latents}: factor {entity}/{factor} has value {bad}, expected a category code "
                            f"0..{len(levels) - 1}")
        for route in routing[entity][factor]:
            first_item = route.partition("/")[0] != entity
            if route not in layout or (first_item and (entity, route.partition("/")[0]) != ("commodity", "room")):
                raise DataError(f"{ground_truth_json}: factor {entity}/{factor} has route '{route}', expected one of "
                                f"its entity's arrays (or a room array for a commodity factor) among {list(layout)}")
            layout[route] += [_Entry(entity, factor, level, first_item) for level in levels]
    return {key: sorted(entries, key=lambda e: e.first_item) for key, entries in layout.items()}


def _latent_objects(ds: Any, sids: list[str], max_items: int, max_clips: int
                    ) -> dict[str, tuple[pl.DataFrame, int | None]]:
    """Entity -> (its kept objects: stream_id, object_id, row (index into ``sids``), slot (item or clip index); the
    length of its item or clip axis, None for the anchor and the room). Items and clips in position order, up to
    the caps, as :func:`pad_feature_set` takes them."""
    rows = pl.DataFrame({"stream_id": sids, "row": np.arange(len(sids))})
    streams = ds.streams.sort("stream_id")
    out: dict[str, tuple[pl.DataFrame, int | None]] = {
        entity: (streams.select("stream_id", object_id=pl.col(owner), slot=pl.lit(0)), None)
        for entity, owner in (("anchor", "anchor_id"), ("room", "stream_id"))
    }
    sets = {"commodity": (ds.items, "item_id", max_items)}
    sets |= {kind: (ds.clips.filter(pl.col("kind") == kind), "clip_id", max_clips) for kind in CLIP_KINDS}
    for entity, (table, id_column, cap) in sets.items():
        kept = (table.sort("stream_id", "position").select("stream_id", object_id=pl.col(id_column))
                .with_columns(slot=pl.int_range(pl.len()).over("stream_id")).filter(pl.col("slot") < cap))
        out[entity] = (kept, max(1, int(kept["slot"].max() or 0) + 1))
    return {e: (keys.join(rows, on="stream_id"), length) for e, (keys, length) in out.items()}


def _latent_values(frame: pl.DataFrame, entity: str, objects: pl.DataFrame, layout: Mapping[str, list[_Entry]],
                   latents: str | Path) -> tuple[dict[str, np.ndarray], list[str]]:
    """Array suffix -> [N, F] float32 values of its entries for the N ``objects`` of ``entity``, and the names of the
    objects without latent factors."""
    wide = frame.filter(pl.col("entity") == entity).pivot("factor", index=["stream_id", "object_id"], values="value")
    table = objects.join(wide, on=["stream_id", "object_id"], how="left")
    if any(e.first_item for entries in layout.values() for e in entries):
        first = frame.filter((pl.col("entity") == "commodity") & (pl.col("position") == 0)).pivot(
            "factor", index="stream_id", values="value")
        table = table.join(first.rename({c: f"first_item.{c}" for c in first.columns if c != "stream_id"}),
                           on="stream_id", how="left")
    used = sorted({e.column for entries in layout.values() for e in entries})
    # a block without an object of this entity has no column for its factors: all of them are then absent
    table = table.with_columns(pl.lit(None, pl.Float64).alias(c) for c in used if c not in table.columns)
    absent = table.filter(pl.any_horizontal(pl.col(c).is_null() for c in used))
    missing = [_OBJECT_NAMES[entity].format(**row) for row in absent.head(3).iter_rows(named=True)]
    values: dict[str, np.ndarray] = {}
    for suffix, entries in layout.items():
        columns = [table[e.column].to_numpy() if e.level is None else table[e.column].to_numpy() == e.level
                   for e in entries]  # [N] each (NaN where an object has no latent row)
        values[suffix] = np.stack(columns, axis=1).astype(np.float32) if columns else \
            np.zeros((table.height, 0), np.float32)  # [N, F]
    return values, missing


def _slots(objects: pl.DataFrame, shape: tuple[int, ...]) -> tuple[np.ndarray, ...]:
    """Index of the ``objects`` in an array of leading ``shape`` [S] (anchor, room) or [S, M] (items, clips)."""
    return (objects["row"].to_numpy(),) + ((objects["slot"].to_numpy(),) if len(shape) == 2 else ())


def _latent_array(suffix: str, values: np.ndarray, objects: pl.DataFrame, shape: tuple[int, ...]) -> np.ndarray:
    """The padded array of one suffix: [*shape, F] for numeric fields and clips; text and image one token
    [*shape, 1, F], or no token [*shape, 0, 1] when no factor is routed there (models skip a modality without
    fields)."""
    out = np.zeros((*shape, values.shape[1]), np.float32)
    out[_slots(objects, shape)] = np.nan_to_num(values)
    if suffix in ("text", "image"):
        return out[..., None, :] if values.shape[1] else np.zeros((*shape, 0, 1), np.float32)
    return out


def _scan_latents(latents: str | Path) -> pl.LazyFrame:
    """``latents.parquet`` as a lazy scan, its columns checked (:data:`LATENT_COLUMNS`) from its footer.

    Raises:
        DataError: the file is unreadable, or a column is missing or of another type.
    """
    try:
        scan = pl.scan_parquet(latents)
        schema = scan.collect_schema()
    except (OSError, pl.exceptions.PolarsError) as exc:
        raise DataError(f"{latents}: not a readable Parquet file ({exc})") from exc
    for name, family in LATENT_COLUMNS.items():
        dtype = schema.get(name)
        fits = {"string": lambda t: t == pl.String, "integer": lambda t: t.is_integer(),
                "float": lambda t: t.is_numeric()}[family]
        if dtype is None or not fits(dtype):
            raise DataError(f"{latents}: column '{name}' is {dtype or 'missing'}, expected {family}")
    return scan


def _block_tables(streams: pl.DataFrame, items: pl.DataFrame, clips: pl.DataFrame) -> CleanDataset:
    """The validated tables of a run of ``streams`` (the tables sorted by stream_id)."""
    lo, hi = streams["stream_id"][0], streams["stream_id"][-1]

    def part(table: pl.DataFrame) -> pl.DataFrame:
        column = table["stream_id"]
        return table[int(column.search_sorted(lo, "left")) : int(column.search_sorted(hi, "right"))]

    return CleanDataset(root=Path(), streams=streams, anchors=pl.DataFrame(), items=part(items), clips=part(clips))


def _latent_block(streams: pl.DataFrame, tables: tuple[pl.DataFrame, pl.DataFrame], scan: pl.LazyFrame,
                  layout: Mapping[str, list[_Entry]], caps: tuple[int, int], split: Mapping[str, Any],
                  latents: str | Path) -> RaggedBlock:
    """The latent arrays of a run of ``streams``, in the store layout.

    Raises:
        DataError: a stream, item or clip of the run has no latent row.
    """
    sids = streams["stream_id"].to_list()
    inside = pl.col("stream_id").is_between(pl.lit(sids[0]), pl.lit(sids[-1])) & pl.col("stream_id").is_in(sids)
    frame = scan.filter(inside).collect()
    arrays: dict[str, np.ndarray] = {}
    missing: list[str] = []
    for entity, (objects, length) in _latent_objects(_block_tables(streams, *tables), sids, *caps).items():
        mine = {suffix: layout[f"{entity}/{suffix}"] for suffix in LATENT_ARRAYS[entity]}
        shape = (len(sids),) if length is None else (len(sids), length)
        values, gone = _latent_values(frame, entity, objects, mine, latents)
        missing += gone
        for suffix, v in values.items():
            arrays[f"{entity}/{suffix}"] = _latent_array(suffix, v, objects, shape)
        if length is not None:
            arrays[f"{entity}/mask"] = np.zeros(shape, bool)  # [S, M]
            arrays[f"{entity}/mask"][_slots(objects, shape)] = True
    if missing:
        raise DataError(f"{latents}: no latent factors for {', '.join(missing[:3])}")
    padded = Padded(stream_id=np.array(sids, dtype=object), fold=streams["fold"].to_numpy().astype(np.int8),
                    target=streams["target"].to_numpy().astype(np.float32), folds=int(split["k"]), arrays=arrays,
                    attrs={"split": dict(split)})
    return RaggedBlock.from_padded(padded)


def pad_latents(
    *,
    data_dir: str | Path,
    latents: str | Path,
    max_items: int,
    max_clips: int,
    out: str | Path,
    ground_truth_json: str | Path | None = None,
    dtype: str = "float32",
) -> PadReport:
    """Build ``latent.h5``: the simulator's true latent factors in the padded layout, for the streams, items and clips
    that validation kept (the same streams and folds as every other feature set).

    Each factor goes where the media render it, as ``latent_routing`` of ``ground_truth.json`` says
    (docs/simulator.md, "Latents by modality"): per anchor, room and item one text token and one image token, each
    the vector of the factors its text or image renders, and one numeric field per factor its numbers render; a
    factor rendered in several modalities is in each of their arrays. The clip vectors hold the video and audio
    factors. A categorical factor (``categorical(n)`` under ``latent_factors``) becomes n one-hot entries. The room's
    arrays may hold commodity factors of the stream's first item (its title names that item's category). The
    ``fields`` attribute names every entry of each array's last axis. Items and clips are taken in position order
    up to the caps, as ``memf.padding.pad.pad_feature_set`` does. ``dtype``: how the arrays are stored
    (``padding.dtype``).

    Raises:
        DataError: ground_truth.json is missing or routes a factor badly, the latents file is malformed or holds a
            factor without a route, or a kept stream, item or clip has no latent row.
    """
    scan = _scan_latents(latents)
    layout = _latent_layout(ground_truth_json, scan, latents)
    fields = {e: {suffix: [x.name for x in layout[f"{e}/{suffix}"]] for suffix in arrays}
              for e, arrays in LATENT_ARRAYS.items()}
    for entity, named in fields.items():
        if not any(named.values()):
            raise DataError(f"{ground_truth_json}: no latent factor is routed to {entity}'s arrays")
    streams = validated_table(data_dir, "streams", ["stream_id", "anchor_id", "fold", "target"])
    tables = (validated_table(data_dir, "items", ["stream_id", "item_id", "position"]),
              validated_table(data_dir, "clips", ["stream_id", "clip_id", "kind", "position"]))
    split = read_json(Path(data_dir) / "dataset.json")["folds"]  # the run folds (memf.data.folds.FoldPlan)
    with atomic_path(out) as tmp, h5py.File(tmp, "w") as h5:
        writer = StoreWriter(h5, dtype)
        for start in range(0, streams.height, LATENT_BLOCK):
            block = streams[start : start + LATENT_BLOCK]
            writer.append(_latent_block(block, tables, scan, layout, (max_items, max_clips), split, latents))
        writer.finish(int(split["k"]), {"feature_set": "latent", "extractors": {"latent": str(latents)},
                                        "fields": fields, "caps": {"max_items": max_items, "max_clips": max_clips},
                                        "split": split})
    log.info("latent feature set: %d streams; entries per array %s", writer.rows,
             {f"{e}/{s}": len(names) for e, arrays_ in fields.items() for s, names in arrays_.items()})
    return PadReport(writer.rows, 0, 0, writer.longest["commodity"], {k: writer.longest[k] for k in CLIP_KINDS})
