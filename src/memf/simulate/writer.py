"""Writing a simulated raw dataset: tables, media, ground truth and defect records (docs/simulator.md).

Randomness: the latents come from ``default_rng(seed)`` and the world's own stream
(:func:`memf.simulate.truth.simulate_latents`); every object's attributes and media use their own generator
``default_rng([seed, kind, index, purpose])``, so an object's values do not depend on the order of rendering or on
which other columns are written. The latents a world adds (an item's colours, an anchor's field and audience) are
handed to the renderers without changing the default world's random draws (an anchor's world text has its own
stream), so a world changes exactly what it renders differently.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from tqdm import tqdm

from memf.data.contract import DEFAULT_COLUMNS
from memf.core.io import atomic_path, write_json, write_parquet
from memf.core.version import VERSION
from memf.simulate import attributes, render, vocab
from memf.simulate.defects import WAV_HEADER_KEEP, DefectPlan, garbage_bytes, plan_defects
from memf.simulate.factors import FACTORS, latents_table
from memf.simulate.truth import World, simulate_latents
from memf.simulate.params import SimulatorConfig, column_sources

log = logging.getLogger(__name__)

# Codes of the per-object random streams.
ANCHOR, ITEM, ROOM, VIDEO, AUDIO = 1, 2, 3, 4, 5
# Purposes: text and numbers, media, damaged media, the room's colour (shared by its cover and its video clips), the
# text a world sets from its own latents.
ATTRIBUTES, MEDIA, DAMAGE, HUE, WORLD = 0, 1, 2, 3, 4

_ARROW_TYPE = {"text": pa.string(), "image": pa.string(), "numeric": pa.float64()}


@dataclass(frozen=True)
class SimulationSummary:
    """What :func:`simulate` wrote."""

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


def _rng(seed: int, kind: int, index: int, purpose: int) -> np.random.Generator:
    return np.random.default_rng([seed, kind, index, purpose])


def _ids(prefix: str, n: int, width: int) -> list[str]:
    width = max(width, len(str(max(n - 1, 0))))
    return [f"{prefix}{i:0{width}d}" for i in range(n)]


def _write_bytes(root: Path, rel: str, data: bytes) -> None:
    with atomic_path(root / rel) as tmp:
        tmp.write_bytes(data)


class _Table:
    """Column-wise rows of one output table with a fixed Arrow schema."""

    def __init__(self, schema: dict[str, pa.DataType]):
        self.schema = schema
        self.cols: dict[str, list[Any]] = {name: [] for name in schema}

    def add(self, row: dict[str, Any]) -> None:
        if row.keys() != self.cols.keys():
            raise AssertionError(f"row keys {sorted(row)} != table columns {sorted(self.cols)}")
        for name, value in row.items():
            self.cols[name].append(value)

    def arrow(self) -> pa.Table:
        return pa.table({name: pa.array(vals, type=self.schema[name]) for name, vals in self.cols.items()})

    def __len__(self) -> int:
        return len(next(iter(self.cols.values())))


def _attribute_schema(sources: dict[str, dict[str, dict[str, str]]], entity: str) -> dict[str, pa.DataType]:
    return {col: _ARROW_TYPE[mod] for mod, cols in sources[entity].items() for col in cols}


def _fields(sources: dict[str, dict[str, dict[str, str]]], entity: str, values: dict[str, Any]) -> dict[str, Any]:
    """Written column -> value, for the text and numeric attributes (paper name -> value in ``values``)."""
    return {col: values[paper] for mod in ("text", "numeric") for col, paper in sources[entity][mod].items()}


def _at(values: np.ndarray | None, index: int) -> Any:
    """``values[index]`` as a Python scalar, or None where the world does not draw that latent."""
    return None if values is None else values[index].item()


def _image_column(sources: dict[str, dict[str, dict[str, str]]], entity: str) -> str | None:
    cols = list(sources[entity]["image"])
    return cols[0] if cols else None


class _Writer:
    """Renders one world into ``root``; :func:`simulate` drives it."""

    def __init__(self, root: Path, world: World, sources: dict[str, dict[str, dict[str, str]]]):
        cfg = world.config
        lat = world.latents
        self.root, self.world, self.cfg, self.lat, self.sources = root, world, cfg, lat, sources
        self.stream_ids = _ids("s", lat.n_streams, 5)
        self.anchor_ids = _ids("a", len(lat.anchor_reach), 4)
        self.item_ids = _ids("i", int(lat.item_offsets[-1]), 6)
        self.image_cols = {e: _image_column(sources, e) for e in ("anchor", "commodity", "room")}
        self.anchors_used = sorted(set(lat.stream_anchor.tolist()))
        self.plan: DefectPlan = plan_defects(
            cfg.seed, cfg.defects, lat.item_offsets, lat.audio_offsets, len(lat.video_energy), self.anchors_used,
            list(sources["commodity"]["text"]), self.image_cols,
        )
        self.defects = _Table({
            "defect": pa.string(), "variant": pa.string(), "table": pa.string(), "object_id": pa.string(),
            "stream_id": pa.string(), "field": pa.string(), "path": pa.string(),
        })
        self.n_images = 0

    # --- media -------------------------------------------------------------------------------------------------
    def _image(self, kind: str, index: int, folder: str, name: str,
               rgb_fn: Callable[[np.random.Generator], np.ndarray], object_id: str,
               stream_id: str | None, table: str, column: str, mix: str | None = None) -> str:
        """Render, encode and write one image as ``folder/name.<ext>``; return its relative path. ``mix`` names the
        encoding mix (``render.IMAGE_MIX``), by default the kind's."""
        code = {"anchor": ANCHOR, "item": ITEM, "room": ROOM}[kind]
        self.n_images += 1
        if (kind, index) in self.plan.corrupt_images:
            rel = f"{folder}/{name}.jpg"
            _write_bytes(self.root, rel, garbage_bytes(_rng(self.cfg.seed, code, index, DAMAGE)))
            self._defect("corrupt_image", "garbage_bytes", table, object_id, stream_id, column, rel)
            return rel
        rng = _rng(self.cfg.seed, code, index, MEDIA)
        encoding = render.choose_encoding(rng, mix or kind)
        rel = f"{folder}/{name}{render.IMAGE_ENCODINGS[encoding][0]}"
        _write_bytes(self.root, rel, render.encode_image(rgb_fn(rng), encoding))
        return rel

    def _defect(self, defect: str, variant: str, table: str, object_id: str, stream_id: str | None,
                field: str | None, path: str | None) -> None:
        self.defects.add({"defect": defect, "variant": variant, "table": table, "object_id": object_id,
                          "stream_id": stream_id, "field": field, "path": path})

    # --- entities ----------------------------------------------------------------------------------------------
    def anchors(self) -> pa.Table:
        table = _Table({"anchor_id": pa.string(), **_attribute_schema(self.sources, "anchor")})
        for a in self.anchors_used:
            reach, skill = float(self.lat.anchor_reach[a]), float(self.lat.anchor_skill[a])
            rng = _rng(self.cfg.seed, ANCHOR, a, ATTRIBUTES)
            values = {**vocab.anchor_text(rng, reach, skill), **attributes.anchor_numeric(rng, reach, skill)}
            if self.lat.anchor_field is not None:  # fit world: the field and audience are latents
                values.update(vocab.anchor_profile(_rng(self.cfg.seed, ANCHOR, a, WORLD), int(self.lat.anchor_field[a]),
                                                   float(self.lat.anchor_audience[a]), values["tags"]))
            row = {"anchor_id": self.anchor_ids[a], **_fields(self.sources, "anchor", values)}
            col = self.image_cols["anchor"]
            if col is not None:
                row[col] = self._image(
                    "anchor", a, "media/anchors", self.anchor_ids[a],
                    lambda r: render.anchor_avatar(r, self.cfg.image_size, reach, skill), self.anchor_ids[a], None,
                    "anchors", col,
                )
            table.add(row)
        return table.arrow()

    def streams(self) -> tuple[pa.Table, pa.Table, pa.Table]:
        lat = self.lat
        streams = _Table({"stream_id": pa.string(), "anchor_id": pa.string(), "sales": pa.float64(),
                          **_attribute_schema(self.sources, "room")})
        items = _Table({"stream_id": pa.string(), "item_id": pa.string(), "position": pa.int64(),
                        **_attribute_schema(self.sources, "commodity")})
        clips = _Table({"stream_id": pa.string(), "clip_id": pa.string(), "kind": pa.string(),
                        "position": pa.int64(), "path": pa.string()})
        sales = self.world.sales
        for s in tqdm(range(lat.n_streams), desc="simulate streams", unit="stream"):
            sid = self.stream_ids[s]
            folder = f"media/streams/{sid}"
            missing = self.plan.missing.get(s, ("", -1, ""))
            if missing[0]:
                obj = self.item_ids[missing[1]] if missing[0] == "item_text_null" else sid
                table = {"item_text_null": "items", "room_image_null": "streams", "no_audio_clips": "clips"}[missing[0]]
                self._defect("missing_modality", missing[0], table, obj, sid, missing[2] or None, None)
            streams.add(self._room_row(s, sid, folder, float(sales[s]), missing[0] == "room_image_null"))
            for pos, i in enumerate(range(int(lat.item_offsets[s]), int(lat.item_offsets[s + 1]))):
                row = self._item_row(i, sid, pos, folder)
                if missing[0] == "item_text_null" and missing[1] == i:
                    row[missing[2]] = None
                items.add(row)
            if missing[0] != "no_audio_clips":
                for pos, c in enumerate(range(int(lat.audio_offsets[s]), int(lat.audio_offsets[s + 1]))):
                    clips.add(self._audio_clip(c, s, pos, folder))
            for pos, c in enumerate(range(int(lat.video_offsets[s]), int(lat.video_offsets[s + 1]))):
                clips.add(self._video_clip(c, s, pos, folder))
        return streams.arrow(), items.arrow(), clips.arrow()

    def _room_hue(self, s: int) -> float:
        return float(_rng(self.cfg.seed, ROOM, s, HUE).random())

    def _room_row(self, s: int, sid: str, folder: str, sales: float, image_null: bool) -> dict[str, Any]:
        lat = self.lat
        q = float(lat.room_attractiveness[s])
        rng = _rng(self.cfg.seed, ROOM, s, ATTRIBUTES)
        main_category = int(lat.item_category[lat.item_offsets[s]])
        values = {**vocab.room_text(rng, q, main_category),
                  **attributes.room_numeric(rng, float(lat.room_duration[s]))}
        row = {"stream_id": sid, "anchor_id": self.anchor_ids[int(lat.stream_anchor[s])], "sales": sales,
               **_fields(self.sources, "room", values)}
        col = self.image_cols["room"]
        if col is not None:
            hue = self._room_hue(s)
            row[col] = None if image_null else self._image(
                "room", s, folder, "room", lambda r: render.room_cover(r, self.cfg.image_size, q, hue), sid, sid,
                "streams", col,
            )
        return row

    def _item_row(self, i: int, sid: str, pos: int, folder: str) -> dict[str, Any]:
        lat = self.lat
        appeal, price = float(lat.item_appeal[i]), float(lat.item_price[i])
        discount, category = float(lat.item_discount[i]), int(lat.item_category[i])
        photo_colour, title_colour = _at(lat.item_photo_colour, i), _at(lat.item_title_colour, i)
        rng = _rng(self.cfg.seed, ITEM, i, ATTRIBUTES)
        values = {**vocab.item_text(rng, appeal, price, discount, category, title_colour),
                  **attributes.item_numeric(rng, price, discount, category)}
        row = {"stream_id": sid, "item_id": self.item_ids[i], "position": pos,
               **_fields(self.sources, "commodity", values)}
        col = self.image_cols["commodity"]
        if col is not None:
            row[col] = self._image(
                "item", i, folder, self.item_ids[i],
                lambda r: render.item_photo(r, self.cfg.image_size, appeal, price, discount, category, photo_colour),
                self.item_ids[i], sid, "items", col, mix="item" if photo_colour is None else "item_colour",
            )
        return row

    def _video_bytes(self, rng: np.random.Generator, energy: float, hue: float) -> bytes:
        v = self.cfg.video
        return render.encode_video(render.video_frames(rng, energy, v.size, v.frames, hue), v.fps)

    def _video_clip(self, c: int, s: int, pos: int, folder: str) -> dict[str, Any]:
        sid = self.stream_ids[s]
        clip_id = f"{sid}-v{pos}"
        rel = f"{folder}/{clip_id}.mp4"
        data = self._video_bytes(_rng(self.cfg.seed, VIDEO, c, MEDIA), float(self.lat.video_energy[c]),
                                 self._room_hue(s))
        if c in self.plan.truncated_videos:
            data = data[: len(data) // 2]
            self._defect("truncated_video", "half_bytes", "clips", clip_id, sid, "path", rel)
        _write_bytes(self.root, rel, data)
        return {"stream_id": sid, "clip_id": clip_id, "kind": "video", "position": pos, "path": rel}

    def _audio_clip(self, c: int, s: int, pos: int, folder: str) -> dict[str, Any]:
        sid = self.stream_ids[s]
        clip_id = f"{sid}-a{pos}"
        rng = _rng(self.cfg.seed, AUDIO, c, MEDIA)
        rates = self.cfg.audio.sample_rates
        rate = int(rates[int(rng.integers(len(rates)))])
        if c in self.plan.no_audio_stream:
            rel = f"{folder}/{clip_id}.mp4"
            data = self._video_bytes(_rng(self.cfg.seed, AUDIO, c, DAMAGE), float(self.lat.audio_energy[c]),
                                     self._room_hue(s))
            self._defect("no_audio_stream", "video_only_mp4", "clips", clip_id, sid, "path", rel)
        else:
            rel = f"{folder}/{clip_id}.wav"
            wave = render.audio_wave(rng, float(self.lat.audio_energy[c]), float(self.lat.audio_tempo[c]),
                                     self.cfg.audio.seconds, rate)
            data = render.encode_wav(wave, rate)
            if c in self.plan.corrupt_audio:
                data = data[:WAV_HEADER_KEEP]
                self._defect("corrupt_audio", "truncated_header", "clips", clip_id, sid, "path", rel)
        _write_bytes(self.root, rel, data)
        return {"stream_id": sid, "clip_id": clip_id, "kind": "audio", "position": pos, "path": rel}


def simulate(root: str | Path, cfg: dict[str, Any], columns: dict[str, dict[str, list[str]]] | None = None
             ) -> SimulationSummary:
    """Write a simulated raw dataset with known ground truth into ``root``.

    Args:
        root: output folder (created); receives streams/anchors/items/clips.parquet, ``media/``,
            ground_truth.parquet/.json, latents.parquet, defects.parquet and dataset.json.
        cfg: the ``simulator`` section of config.yaml.
        columns: the config's ``columns`` mapping (entity -> modality -> column names); None means
            ``contract.DEFAULT_COLUMNS``. The i-th listed column holds the i-th paper attribute of its entity and
            modality.

    Returns:
        Counts, the oracle R^2 and the wall time.
    """
    start = time.perf_counter()
    root = Path(root)
    config = SimulatorConfig.from_dict(cfg)
    mapping = DEFAULT_COLUMNS if columns is None else columns
    sources = column_sources(mapping)
    world = simulate_latents(config)
    writer = _Writer(root, world, sources)

    anchors = writer.anchors()
    streams, items, clips = writer.streams()
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
    kinds = clips.column("kind").to_pylist()
    counts = {name: defects.column("defect").to_pylist().count(name) for name in config.defects}
    for name, fraction in config.defects.items():
        if fraction > 0 and counts[name] == 0:
            log.warning("simulator.defects.%s = %g damaged nothing: no candidate objects under this column mapping",
                        name, fraction)
    write_json(root / "ground_truth.json", {**report, "defects": counts})
    sizes = {
        "streams": streams.num_rows, "anchors": anchors.num_rows, "items": items.num_rows,
        "video_clips": kinds.count("video"), "audio_clips": kinds.count("audio"), "images": writer.n_images,
        "defects": defects.num_rows,
    }
    write_json(root / "dataset.json", {
        "generator": "memf.simulate", "version": VERSION, "seed": config.seed, "sizes": sizes,
        "simulator": config.to_dict(), "columns": mapping, "column_sources": sources,
    })
    target = report["target"]
    return SimulationSummary(
        root=root, n_streams=sizes["streams"], n_anchors=sizes["anchors"], n_items=sizes["items"],
        n_video_clips=sizes["video_clips"], n_audio_clips=sizes["audio_clips"], n_images=sizes["images"],
        n_defects=sizes["defects"], oracle_r2=report["oracle_r2"], target_mean=target["mean"],
        target_sd=target["sd"], seconds=time.perf_counter() - start,
    )
