"""The padding rule: feature-store shards of one feature set -> the padded store (docs/architecture.md).

For every stream of the validated dataset (all splits, ordered by stream_id):

- anchor and room fields take one vector (text, image) or one scalar (numeric) per configured column;
- items are taken in ``position`` order; an item missing any field's feature (its extraction failed) is dropped, and
  of the rest the first ``max_items`` are kept;
- video and audio clips are taken in ``position`` order (failed clips are not in the store) and the first
  ``max_clips`` are kept.

A stream is dropped when an anchor or room field has no feature, or when no item, video clip or audio clip is left.
Every dropped stream, dropped item and item or clip cut by a cap is one row of ``{feature_set}.truncated.parquet``
(stream_id, entity, object_id, reason). The store keeps items and clips ragged (:mod:`memf.padding.store`); its
``axes`` are the longest kept lists (at most the caps).

Memory does not grow with the number of streams: each shard of the feature store is read once, front to back, a
block of :data:`PAD_BLOCK` streams at a time (:mod:`memf.padding.sources`), into a temporary piece in the store
layout (the shard's kept streams in stream_id order); the pieces are then merged by stream_id into the store, a
block at a time. Only the ids, folds and targets of the streams and the ids of their items are held whole.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import polars as pl
import pyarrow as pa

from memf.core.io import DataError, atomic_path, read_json, write_parquet
from memf.data.contract import CLIP_KINDS, FIELD_ENTITIES, MODALITIES
from memf.data.dataset import shard_of
from memf.padding.latent import pad_latents
from memf.padding.padded import RaggedBlock
from memf.padding.sources import ClipSource, FieldRows, FieldSource, StreamClips, shard_meta, validated_table
from memf.padding.store import PaddedStore, PadReport, StoreWriter

#: The padding rules' functions: ``pad`` (feature sets) and ``pad_latent`` (the latent feature set, built in
#: :mod:`memf.padding.latent`; named here so that the pad stage's code version covers it, memf.core.version).
__all__ = ["PadReport", "pad_feature_set", "pad_latents"]
log = logging.getLogger(__name__)
FEATURE_SET_MODALITIES: tuple[str, ...] = ("text", "image", "numeric", "video", "audio")
TRUNCATED_SCHEMA = pa.schema(
    [("stream_id", pa.string()), ("entity", pa.string()), ("object_id", pa.string()), ("reason", pa.string())]
)
#: Streams assembled, and merged, at once.
PAD_BLOCK = 256


@dataclass(frozen=True)
class _Rules:
    """What decides a stream's arrays: the configured fields, the caps and how a cut is recorded."""

    fields: dict[str, dict[str, list[str]]]  # entity -> modality -> column names
    max_items: int
    clip_caps: dict[str, int]  # kind -> cap
    model_axes: bool  # the caps are a trained model's axes (a dataset to predict)

    def beyond(self, what: str, cap: int) -> str:
        if self.model_axes:
            return f"truncated: beyond the {cap} {what} the model reads (its item and clip axes)"
        return f"truncated: beyond padding.max_{'items' if what == 'items' else 'clips'}={cap}"


@dataclass
class _Stream:
    """One kept stream: the rows of its field vectors in the block's :class:`FieldRows`, and its clips."""

    row: dict[str, Any]  # stream_id, anchor_id, fold, target
    fixed: dict[str, list[int]] = field(default_factory=dict)  # "{entity}/{modality}" -> a row per field
    items: list[dict[str, list[int]]] = field(default_factory=list)  # per kept item: modality -> a row per field
    clips: dict[str, np.ndarray] = field(default_factory=dict)  # kind -> [n, D]


def _rules(shards: Mapping[str, Sequence[Any]], columns: Mapping[str, Mapping[str, list[str]]], feature_set: str,
           max_items: int, max_clips: int | Mapping[str, int], model_axes: bool) -> _Rules:
    missing = [m for m in FEATURE_SET_MODALITIES if not shards.get(m)]
    if missing:
        raise ValueError(f"feature set '{feature_set}': no shards for modalities {missing}")
    counts = {m: len(shards[m]) for m in FEATURE_SET_MODALITIES}
    if len(set(counts.values())) != 1:
        raise ValueError(f"feature set '{feature_set}': shard counts {counts} differ; every modality's shards must "
                         "come from one extraction.shards")
    clip_caps = dict(max_clips) if isinstance(max_clips, Mapping) else dict.fromkeys(CLIP_KINDS, max_clips)
    if max_items < 1 or sorted(clip_caps) != ["audio", "video"] or min(clip_caps.values()) < 1:
        raise ValueError(f"padding caps must be >= 1 for items, video and audio, got max_items={max_items}, "
                         f"max_clips={max_clips}")
    fields = {e: {m: list(columns.get(e, {}).get(m, [])) for m in MODALITIES} for e in FIELD_ENTITIES}
    return _Rules(fields, max_items, clip_caps, model_axes)


def _record(records: list[dict[str, str]], sid: str, entity: str, object_id: str, reason: str) -> None:
    records.append({"stream_id": sid, "entity": entity, "object_id": object_id, "reason": reason})


def _fixed_fields(stream: _Stream, rows: Mapping[str, FieldRows], rules: _Rules) -> str | None:
    """Look up the anchor's and the room's fields; the reason to drop the stream when one is missing."""
    sid, reason = stream.row["stream_id"], None
    for entity, owner in (("anchor", stream.row["anchor_id"]), ("room", sid)):
        for m in MODALITIES:
            found = [rows[m].get(sid, entity, owner, f) for f in rules.fields[entity][m]]
            gone = [f for f, i in zip(rules.fields[entity][m], found, strict=True) if i is None]
            if gone and reason is None:
                reason = f"stream dropped: no {m} feature for {entity} field {gone[0]}"
            stream.fixed[f"{entity}/{m}"] = [-1 if i is None else i for i in found]
    return reason


def _items(stream: _Stream, items: Sequence[tuple[str, int]], rows: Mapping[str, FieldRows], rules: _Rules,
           records: list[dict[str, str]]) -> None:
    """Keep the stream's items in position order: an item missing a field's feature is dropped, and of the rest the
    first ``max_items`` are kept; both are recorded."""
    sid, fields = stream.row["stream_id"], rules.fields["commodity"]
    for iid, _ in items:
        item = {m: [rows[m].get(sid, "commodity", iid, f) for f in fields[m]] for m in MODALITIES}
        gone = [(m, f) for m in MODALITIES for f, i in zip(fields[m], item[m], strict=True) if i is None]
        if gone:
            _record(records, sid, "commodity", iid, f"item dropped: no {gone[0][0]} feature for field {gone[0][1]}")
        elif len(stream.items) >= rules.max_items:
            _record(records, sid, "commodity", iid, rules.beyond("items", rules.max_items))
        else:
            stream.items.append(item)  # type: ignore[arg-type]


def _clips(stream: _Stream, clips: Mapping[str, Mapping[str, StreamClips]], dims: Mapping[str, int], rules: _Rules,
           records: list[dict[str, str]]) -> str | None:
    """Keep the first ``max_clips`` clips of each kind (the rest recorded); the reason to drop a stream without."""
    sid, reason = stream.row["stream_id"], None
    for kind in CLIP_KINDS:
        mine = clips[kind].get(sid)
        vectors = mine.vectors if mine is not None else np.zeros((0, dims[kind]), np.float32)
        cap = rules.clip_caps[kind]
        for cid in (mine.clip_ids[cap:] if mine is not None else []):
            _record(records, sid, kind, str(cid), rules.beyond(f"{kind} clips", cap))
        stream.clips[kind] = vectors[:cap]
        if len(vectors) == 0 and reason is None:
            reason = f"stream dropped: no {kind} clip left"
    return reason


def _stream(row: dict[str, Any], items: Sequence[tuple[str, int]], rows: Mapping[str, FieldRows],
            clips: Mapping[str, Mapping[str, StreamClips]], dims: Mapping[str, int], rules: _Rules,
            records: list[dict[str, str]]) -> _Stream | None:
    """One stream's kept items and clips (None: dropped); what is dropped or cut goes to ``records``, the stream's
    own record last."""
    stream = _Stream(row)
    reason = _fixed_fields(stream, rows, rules)
    _items(stream, items, rows, rules, records)
    if not stream.items and reason is None:
        reason = "stream dropped: no commodity left"
    clip_reason = _clips(stream, clips, dims, rules, records)  # cut clips are recorded whatever happens
    reason = reason if reason is not None else clip_reason
    if reason is not None:
        _record(records, row["stream_id"], "stream", row["stream_id"], reason)
        return None
    return stream


def _gather(rows: FieldRows, index: list[list[int]], width: int, numeric: bool) -> np.ndarray:
    """The vectors at ``index`` [n][L] -> [n, L, D] float32 (numeric: [n, L])."""
    at = np.asarray(index, np.int64).reshape(len(index), width)
    out = rows.vectors[at]  # [n, L, D]
    return out[..., 0] if numeric else out


def _block(kept: Sequence[_Stream], rows: Mapping[str, FieldRows]) -> RaggedBlock:
    """The kept streams of a block in the store layout."""
    fixed = {}
    for key in kept[0].fixed:
        m = key.partition("/")[2]
        fixed[key] = _gather(rows[m], [s.fixed[key] for s in kept], len(kept[0].fixed[key]), m == "numeric")
    objects = {}
    for m in MODALITIES:
        index = [item[m] for s in kept for item in s.items]
        objects[f"commodity/{m}"] = _gather(rows[m], index, len(kept[0].items[0][m]), m == "numeric")
    offsets = {"commodity": np.concatenate([[0], np.cumsum([len(s.items) for s in kept])]).astype(np.int64)}
    for kind in CLIP_KINDS:
        objects[f"{kind}/x"] = np.concatenate([s.clips[kind] for s in kept]).astype(np.float32)
        offsets[kind] = np.concatenate([[0], np.cumsum([len(s.clips[kind]) for s in kept])]).astype(np.int64)
    return RaggedBlock(np.array([s.row["stream_id"] for s in kept], dtype=object),
                       np.array([s.row["fold"] for s in kept], np.int8),
                       np.array([s.row["target"] for s in kept], np.float32), fixed, offsets, objects)


@dataclass
class _Shard:
    """One shard of the feature set: its streams, their items and the five sources, read front to back."""

    streams: pl.DataFrame  # stream_id, anchor_id, fold, target (ascending stream_id)
    items: pl.DataFrame  # stream_id, item_id, position of those streams (ascending stream_id, position)
    fields: dict[str, FieldSource]
    clips: dict[str, ClipSource]

    @property
    def dims(self) -> dict[str, int]:
        return {kind: source.dim for kind, source in self.clips.items()}

    def items_of(self, sids: Sequence[str]) -> dict[str, list[tuple[str, int]]]:
        """stream_id -> its (item_id, position) in position order, for the run of streams ``sids``."""
        column = self.items["stream_id"]
        lo, hi = int(column.search_sorted(sids[0], "left")), int(column.search_sorted(sids[-1], "right"))
        out: dict[str, list[tuple[str, int]]] = {}
        for sid, iid, pos in self.items[lo:hi].iter_rows():
            out.setdefault(sid, []).append((iid, pos))
        return out

    def close(self) -> None:
        for source in (*self.fields.values(), *self.clips.values()):
            source.close()


def _open_shard(k: int, streams: pl.DataFrame, items: pl.DataFrame, shards: Mapping[str, Sequence[Any]]) -> _Shard:
    mine = streams.filter(pl.col("shard") == k).drop("shard")
    owned = items.filter(pl.col("stream_id").is_in(mine["stream_id"].implode()))
    return _Shard(mine, owned, {m: FieldSource(shards[m][k], m) for m in MODALITIES},
                  {kind: ClipSource(shards[kind][k]) for kind in CLIP_KINDS})


def _pad_shard(shard: _Shard, rules: _Rules, piece: Path, dtype: str, records: list[dict[str, str]]) -> int:
    """Write the kept streams of ``shard`` to ``piece`` (the store layout); return how many were kept."""
    with h5py.File(piece, "w") as h5:
        writer = StoreWriter(h5, dtype)
        for start in range(0, shard.streams.height, PAD_BLOCK):
            block = shard.streams[start : start + PAD_BLOCK]
            sids = block["stream_id"].to_list()
            rows = {m: source.take(sids) for m, source in shard.fields.items()}
            clips = {kind: source.take(sids) for kind, source in shard.clips.items()}
            items = shard.items_of(sids)
            kept = [s for row in block.iter_rows(named=True)
                    if (s := _stream(row, items.get(row["stream_id"], []), rows, clips, shard.dims, rules,
                                     records)) is not None]
            if kept:
                writer.append(_block(kept, rows))
        writer.finish(0, {})
    return writer.rows


def _merge(pieces: Sequence[Path], out: Path, dtype: str, folds: int, attrs: Mapping[str, Any]) -> StoreWriter:
    """Merge the pieces (each in stream_id order) into the store at ``out``, :data:`PAD_BLOCK` streams at a time."""
    stores = [PaddedStore(p) for p in pieces]
    try:
        ids = np.concatenate([s.stream_id for s in stores])
        source = np.repeat(np.arange(len(stores)), [len(s) for s in stores])
        local = np.concatenate([np.arange(len(s)) for s in stores])
        order = np.argsort(ids, kind="stable")
        with atomic_path(out) as tmp, h5py.File(tmp, "w") as h5:
            writer = StoreWriter(h5, dtype)
            for start in range(0, len(order), PAD_BLOCK):
                sel = order[start : start + PAD_BLOCK]
                parts, picks = [], []
                for p in np.unique(source[sel]):
                    rows = local[sel][source[sel] == p]  # contiguous and ascending in piece p
                    parts.append(stores[p].read_range(int(rows[0]), int(rows[-1]) + 1))
                    picks.append(np.flatnonzero(source[sel] == p))
                block = RaggedBlock.concat(parts).take(np.argsort(np.concatenate(picks), kind="stable"))
                writer.append(block)
            writer.finish(folds, attrs)
    finally:
        for store in stores:
            store.close()
    return writer


def _attrs(shards: Mapping[str, Sequence[Any]], feature_set: str, rules: _Rules,
           max_clips: int | Mapping[str, int]) -> dict[str, Any]:
    """The store's attributes: feature set, extractors (identity, weights, dim per modality), fields, caps."""
    extractors = {}
    for m in FEATURE_SET_MODALITIES:
        metas = [shard_meta(p) for p in shards[m]]
        for path, meta in zip(shards[m], metas, strict=True):
            if meta["identity"] != metas[0]["identity"]:
                raise DataError(f"{path}: extractor {meta['identity']['name']} differs from {shards[m][0]}'s "
                                f"{metas[0]['identity']['name']}")
        extractors[m] = {**metas[0]["identity"], "weights": metas[0]["weights_id"], "dim": int(metas[0]["dim"])}
    caps = {"max_items": rules.max_items, "max_clips": max_clips if isinstance(max_clips, int) else rules.clip_caps}
    return {"feature_set": feature_set, "extractors": extractors, "fields": rules.fields, "caps": caps}


def pad_feature_set(
    *,
    data_dir: str | Path,
    feature_set: str,
    shards: Mapping[str, Sequence[str | Path]],
    columns: Mapping[str, Mapping[str, list[str]]],
    max_items: int,
    max_clips: int | Mapping[str, int],
    out: str | Path,
    truncated_out: str | Path,
    model_axes: bool = False,
    dtype: str = "float32",
) -> PadReport:
    """Build and write ``{feature_set}.h5`` and ``{feature_set}.truncated.parquet``, a block of streams at a time.

    Args:
        data_dir: the validated dataset (``results/data``).
        feature_set: the feature set's name (stored as an attribute).
        shards: modality -> every shard file of the extractor the feature set names for it (all five modalities,
            ``extraction.shards`` each, shard k holding the streams of ``memf.data.dataset.shard_of`` k).
        columns: the config's ``columns`` section.
        max_items: cap on items per stream (``padding.max_items``).
        max_clips: cap on clips per stream and kind (``padding.max_clips``), or kind -> cap: a dataset to predict is
            cut to the clip axes of the model that predicts it, which may differ between video and audio.
        out: the padded store.
        truncated_out: the record of everything dropped or cut.
        model_axes: the caps are a trained model's item and clip axes (a dataset to predict), which the records say.
        dtype: how feature vectors are stored (``padding.dtype``: float32 or float16).
    """
    rules = _rules(shards, columns, feature_set, max_items, max_clips, model_axes)
    attrs = _attrs(shards, feature_set, rules, max_clips)
    n_shards = len(shards["text"])
    streams = validated_table(data_dir, "streams", ["stream_id", "anchor_id", "fold", "target"])
    streams = streams.with_columns(shard=pl.Series([shard_of(s, n_shards) for s in streams["stream_id"]]))
    items = validated_table(data_dir, "items", ["stream_id", "item_id", "position"])
    records: list[dict[str, str]] = []
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.pieces-") as tmp:
        pieces = []
        for k in range(n_shards):
            piece = Path(tmp) / f"piece-{k}.h5"
            shard = _open_shard(k, streams, items, shards)
            try:
                if _pad_shard(shard, rules, piece, dtype, records):
                    pieces.append(piece)
            finally:
                shard.close()
        if not pieces:
            raise DataError(f"feature set '{feature_set}': every one of {streams.height} streams was dropped (see "
                            f"the reasons in {truncated_out})")
        split = read_json(Path(data_dir) / "dataset.json")["folds"]  # the run folds (memf.data.folds.FoldPlan)
        writer = _merge(pieces, out, dtype, int(split["k"]), {**attrs, "split": split})
    table = pa.Table.from_pylist(records, schema=TRUNCATED_SCHEMA)
    order = np.argsort(np.asarray(table["stream_id"].to_pylist(), dtype=object), kind="stable")
    write_parquet(truncated_out, table.take(pa.array(order)))
    n, clip_axes = writer.rows, {kind: writer.longest[kind] for kind in CLIP_KINDS}
    report = PadReport(n, streams.height - n, len(records), writer.longest["commodity"], clip_axes)
    log.info("feature set %s: %d streams kept, %d dropped, %d records; items axis %d, clip axes %s (%s)",
             feature_set, n, report.dropped_streams, len(records), report.max_items, clip_axes, dtype)
    return report
