"""Writing a simulated raw dataset: tables, media, ground truth and defect records (docs/simulator.md).

Two phases, which the workflow runs as separate jobs (rule ``simulate``, then one ``simulate_render`` job per shard):

- :func:`write_tables` writes the four tables, the ground truth, ``latents.parquet``, ``defects.parquet`` and
  ``dataset.json`` without rendering anything. A media path is known without rendering: an image's encoding (its file
  suffix) is the first draw of its own media generator, a clip's suffix follows the defect plan. With
  ``simulator.media: false`` the tables have no media columns (no image columns, no clip ``path``) and nothing else is
  written: the fast path to 10^5 streams.
- :func:`render_shard` renders the media of the streams of one shard (``memf.data.dataset.shard_of`` of the
  ``stream_id``; an avatar goes to the shard of its ``anchor_id``) and writes the shard's record
  ``media/render-{k}.parquet`` (:func:`render_record_path`: every file written, with its size).

:func:`simulate` runs both in one process. Randomness: the latents come from ``default_rng(seed)`` and the world's own
stream (:func:`memf.simulate.truth.simulate_latents`); every object's attributes and media use their own generator
``default_rng([seed, kind, index, purpose])``, so an object's values and bytes do not depend on the order of rendering,
on the shard it falls in, or on which other columns are written. The latents a world adds (an item's colours, an
anchor's field and audience) are handed to the renderers without changing the default world's random draws (an
anchor's world text has its own stream), so a world changes exactly what it renders differently.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
from tqdm import tqdm

from memf.core.io import atomic_path, write_json, write_parquet
from memf.core.release import VERSION
from memf.data.contract import DEFAULT_COLUMNS
from memf.data.dataset import shard_of
from memf.data.layout import render_record_path
from memf.simulate import attributes, render, vocab
from memf.simulate.defects import WAV_HEADER_KEEP, DefectPlan, garbage_bytes, plan_defects
from memf.simulate.factors import FACTORS, latents_table
from memf.simulate.params import SimulatorConfig, column_sources
from memf.simulate.truth import World, simulate_latents

log = logging.getLogger(__name__)

# Codes of the per-object random streams.
ANCHOR, ITEM, ROOM, VIDEO, AUDIO = 1, 2, 3, 4, 5
_IMAGE_CODE = {"anchor": ANCHOR, "item": ITEM, "room": ROOM}
# Purposes: text and numbers, media, damaged media, the room's colour (shared by its cover and its video clips), the
# text a world sets from its own latents.
ATTRIBUTES, MEDIA, DAMAGE, HUE, WORLD = 0, 1, 2, 3, 4

_ARROW_TYPE = {"text": pa.string(), "image": pa.string(), "numeric": pa.float64()}
#: Rows kept as Python lists before they are turned into Arrow columns (a list of strings costs several times its
#: Arrow column, so a large table is built in blocks).
BLOCK_ROWS: int = 65_536
#: Schema of a shard's render record.
RENDER_SCHEMA = pa.schema([("path", pa.string()), ("bytes", pa.int64())])
_DEFECT_SCHEMA = {
    "defect": pa.string(), "variant": pa.string(), "table": pa.string(), "object_id": pa.string(),
    "stream_id": pa.string(), "field": pa.string(), "path": pa.string(),
}


@dataclass(frozen=True)
class SimulationSummary:
    """What :func:`simulate` or :func:`write_tables` wrote (``n_images``: the image files the tables reference)."""

    root: Path
    n_streams: int
    n_anchors: int
    n_items: int
    n_video_clips: int
    n_audio_clips: int
    n_images: int
    n_defects: int
    oracle_r2: float | None
    target_mean: float
    target_sd: float
    seconds: float
    media: bool = True


@dataclass(frozen=True)
class RenderSummary:
    """What :func:`render_shard` wrote: the files of one shard and their total size."""

    shard: int
    shards: int
    files: int
    bytes: int
    seconds: float


def _rng(seed: int, kind: int, index: int, purpose: int) -> np.random.Generator:
    return np.random.default_rng([seed, kind, index, purpose])


def _ids(prefix: str, n: int, width: int) -> list[str]:
    width = max(width, len(str(max(n - 1, 0))))
    return [f"{prefix}{i:0{width}d}" for i in range(n)]


def _write_bytes(root: Path, rel: str, data: bytes) -> None:
    with atomic_path(root / rel) as tmp:
        tmp.write_bytes(data)


class _Columns:
    """Rows of one output table with a fixed Arrow schema, kept column-wise: the caller appends to :attr:`lists`
    (every column once per row) and calls :meth:`row_done`; every :data:`BLOCK_ROWS` rows the lists become Arrow
    chunks."""

    def __init__(self, schema: dict[str, pa.DataType]):
        self.schema = schema
        self.lists: dict[str, list[Any]] = {name: [] for name in schema}
        self._chunks: dict[str, list[pa.Array]] = {name: [] for name in schema}
        self._pending = 0

    def row_done(self) -> None:
        self._pending += 1
        if self._pending >= BLOCK_ROWS:
            self._flush()

    def _flush(self) -> None:
        lengths = {len(values) for values in self.lists.values()}
        if lengths != {self._pending}:
            raise AssertionError(f"columns of unequal length {sorted(lengths)} after {self._pending} rows")
        for name, values in self.lists.items():
            self._chunks[name].append(pa.array(values, type=self.schema[name]))
            values.clear()
        self._pending = 0

    def arrow(self) -> pa.Table:
        self._flush()
        return pa.table({name: pa.chunked_array(chunks, type=self.schema[name]).combine_chunks()
                         for name, chunks in self._chunks.items()})


class _Defects:
    """Rows of defects.parquet, each with the key that puts it where a stream-by-stream writer would have: anchors
    first (in their order), then per stream its missing modality, room cover, items, audio clips, video clips."""

    def __init__(self) -> None:
        self.rows: list[tuple[tuple[int, int, int], dict[str, str | None]]] = []

    def add(self, key: tuple[int, int, int], defect: str, variant: str, table: str, object_id: str,
            stream_id: str | None, field: str | None, path: str | None) -> None:
        self.rows.append((key, {"defect": defect, "variant": variant, "table": table, "object_id": object_id,
                                "stream_id": stream_id, "field": field, "path": path}))

    def arrow(self) -> pa.Table:
        rows = [row for _, row in sorted(self.rows, key=lambda kr: kr[0])]
        return pa.table({name: pa.array([r[name] for r in rows], type=t) for name, t in _DEFECT_SCHEMA.items()})


def _attribute_schema(sources: dict[str, dict[str, dict[str, str]]], entity: str) -> dict[str, pa.DataType]:
    return {col: _ARROW_TYPE[mod] for mod, cols in sources[entity].items() for col in cols}


def _value_columns(sources: dict[str, dict[str, dict[str, str]]], entity: str) -> list[tuple[str, str]]:
    """(written column, paper attribute) of the text and numeric attributes of ``entity``."""
    return [(col, paper) for mod in ("text", "numeric") for col, paper in sources[entity][mod].items()]


def _image_column(sources: dict[str, dict[str, dict[str, str]]], entity: str) -> str | None:
    cols = list(sources[entity]["image"])
    return cols[0] if cols else None


def _without_images(sources: dict[str, dict[str, dict[str, str]]]) -> dict[str, dict[str, dict[str, str]]]:
    return {entity: {**mods, "image": {}} for entity, mods in sources.items()}


def _as_string(series: pl.Series) -> pa.Array:
    return series.to_arrow().cast(pa.string())


class _Writer:
    """Writes one world's tables and renders its media; :func:`write_tables`, :func:`render_shard` and
    :func:`simulate` drive it."""

    def __init__(self, world: World, sources: dict[str, dict[str, dict[str, str]]]):
        cfg, lat = world.config, world.latents
        self.world, self.cfg, self.lat = world, cfg, lat
        self.media = cfg.media
        # The columns written: without media, no image columns (the defect plan still sees the mapping's, so it
        # draws what the media run draws).
        self.sources = sources if self.media else _without_images(sources)
        self.stream_ids = _ids("s", lat.n_streams, 5)
        self.anchor_ids = _ids("a", len(lat.anchor_reach), 4)
        self.item_ids = _ids("i", int(lat.item_offsets[-1]), 6)
        self.image_cols = {e: _image_column(self.sources, e) for e in ("anchor", "commodity", "room")}
        self.fields = {e: _value_columns(self.sources, e) for e in self.image_cols}
        self.anchors_used = sorted(set(lat.stream_anchor.tolist()))
        self.plan: DefectPlan = plan_defects(
            cfg.seed, cfg.defects, lat.item_offsets, lat.audio_offsets, len(lat.video_energy), self.anchors_used,
            list(sources["commodity"]["text"]), {e: _image_column(sources, e) for e in self.image_cols},
        )
        self.defects = _Defects()

    # --- attributes ------------------------------------------------------------------------------------------------
    def _anchor_values(self, a: int) -> dict[str, Any]:
        reach, skill = float(self.lat.anchor_reach[a]), float(self.lat.anchor_skill[a])
        rng = _rng(self.cfg.seed, ANCHOR, a, ATTRIBUTES)
        values = {**vocab.anchor_text(rng, reach, skill), **attributes.anchor_numeric(rng, reach, skill)}
        if self.lat.anchor_field is not None:  # fit world: the field and audience are latents
            values.update(vocab.anchor_profile(_rng(self.cfg.seed, ANCHOR, a, WORLD), int(self.lat.anchor_field[a]),
                                               float(self.lat.anchor_audience[a]), values["tags"]))
        return values

    def _room_values(self, s: int) -> dict[str, Any]:
        lat = self.lat
        rng = _rng(self.cfg.seed, ROOM, s, ATTRIBUTES)
        main_category = int(lat.item_category[lat.item_offsets[s]])
        return {**vocab.room_text(rng, float(lat.room_attractiveness[s]), main_category),
                **attributes.room_numeric(rng, float(lat.room_duration[s]))}

    def _item_values(self, i: int, appeal: float, price: float, discount: float, category: int,
                     title_colour: int | None) -> dict[str, Any]:
        rng = _rng(self.cfg.seed, ITEM, i, ATTRIBUTES)
        return {**vocab.item_text(rng, appeal, price, discount, category, title_colour),
                **attributes.item_numeric(rng, price, discount, category)}

    # --- media paths and bytes -------------------------------------------------------------------------------------
    def _encoding(self, kind: str, index: int, mix: str | None) -> tuple[np.random.Generator, str]:
        """The image's media generator and its encoding, the generator's first draw (``mix``: the encoding mix,
        ``render.IMAGE_MIX``, by default the kind's)."""
        rng = _rng(self.cfg.seed, _IMAGE_CODE[kind], index, MEDIA)
        return rng, render.choose_encoding(rng, mix or kind)

    def _image_path(self, kind: str, index: int, folder: str, name: str, mix: str | None = None) -> str:
        if (kind, index) in self.plan.corrupt_images:
            return f"{folder}/{name}.jpg"
        return f"{folder}/{name}{render.IMAGE_ENCODINGS[self._encoding(kind, index, mix)[1]][0]}"

    def _image_bytes(self, kind: str, index: int, rgb_fn: Callable[[np.random.Generator], np.ndarray],
                     mix: str | None = None) -> bytes:
        if (kind, index) in self.plan.corrupt_images:
            return garbage_bytes(_rng(self.cfg.seed, _IMAGE_CODE[kind], index, DAMAGE))
        rng, encoding = self._encoding(kind, index, mix)
        return render.encode_image(rgb_fn(rng), encoding)

    def _item_mix(self) -> str:
        return "item" if self.lat.item_photo_colour is None else "item_colour"

    def _room_hue(self, s: int) -> float:
        return float(_rng(self.cfg.seed, ROOM, s, HUE).random())

    def _clip_path(self, s: int, kind: str, pos: int, c: int) -> str:
        sid = self.stream_ids[s]
        suffix = ".mp4" if kind == "video" or c in self.plan.no_audio_stream else ".wav"
        return f"media/streams/{sid}/{sid}-{kind[0]}{pos}{suffix}"

    def _video_bytes(self, rng: np.random.Generator, energy: float, hue: float) -> bytes:
        v = self.cfg.video
        return render.encode_video(render.video_frames(rng, energy, v.size, v.frames, hue), v.fps)

    def _video_clip_bytes(self, c: int, s: int) -> bytes:
        data = self._video_bytes(_rng(self.cfg.seed, VIDEO, c, MEDIA), float(self.lat.video_energy[c]),
                                 self._room_hue(s))
        return data[: len(data) // 2] if c in self.plan.truncated_videos else data

    def _audio_clip_bytes(self, c: int, s: int) -> bytes:
        rng = _rng(self.cfg.seed, AUDIO, c, MEDIA)
        rates = self.cfg.audio.sample_rates
        rate = int(rates[int(rng.integers(len(rates)))])
        if c in self.plan.no_audio_stream:
            return self._video_bytes(_rng(self.cfg.seed, AUDIO, c, DAMAGE), float(self.lat.audio_energy[c]),
                                     self._room_hue(s))
        wave = render.audio_wave(rng, float(self.lat.audio_energy[c]), float(self.lat.audio_tempo[c]),
                                 self.cfg.audio.seconds, rate)
        data = render.encode_wav(wave, rate)
        return data[:WAV_HEADER_KEEP] if c in self.plan.corrupt_audio else data

    # --- tables ----------------------------------------------------------------------------------------------------
    def anchors(self) -> pa.Table:
        table = _Columns({"anchor_id": pa.string(), **_attribute_schema(self.sources, "anchor")})
        cols, fields, image = table.lists, self.fields["anchor"], self.image_cols["anchor"]
        for rank, a in enumerate(self.anchors_used):
            aid = self.anchor_ids[a]
            values = self._anchor_values(a)
            cols["anchor_id"].append(aid)
            for col, paper in fields:
                cols[col].append(values[paper])
            if image is not None:
                rel = self._image_path("anchor", a, "media/anchors", aid)
                cols[image].append(rel)
                if ("anchor", a) in self.plan.corrupt_images:
                    self.defects.add((-1, rank, 0), "corrupt_image", "garbage_bytes", "anchors", aid, None, image, rel)
            table.row_done()
        return table.arrow()

    def streams(self) -> tuple[pa.Table, pa.Table]:
        """streams.parquet and items.parquet, stream by stream (every object's attributes come from its own
        generator); the defects of each stream are recorded in the same pass."""
        streams = _Columns({"stream_id": pa.string(), "anchor_id": pa.string(), "sales": pa.float64(),
                            **_attribute_schema(self.sources, "room")})
        items = _Columns({"stream_id": pa.string(), "item_id": pa.string(), "position": pa.int64(),
                          **_attribute_schema(self.sources, "commodity")})
        lat, plan = self.lat, self.plan
        sales, anchor_of = self.world.sales.tolist(), lat.stream_anchor.tolist()
        item_latents = (lat.item_appeal.tolist(), lat.item_price.tolist(), lat.item_discount.tolist(),
                        lat.item_category.tolist(),
                        [None] * len(self.item_ids) if lat.item_title_colour is None else lat.item_title_colour.tolist())
        offsets = lat.item_offsets.tolist()
        for s in tqdm(range(lat.n_streams), desc="simulate tables", unit="stream"):
            sid = self.stream_ids[s]
            missing = plan.missing.get(s, ("", -1, ""))
            if missing[0]:
                self._missing_defect(s, missing)
            self._room_row(streams, s, sid, sales[s], self.anchor_ids[anchor_of[s]],
                           missing[0] == "room_image_null")
            for pos, i in enumerate(range(offsets[s], offsets[s + 1])):
                self._item_row(items, s, i, pos, [v[i] for v in item_latents])
                if missing[0] == "item_text_null" and missing[1] == i:
                    items.lists[missing[2]][-1] = None
                items.row_done()
            self._clip_defects(s, missing[0] == "no_audio_clips")
        return streams.arrow(), items.arrow()

    def _missing_defect(self, s: int, missing: tuple[str, int, str]) -> None:
        """Record a stream's missing modality, unless it has nothing to remove here (``room_image_null`` without an
        image column: a media-free dataset)."""
        variant, item, field = missing
        if variant == "room_image_null" and self.image_cols["room"] is None:
            return
        sid = self.stream_ids[s]
        obj = self.item_ids[item] if variant == "item_text_null" else sid
        table = {"item_text_null": "items", "room_image_null": "streams", "no_audio_clips": "clips"}[variant]
        self.defects.add((s, 0, 0), "missing_modality", variant, table, obj, sid, field or None, None)

    def _room_row(self, streams: _Columns, s: int, sid: str, sales: float, anchor_id: str, image_null: bool) -> None:
        cols, values = streams.lists, self._room_values(s)
        cols["stream_id"].append(sid)
        cols["anchor_id"].append(anchor_id)
        cols["sales"].append(sales)
        for col, paper in self.fields["room"]:
            cols[col].append(values[paper])
        image = self.image_cols["room"]
        if image is not None:
            rel = None if image_null else self._image_path("room", s, f"media/streams/{sid}", "room")
            cols[image].append(rel)
            if rel is not None and ("room", s) in self.plan.corrupt_images:
                self.defects.add((s, 1, 0), "corrupt_image", "garbage_bytes", "streams", sid, sid, image, rel)
        streams.row_done()

    def _item_row(self, items: _Columns, s: int, i: int, pos: int, latents: list[Any]) -> None:
        cols, values = items.lists, self._item_values(i, *latents)
        sid, iid = self.stream_ids[s], self.item_ids[i]
        cols["stream_id"].append(sid)
        cols["item_id"].append(iid)
        cols["position"].append(pos)
        for col, paper in self.fields["commodity"]:
            cols[col].append(values[paper])
        image = self.image_cols["commodity"]
        if image is not None:
            rel = self._image_path("item", i, f"media/streams/{sid}", iid, self._item_mix())
            cols[image].append(rel)
            if ("item", i) in self.plan.corrupt_images:
                self.defects.add((s, 2, i), "corrupt_image", "garbage_bytes", "items", iid, sid, image, rel)

    def _clip_defects(self, s: int, no_audio: bool) -> None:
        """Record the damaged clips of stream ``s`` (audio clips first, then video, as clips.parquet orders them)."""
        lat, plan, sid = self.lat, self.plan, self.stream_ids[s]
        if not (plan.no_audio_stream or plan.corrupt_audio or plan.truncated_videos):
            return
        if not no_audio:
            for pos, c in enumerate(range(int(lat.audio_offsets[s]), int(lat.audio_offsets[s + 1]))):
                if c in plan.no_audio_stream:
                    self.defects.add((s, 3, pos), "no_audio_stream", "video_only_mp4", "clips", f"{sid}-a{pos}", sid,
                                     "path", self._clip_path(s, "audio", pos, c))
                elif c in plan.corrupt_audio:
                    self.defects.add((s, 3, pos), "corrupt_audio", "truncated_header", "clips", f"{sid}-a{pos}", sid,
                                     "path", self._clip_path(s, "audio", pos, c))
        for pos, c in enumerate(range(int(lat.video_offsets[s]), int(lat.video_offsets[s + 1]))):
            if c in plan.truncated_videos:
                self.defects.add((s, 4, pos), "truncated_video", "half_bytes", "clips", f"{sid}-v{pos}", sid, "path",
                                 self._clip_path(s, "video", pos, c))

    def clips(self) -> pa.Table:
        """clips.parquet, built column-wise: per stream its audio clips, then its video clips, by position (a
        ``no_audio_clips`` stream has no audio rows); ``path`` only when media are written."""
        lat, n = self.lat, self.lat.n_streams
        no_audio = np.zeros(n, dtype=bool)
        no_audio[[s for s, m in self.plan.missing.items() if m[0] == "no_audio_clips"]] = True
        parts = []
        for rank, (kind, offsets) in enumerate((("audio", lat.audio_offsets), ("video", lat.video_offsets))):
            counts = np.diff(offsets)
            stream = np.repeat(np.arange(n), counts)  # [C] stream of each clip
            index = np.arange(int(offsets[-1]))  # [C] index into the clip latents
            keep = ~no_audio[stream] if kind == "audio" else np.ones(len(index), dtype=bool)
            parts.append((stream[keep], np.full(int(keep.sum()), rank), (index - offsets[:-1][stream])[keep],
                          index[keep]))
        stream, rank, position, index = (np.concatenate(cols) for cols in zip(*parts, strict=True))
        order = np.lexsort((position, rank, stream))
        stream, rank, position, index = stream[order], rank[order], position[order], index[order]
        frame = pl.DataFrame({"stream_id": pl.Series(self.stream_ids).gather(stream),
                              "video": rank == 1, "position": position.astype(np.int64)})
        tag = pl.when(pl.col("video")).then(pl.lit("-v")).otherwise(pl.lit("-a"))
        frame = frame.with_columns(clip_id=pl.concat_str("stream_id", tag, pl.col("position").cast(pl.String)),
                                   kind=pl.when(pl.col("video")).then(pl.lit("video")).otherwise(pl.lit("audio")))
        columns = {"stream_id": _as_string(frame["stream_id"]), "clip_id": _as_string(frame["clip_id"]),
                   "kind": _as_string(frame["kind"]), "position": frame["position"].to_arrow()}
        if self.media:
            mp4 = (rank == 1) | np.isin(index, list(self.plan.no_audio_stream)) & (rank == 0)
            paths = frame.select(pl.concat_str(pl.lit("media/streams/"), "stream_id", pl.lit("/"), "clip_id",
                                               pl.Series(np.where(mp4, ".mp4", ".wav"))))
            columns["path"] = _as_string(paths.to_series())
        return pa.table(columns)

    # --- rendering -------------------------------------------------------------------------------------------------
    def render(self, root: Path, shard: int, shards: int) -> pa.Table:
        """Render and write the media of shard ``shard`` of ``shards``: the avatars of the anchors whose id falls in
        it, then stream by stream the room cover, product photos, audio and video clips of its streams. Returns the
        shard's record (path, bytes), in the order written."""
        anchors = [a for a in self.anchors_used if shard_of(self.anchor_ids[a], shards) == shard]
        streams = [s for s, sid in enumerate(self.stream_ids) if shard_of(sid, shards) == shard]
        record = {"path": [], "bytes": []}
        for a in anchors:
            self._render_anchor(root, a, record)
        for s in tqdm(streams, desc=f"render shard {shard}", unit="stream"):
            self._render_stream(root, s, record)
        return pa.table(record, schema=RENDER_SCHEMA)

    def _put(self, root: Path, rel: str, data: bytes, record: dict[str, list[Any]]) -> None:
        _write_bytes(root, rel, data)
        record["path"].append(rel)
        record["bytes"].append(len(data))

    def _render_anchor(self, root: Path, a: int, record: dict[str, list[Any]]) -> None:
        if self.image_cols["anchor"] is None:
            return
        aid = self.anchor_ids[a]
        reach, skill = float(self.lat.anchor_reach[a]), float(self.lat.anchor_skill[a])
        data = self._image_bytes("anchor", a, lambda r: render.anchor_avatar(r, self.cfg.image_size, reach, skill))
        self._put(root, self._image_path("anchor", a, "media/anchors", aid), data, record)

    def _render_stream(self, root: Path, s: int, record: dict[str, list[Any]]) -> None:
        lat, size, sid = self.lat, self.cfg.image_size, self.stream_ids[s]
        folder = f"media/streams/{sid}"
        variant = self.plan.missing.get(s, ("",))[0]
        if self.image_cols["room"] is not None and variant != "room_image_null":
            q, hue = float(lat.room_attractiveness[s]), self._room_hue(s)
            data = self._image_bytes("room", s, lambda r: render.room_cover(r, size, q, hue))
            self._put(root, self._image_path("room", s, folder, "room"), data, record)
        if self.image_cols["commodity"] is not None:
            for i in range(int(lat.item_offsets[s]), int(lat.item_offsets[s + 1])):
                args = (float(lat.item_appeal[i]), float(lat.item_price[i]), float(lat.item_discount[i]),
                        int(lat.item_category[i]), None if lat.item_photo_colour is None else
                        int(lat.item_photo_colour[i]))
                data = self._image_bytes("item", i, lambda r: render.item_photo(r, size, *args), self._item_mix())
                self._put(root, self._image_path("item", i, folder, self.item_ids[i], self._item_mix()), data, record)
        if variant != "no_audio_clips":
            for pos, c in enumerate(range(int(lat.audio_offsets[s]), int(lat.audio_offsets[s + 1]))):
                self._put(root, self._clip_path(s, "audio", pos, c), self._audio_clip_bytes(c, s), record)
        for pos, c in enumerate(range(int(lat.video_offsets[s]), int(lat.video_offsets[s + 1]))):
            self._put(root, self._clip_path(s, "video", pos, c), self._video_clip_bytes(c, s), record)


def _writer(cfg: dict[str, Any], columns: dict[str, dict[str, list[str]]] | None) -> _Writer:
    sources = column_sources(DEFAULT_COLUMNS if columns is None else columns)
    return _Writer(simulate_latents(SimulatorConfig.from_dict(cfg)), sources)


def write_tables(root: str | Path, cfg: dict[str, Any], columns: dict[str, dict[str, list[str]]] | None = None,
                 ) -> SimulationSummary:
    """Write the tables, ground truth, latents, defect records and dataset.json of a simulated dataset into ``root``,
    without rendering media (:func:`render_shard` does; the tables already name every media file).

    Args:
        root: output folder (created).
        cfg: the ``simulator`` section of config.yaml; with ``media: false`` the tables have no media columns and no
            media are to be rendered.
        columns: the config's ``columns`` mapping (entity -> modality -> column names); None means
            ``contract.DEFAULT_COLUMNS``. The i-th listed column holds the i-th paper attribute of its entity and
            modality.
    """
    start = time.perf_counter()
    writer = _writer(cfg, columns)
    return _write_tables(Path(root), writer, DEFAULT_COLUMNS if columns is None else columns, start)


def _write_tables(root: Path, writer: _Writer, mapping: dict[str, dict[str, list[str]]],
                  start: float) -> SimulationSummary:
    world, config = writer.world, writer.cfg
    anchors = writer.anchors()
    streams, items = writer.streams()
    clips = writer.clips()
    defects = writer.defects.arrow()
    write_parquet(root / "anchors.parquet", anchors)
    write_parquet(root / "streams.parquet", streams)
    write_parquet(root / "items.parquet", items)
    write_parquet(root / "clips.parquet", clips)
    write_parquet(root / "ground_truth.parquet", world.ground_truth_table(writer.stream_ids))
    write_parquet(root / "latents.parquet", latents_table(
        world.latents, writer.stream_ids, writer.anchor_ids, writer.item_ids, FACTORS + world.model.factors))
    write_parquet(root / "defects.parquet", defects)

    report = world.report()
    names = defects.column("defect").to_pylist()
    counts = {name: names.count(name) for name in config.defects}
    for name, fraction in config.defects.items():
        if fraction > 0 and counts[name] == 0:
            log.warning("simulator.defects.%s = %g damaged nothing: no candidate objects under this column mapping",
                        name, fraction)
    write_json(root / "ground_truth.json", {**report, "defects": counts})
    n_video = pc.sum(pc.equal(clips.column("kind"), "video")).as_py() or 0
    sizes = {
        "streams": streams.num_rows, "anchors": anchors.num_rows, "items": items.num_rows,
        "video_clips": n_video, "audio_clips": clips.num_rows - n_video,
        "images": sum(t.num_rows - t.column(col).null_count for t, col in (
            (anchors, writer.image_cols["anchor"]), (items, writer.image_cols["commodity"]),
            (streams, writer.image_cols["room"])) if col is not None),
        "defects": defects.num_rows,
    }
    write_json(root / "dataset.json", {
        "generator": "memf.simulate", "version": VERSION, "seed": config.seed, "media": writer.media,
        "sizes": sizes, "simulator": config.to_dict(),
        "columns": mapping if writer.media else {e: {**m, "image": []} for e, m in mapping.items()},
        "column_sources": writer.sources,
    })
    target = report["target"]
    return SimulationSummary(
        root=root, n_streams=sizes["streams"], n_anchors=sizes["anchors"], n_items=sizes["items"],
        n_video_clips=sizes["video_clips"], n_audio_clips=sizes["audio_clips"], n_images=sizes["images"],
        n_defects=sizes["defects"], oracle_r2=report["oracle_r2"], target_mean=target["mean"],
        target_sd=target["sd"], seconds=time.perf_counter() - start, media=writer.media,
    )


def render_shard(root: str | Path, cfg: dict[str, Any], columns: dict[str, dict[str, list[str]]] | None,
                 shard: int, shards: int) -> RenderSummary:
    """Render the media of shard ``shard`` of ``shards`` into ``root`` and write its record
    (:func:`render_record_path`). The bytes of every file are the same whatever ``shards`` is.

    Raises:
        ValueError: ``simulator.media`` is false, or ``shard`` is not in ``0..shards - 1``.
    """
    start = time.perf_counter()
    if not 0 <= shard < shards:
        raise ValueError(f"render shard {shard}: expected one of 0..{shards - 1}")
    writer = _writer(cfg, columns)
    if not writer.media:
        raise ValueError("simulator.media: false, so there are no media to render")
    return _render(Path(root), writer, shard, shards, start)


def _render(root: Path, writer: _Writer, shard: int, shards: int, start: float) -> RenderSummary:
    record = writer.render(root, shard, shards)
    write_parquet(render_record_path(root, shard), record)
    total = pc.sum(record.column("bytes")).as_py() or 0
    log.info("render shard %d of %d: %d files, %d bytes", shard, shards, record.num_rows, total)
    return RenderSummary(shard=shard, shards=shards, files=record.num_rows, bytes=total,
                         seconds=time.perf_counter() - start)


def simulate(root: str | Path, cfg: dict[str, Any], columns: dict[str, dict[str, list[str]]] | None = None, *,
             shards: int = 1) -> SimulationSummary:
    """Write a simulated raw dataset with known ground truth into ``root``: :func:`write_tables`, then (unless
    ``simulator.media`` is false) every render shard in this process.

    Args:
        root: output folder (created); receives streams/anchors/items/clips.parquet, ``media/`` with the render
            records ``media/render-{k}.parquet``, ground_truth.parquet/.json, latents.parquet, defects.parquet and
            dataset.json.
        cfg: the ``simulator`` section of config.yaml.
        columns: the config's ``columns`` mapping; None means ``contract.DEFAULT_COLUMNS``.
        shards: how many render records the media are listed in (the workflow renders each in its own job); the
            files are the same for any value.

    Returns:
        Counts, the oracle R^2 and the wall time.
    """
    start = time.perf_counter()
    if shards < 1:
        raise ValueError(f"render shards: {shards}, expected at least 1")
    root = Path(root)
    writer = _writer(cfg, columns)
    summary = _write_tables(root, writer, DEFAULT_COLUMNS if columns is None else columns, start)
    if writer.media:
        for shard in range(shards):
            _render(root, writer, shard, shards, start)
    return dataclasses.replace(summary, seconds=time.perf_counter() - start)
