"""The padding rule: feature-store shards of one feature set -> the padded tensor file (docs/architecture.md).

For every stream of the validated dataset (all splits, ordered by stream_id):

- anchor and room fields take one vector (text, image) or one scalar (numeric) per configured column;
- items are taken in ``position`` order; an item missing any field's feature (its extraction failed) is dropped, and
  of the rest the first ``max_items`` are kept;
- video and audio clips are taken in ``position`` order (failed clips are not in the store) and the first
  ``max_clips`` are kept.

A stream is dropped when an anchor or room field has no feature, or when no item, video clip or audio clip is left.
Every dropped stream, dropped item and item or clip cut by a cap is one row of ``{feature_set}.truncated.parquet``
(stream_id, entity, object_id, reason). Item and clip axes are as long as the longest kept list (at most the cap).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from memf.core.io import DataError, read_json, write_parquet
from memf.data.contract import FIELD_ENTITIES, MODALITIES
from memf.data.dataset import load_clean
from memf.features.store import ClipShard, field_vectors, read_clip_shard, read_field_shard
from memf.padding.padded import Padded, write_padded

log = logging.getLogger(__name__)
FEATURE_SET_MODALITIES: tuple[str, ...] = ("text", "image", "numeric", "video", "audio")
TRUNCATED_SCHEMA = pa.schema(
    [("stream_id", pa.string()), ("entity", pa.string()), ("object_id", pa.string()), ("reason", pa.string())]
)


@dataclass(frozen=True)
class PadReport:
    streams: int
    dropped_streams: int
    records: int
    max_items: int
    max_clips: dict[str, int]


@dataclass
class _FieldStore:
    """One field modality's vectors, looked up by (stream_id, entity, owner_id, field)."""

    dim: int
    vectors: np.ndarray  # [N, D] (numeric: [N, 1])
    index: dict[tuple[str, str, str, str], int]
    meta: dict[str, Any]

    def get(self, stream_id: str, entity: str, owner_id: str, field: str) -> np.ndarray | None:
        i = self.index.get((stream_id, entity, owner_id, field))
        return None if i is None else self.vectors[i]


def _load_fields(paths: Sequence[str | Path], modality: str) -> _FieldStore:
    frames, metas = zip(*(read_field_shard(p) for p in paths), strict=True)
    _check_same(paths, metas)
    frame = pl.concat(frames)
    if modality == "numeric":
        vectors = frame["value"].to_numpy().astype(np.float32).reshape(-1, 1)
    else:
        vectors = field_vectors(frame)
    keys = zip(frame["stream_id"].to_list(), frame["entity"].to_list(), frame["owner_id"].to_list(), frame["field"].to_list())
    return _FieldStore(int(metas[0]["dim"]), vectors, {k: i for i, k in enumerate(keys)}, metas[0])


def _load_clips(paths: Sequence[str | Path]) -> tuple[dict[str, tuple[ClipShard, int]], dict[str, Any]]:
    shards = [read_clip_shard(p) for p in paths]
    _check_same(paths, [s.meta for s in shards])
    where = {sid: (shard, i) for shard in shards for i, sid in enumerate(shard.stream_ids)}
    return where, shards[0].meta


def _check_same(paths: Sequence[str | Path], metas: Sequence[Mapping[str, Any]]) -> None:
    for path, meta in zip(paths, metas, strict=True):
        if meta["identity"] != metas[0]["identity"]:
            raise DataError(f"{path}: extractor {meta['identity']['name']} differs from {paths[0]}'s {metas[0]['identity']['name']}")


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
) -> PadReport:
    """Build and write ``{feature_set}.h5`` and ``{feature_set}.truncated.parquet``.

    Args:
        data_dir: the validated dataset (``results/data``).
        feature_set: the feature set's name (stored as an attribute).
        shards: modality -> every shard file of the extractor the feature set names for it (all five modalities).
        columns: the config's ``columns`` section.
        max_items: cap on items per stream (``padding.max_items``).
        max_clips: cap on clips per stream and kind (``padding.max_clips``), or kind -> cap: a dataset to predict is
            cut to the clip axes of the model that predicts it, which may differ between video and audio.
        out: the padded HDF5 file.
        truncated_out: the record of everything dropped or cut.
        model_axes: the caps are a trained model's item and clip axes (a dataset to predict), which the records say.
    """
    missing = [m for m in FEATURE_SET_MODALITIES if not shards.get(m)]
    if missing:
        raise ValueError(f"feature set '{feature_set}': no shards for modalities {missing}")
    clip_caps = dict(max_clips) if isinstance(max_clips, Mapping) else {kind: max_clips for kind in ("video", "audio")}
    if max_items < 1 or sorted(clip_caps) != ["audio", "video"] or min(clip_caps.values()) < 1:
        raise ValueError(f"padding caps must be >= 1 for items, video and audio, got max_items={max_items}, "
                         f"max_clips={max_clips}")

    def beyond(what: str, cap: int) -> str:
        if model_axes:
            return f"truncated: beyond the {cap} {what} the model reads (its item and clip axes)"
        return f"truncated: beyond padding.max_{'items' if what == 'items' else 'clips'}={cap}"

    ds = load_clean(data_dir)
    stores = {m: _load_fields(shards[m], m) for m in MODALITIES}
    clips = {kind: _load_clips(shards[kind]) for kind in ("video", "audio")}
    fields = {e: {m: list(columns.get(e, {}).get(m, [])) for m in MODALITIES} for e in FIELD_ENTITIES}
    streams = ds.streams.sort("stream_id")
    items_of: dict[str, list[tuple[str, int]]] = {}
    for sid, iid, pos in ds.items.sort("stream_id", "position").select("stream_id", "item_id", "position").iter_rows():
        items_of.setdefault(sid, []).append((iid, pos))

    records: list[dict[str, str]] = []
    kept: list[dict[str, Any]] = []
    for row in streams.iter_rows(named=True):
        sid = row["stream_id"]
        stream: dict[str, Any] = {"row": row}
        reason = None
        for entity, owner in (("anchor", row["anchor_id"]), ("room", sid)):
            for m in MODALITIES:
                values = [stores[m].get(sid, entity, owner, f) for f in fields[entity][m]]
                gone = [f for f, v in zip(fields[entity][m], values, strict=True) if v is None]
                if gone and reason is None:
                    reason = f"stream dropped: no {m} feature for {entity} field {gone[0]}"
                stream[f"{entity}/{m}"] = values
        items = []
        for iid, pos in items_of.get(sid, []):
            item = {m: [stores[m].get(sid, "commodity", iid, f) for f in fields["commodity"][m]] for m in MODALITIES}
            gone = [(m, f) for m in MODALITIES for f, v in zip(fields["commodity"][m], item[m], strict=True) if v is None]
            if gone:
                records.append({"stream_id": sid, "entity": "commodity", "object_id": iid,
                                "reason": f"item dropped: no {gone[0][0]} feature for field {gone[0][1]}"})
            elif len(items) >= max_items:
                records.append({"stream_id": sid, "entity": "commodity", "object_id": iid,
                                "reason": beyond("items", max_items)})
            else:
                items.append(item)
        stream["items"] = items
        if not items and reason is None:
            reason = "stream dropped: no commodity left"
        for kind, (where, _) in clips.items():
            shard, i = where.get(sid, (None, -1))
            rows = shard.clips_of(i) if shard is not None else slice(0, 0)
            vecs = shard.vectors[rows] if shard is not None else np.zeros((0, 0), np.float32)
            ids = shard.clip_ids[rows] if shard is not None else []
            cap = clip_caps[kind]
            for cid in ids[cap:]:
                records.append({"stream_id": sid, "entity": kind, "object_id": str(cid),
                                "reason": beyond(f"{kind} clips", cap)})
            stream[kind] = vecs[:cap]
            if len(vecs) == 0 and reason is None:
                reason = f"stream dropped: no {kind} clip left"
        if reason is not None:
            records.append({"stream_id": sid, "entity": "stream", "object_id": sid, "reason": reason})
        else:
            kept.append(stream)

    n = len(kept)
    if n == 0:
        raise DataError(f"feature set '{feature_set}': every one of {streams.height} streams was dropped (see the reasons in {truncated_out})")
    m_items = max(len(s["items"]) for s in kept)
    c_len = {kind: max(len(s[kind]) for s in kept) for kind in clips}
    dims = {m: stores[m].dim for m in MODALITIES}
    arrays: dict[str, np.ndarray] = {}
    for entity in ("anchor", "room"):
        for m in MODALITIES:
            width = len(fields[entity][m])
            if m == "numeric":
                arrays[f"{entity}/{m}"] = np.array([[v[0] for v in s[f"{entity}/{m}"]] for s in kept], np.float32).reshape(n, width)
            else:
                arrays[f"{entity}/{m}"] = np.array([s[f"{entity}/{m}"] for s in kept], np.float32).reshape(n, width, dims[m])
    for m in MODALITIES:
        width = len(fields["commodity"][m])
        shape = (n, m_items, width) if m == "numeric" else (n, m_items, width, dims[m])
        arrays[f"commodity/{m}"] = np.zeros(shape, np.float32)
    arrays["commodity/mask"] = np.zeros((n, m_items), bool)
    for kind in clips:
        arrays[f"{kind}/x"] = np.zeros((n, c_len[kind], clips[kind][1]["dim"]), np.float32)
        arrays[f"{kind}/mask"] = np.zeros((n, c_len[kind]), bool)
    for r, s in enumerate(kept):
        for j, item in enumerate(s["items"]):
            for m in MODALITIES:
                values = np.array(item[m], np.float32).reshape(len(item[m]), dims[m])  # [fields, D]
                arrays[f"commodity/{m}"][r, j] = values[:, 0] if m == "numeric" else values
        arrays["commodity/mask"][r, : len(s["items"])] = True
        for kind in clips:
            arrays[f"{kind}/x"][r, : len(s[kind])] = s[kind]
            arrays[f"{kind}/mask"][r, : len(s[kind])] = True

    extractors = {m: {**stores[m].meta["identity"], "weights": stores[m].meta["weights_id"], "dim": dims[m]} for m in MODALITIES}
    for kind in clips:
        meta = clips[kind][1]
        extractors[kind] = {**meta["identity"], "weights": meta["weights_id"], "dim": meta["dim"]}
    padded = Padded(
        stream_id=np.array([s["row"]["stream_id"] for s in kept], dtype=object),
        fold=np.array([s["row"]["fold"] for s in kept], np.int8),
        target=np.array([s["row"]["target"] for s in kept], np.float32),
        folds=int(read_json(Path(data_dir) / "dataset.json")["folds"]["k"]),
        arrays=arrays,
        attrs={"feature_set": feature_set, "extractors": extractors, "fields": fields,
               "caps": {"max_items": max_items, "max_clips": max_clips if isinstance(max_clips, int) else clip_caps}},
    )
    write_padded(out, padded)
    write_parquet(truncated_out, pa.Table.from_pylist(records, schema=TRUNCATED_SCHEMA))
    report = PadReport(n, streams.height - n, len(records), m_items, c_len)
    log.info("feature set %s: %d streams kept, %d dropped, %d records; items axis %d, clip axes %s",
             feature_set, n, report.dropped_streams, len(records), m_items, c_len)
    return report
