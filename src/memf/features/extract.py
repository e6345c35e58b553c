"""Stage 1 jobs: extract one shard of one extractor from the validated dataset into the feature store.

:func:`extract_shard` is what the ``extract_{modality}`` rules call. Media files are decoded in isolated workers
(:func:`memf.core.isolate.isolated_map`) and embedded in batches taken in input order, so a shard's bytes do not depend on
which worker finished first. Every input that yields no feature is written to the shard's failures file.

The job's bounds (config ``limits``) hold for every decoder it runs (:func:`memf.data.media.applied_limits`, inherited
by the forked workers) and for texts (cut to ``max_text_chars`` before tokenising); numeric fields take their
column's transform from the numeric policy (config ``numeric``) and are stored unstandardised.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import torch

from memf.core.isolate import isolated_map
from memf.data.contract import FIELD_ENTITIES, MODALITY_LIMITS, Limits, numeric_transforms, unused_numeric_entries
from memf.data.dataset import CleanDataset, load_clean
from memf.data.media import applied_limits
from memf.features.base import Extractor, MediaExtractor, build_extractor
from memf.features.numeric import NumericTransform
from memf.features.spec import ExtractionSettings, ExtractorSpec, identity
from memf.features.store import (
    ClipShard,
    field_table,
    write_clip_shard,
    write_failures,
    write_field_shard,
)
from memf.features.text import TransformersText

log = logging.getLogger(__name__)
Failures = list[dict[str, str | None]]


@dataclass(frozen=True)
class ShardReport:
    """What one extraction job produced (also logged)."""

    modality: str
    extractor: str
    shard: int
    rows: int
    failures: int
    seconds: float


def field_rows(ds: CleanDataset, columns: Mapping[str, Mapping[str, list[str]]], modality: str) -> pl.DataFrame:
    """One row per (stream, entity, owner, field) of a field modality, in stream, entity, position, field order.

    Columns: stream_id, entity, owner_id, position (int32), field, value (the raw cell: text, relative path or number).
    """
    value_type = pl.Float64 if modality == "numeric" else pl.String
    parts: list[pl.DataFrame] = []
    for order, entity in enumerate(FIELD_ENTITIES):
        fields = list(columns.get(entity, {}).get(modality, []))
        if not fields:
            continue
        if entity == "anchor":
            base = ds.streams.select("stream_id", "anchor_id").join(ds.anchors, on="anchor_id", how="left")
            base = base.with_columns(owner_id=pl.col("anchor_id"), position=pl.lit(0))
        elif entity == "room":
            base = ds.streams.with_columns(owner_id=pl.col("stream_id"), position=pl.lit(0))
        else:
            base = ds.items.with_columns(owner_id=pl.col("item_id"), position=pl.col("position"))
        long = (
            base.select("stream_id", "owner_id", pl.col("position").cast(pl.Int32), *[pl.col(f).cast(value_type) for f in fields])
            .unpivot(index=["stream_id", "owner_id", "position"], on=fields, variable_name="field", value_name="value")
            .with_columns(
                entity=pl.lit(entity),
                entity_order=pl.lit(order),
                field_order=pl.col("field").replace_strict(fields, list(range(len(fields)))),
            )
        )
        parts.append(long)
    if not parts:
        return pl.DataFrame(schema={"stream_id": pl.String, "entity": pl.String, "owner_id": pl.String,
                                    "position": pl.Int32, "field": pl.String, "value": value_type})
    rows = pl.concat(parts).sort("stream_id", "entity_order", "position", "field_order")
    return rows.select("stream_id", "entity", "owner_id", "position", "field", "value")


def _prepare_in_worker(prepare: Callable[[str], np.ndarray], path: str) -> np.ndarray:
    """Run ``prepare`` in a forked decoding worker with one torch thread.

    A child forked after the parent ran a parallel torch op deadlocks in its first OpenMP region (resampling, for one),
    so the worker never uses more than one intra-op thread.
    """
    torch.set_num_threads(1)
    return prepare(path)


def embed_files(
    extractor: MediaExtractor, paths: list[str], desc: str | None = None
) -> tuple[np.ndarray, list[str | None]]:
    """Decode ``paths`` in isolated workers and embed them in input-order batches.

    Returns ``[N, D]`` vectors (zeros where decoding failed) and, per path, None or the failure reason.
    """
    vectors = np.zeros((len(paths), extractor.dim), dtype=np.float32)
    reasons: list[str | None] = [None] * len(paths)
    ready: dict[int, np.ndarray | None] = {}
    batch: list[int] = []
    inputs: list[np.ndarray] = []
    next_index = 0

    def flush() -> None:
        if batch:
            vectors[batch] = extractor.embed(inputs)
            batch.clear()
            inputs.clear()

    workers = extractor.settings.workers
    outcomes = isolated_map(
        functools.partial(_prepare_in_worker, extractor.prepare),
        paths,
        workers=workers,
        timeout_s=extractor.settings.timeout_s,
        prefetch=max(1, -(-extractor.batch_size // workers)),  # a batch's worth queued while the model runs
        desc=desc,
    )
    for outcome in outcomes:
        ready[outcome.index] = outcome.value if outcome.ok else None
        if not outcome.ok:
            reasons[outcome.index] = outcome.failure.reason
        while next_index in ready:
            value = ready.pop(next_index)
            if value is not None:
                batch.append(next_index)
                inputs.append(value)
            next_index += 1
            if len(batch) == extractor.batch_size:
                flush()
    flush()
    return vectors, reasons


def _failure(row: Mapping[str, Any], reason: str, file: str | None = None) -> dict[str, str | None]:
    return {
        "stream_id": row["stream_id"],
        "entity": row["entity"],
        "object_id": row["owner_id"],
        "field": row["field"],
        "file": file,
        "reason": reason,
    }


def _meta(extractor: Extractor, **extra: Any) -> dict[str, Any]:
    return {
        "identity": identity(extractor.spec, extractor.settings),
        "dim": extractor.dim,
        "weights_id": extractor.weights_id,
        **extra,
    }


def _text_shard(
    extractor: TransformersText, rows: pl.DataFrame, label: str, limits: Limits, meta: dict[str, Any]
) -> tuple[pa.Table, Failures]:
    missing = rows.filter(pl.col("value").is_null())
    failures = [_failure(r, "missing text") for r in missing.iter_rows(named=True)]
    rows = rows.filter(pl.col("value").is_not_null())
    vectors = extractor.embed_texts(rows["value"].to_list(), desc=label, max_chars=limits.max_text_chars)
    return field_table(rows, vectors, meta), failures


def _image_shard(
    extractor: MediaExtractor, ds: CleanDataset, rows: pl.DataFrame, label: str, meta: dict[str, Any]
) -> tuple[pa.Table, Failures]:
    failures = [_failure(r, "missing image path") for r in rows.filter(pl.col("value").is_null()).iter_rows(named=True)]
    rows = rows.filter(pl.col("value").is_not_null())
    unique = sorted(set(rows["value"].to_list()))
    vectors, reasons = embed_files(extractor, [str(ds.media_path(p)) for p in unique], desc=label)
    slot = {p: i for i, p in enumerate(unique)}
    index = np.array([slot[p] for p in rows["value"].to_list()], dtype=np.int64)
    ok = np.array([reasons[i] is None for i in index], dtype=bool)
    for r, i in zip(rows.filter(pl.Series(~ok)).iter_rows(named=True), index[~ok], strict=True):
        failures.append(_failure(r, reasons[i], file=r["value"]))
    return field_table(rows.filter(pl.Series(ok)), vectors[index[ok]], meta), failures


def _numeric_shard(
    extractor: NumericTransform, ds: CleanDataset, columns: Mapping[str, Mapping[str, list[str]]],
    numeric: Mapping[str, Any] | None,
) -> tuple[pa.Table, Failures]:
    """Each numeric field's values under its column's transform (the policy ``numeric``); no statistics are fitted."""
    transforms = numeric_transforms(numeric, columns)
    for key in unused_numeric_entries(numeric, columns):
        log.warning("config %s names no numeric column of the column mapping: ignored", key)
    rows = field_rows(ds, columns, "numeric")
    failures = [_failure(r, "missing value") for r in rows.filter(pl.col("value").is_null()).iter_rows(named=True)]
    rows = rows.filter(pl.col("value").is_not_null())
    values = np.zeros(rows.height, dtype=np.float32)
    keys = (rows["entity"] + "." + rows["field"]).to_numpy()
    raw = rows["value"].to_numpy()
    for key in sorted(set(keys.tolist())):
        sel = keys == key
        entity, field = key.split(".", 1)
        values[sel] = extractor.transform(key, transforms[entity][field], raw[sel])
    rows = rows.with_columns(value=pl.Series(values))
    applied = {f"{e}.{f}": t for e, cols in transforms.items() for f, t in cols.items()}
    return field_table(rows, None, _meta(extractor, transforms=applied)), failures


def _clip_shard(
    extractor: MediaExtractor, ds: CleanDataset, label: str, meta: dict[str, Any]
) -> tuple[ClipShard, Failures]:
    clips = ds.clips.filter(pl.col("kind") == extractor.modality).sort("stream_id", "position")
    paths = clips["path"].to_list()
    vectors, reasons = embed_files(extractor, [str(ds.media_path(p)) for p in paths], desc=label)
    ok = np.array([r is None for r in reasons], dtype=bool)
    failures = [
        {"stream_id": c["stream_id"], "entity": extractor.modality, "object_id": c["clip_id"], "field": None,
         "file": c["path"], "reason": reasons[i]}
        for i, c in enumerate(clips.iter_rows(named=True)) if not ok[i]
    ]
    kept = clips.filter(pl.Series(ok))
    stream_ids = np.array(sorted(ds.streams["stream_id"].to_list()), dtype=object)
    counts = kept.group_by("stream_id").len()
    per_stream = dict(zip(counts["stream_id"].to_list(), counts["len"].to_list(), strict=True))
    offsets = np.concatenate([[0], np.cumsum([per_stream.get(s, 0) for s in stream_ids])]).astype(np.int64)
    shard = ClipShard(
        vectors=vectors[ok],
        clip_ids=np.array(kept["clip_id"].to_list(), dtype=object),
        positions=kept["position"].to_numpy().astype(np.int32),
        stream_ids=stream_ids,
        offsets=offsets,
        meta=meta,
    )
    return shard, failures


def extract_shard(
    *,
    data_dir: str | Path,
    extractors: Mapping[str, Any],
    name: str,
    columns: Mapping[str, Mapping[str, list[str]]],
    extraction: Mapping[str, Any],
    shard: int,
    out: str | Path,
    failures_out: str | Path,
    device: str | torch.device = "cpu",
    threads: int | None = None,
    numeric: Mapping[str, Any] | None = None,
    limits: Mapping[str, Any] | None = None,
) -> ShardReport:
    """Extract shard ``shard`` (of ``extraction["shards"]``) of extractor ``name`` into ``out`` and ``failures_out``.

    Args:
        data_dir: the validated dataset (``results/data``).
        extractors: the config's ``extractors`` section.
        name: the extractor to run.
        columns: the config's ``columns`` section (entity -> modality -> column names).
        extraction: the config's ``extraction`` section (``shards`` plus :class:`ExtractionSettings` keys).
        shard: this job's shard index.
        out: ``shard-{k}.parquet`` or ``shard-{k}.h5``.
        failures_out: ``shard-{k}.failures.parquet``.
        device: where the model runs (the caller claims it: ``memf.core.gpu.claim_device``).
        threads: CPU cores of the job: torch's intra-op threads and the number of decoding workers (overriding
            ``extraction["workers"]``); None keeps both as they are.
        numeric: the config's ``numeric`` policy (numeric extractors; None: the default policy).
        limits: the config's ``limits`` (or just those of this modality; None: the defaults). The bounds this
            modality depends on are recorded in the shard's metadata.
    """
    start = time.perf_counter()
    n_shards = int(extraction["shards"])
    if not 0 <= shard < n_shards:
        raise ValueError(f"shard {shard} is outside 0..{n_shards - 1} (extraction.shards = {n_shards})")
    spec = ExtractorSpec.from_config(name, extractors)
    settings = ExtractionSettings.from_config(extraction)
    if threads is not None:
        torch.set_num_threads(max(1, threads))
        settings = dataclasses.replace(settings, workers=max(1, threads))
    torch.manual_seed(0)
    bounds = Limits.from_config(limits)
    ds = load_clean(data_dir).shard(shard, n_shards)
    extractor = build_extractor(spec, settings, torch.device(device))
    label = f"{spec.modality}/{name} shard {shard}"
    log.info("%s: %d streams, device %s, weights %s, dim %d",
             label, ds.streams.height, device, extractor.weights_id, extractor.dim)
    own = {k: getattr(bounds, k) for k in MODALITY_LIMITS[spec.modality]}
    meta = _meta(extractor, limits=own) if own else _meta(extractor)
    with applied_limits(bounds):
        rows, failures = _write_shard(extractor, ds, columns, numeric, bounds, label, meta, out)
    write_failures(failures_out, failures)
    report = ShardReport(spec.modality, name, shard, rows, len(failures), time.perf_counter() - start)
    log.info("%s: %d rows, %d failures in %.1f s (%.1f rows/s)", label, rows, len(failures), report.seconds,
             rows / max(report.seconds, 1e-9))
    for f in failures:
        log.warning("%s: failed %s %s %s (%s): %s",
                    label, f["entity"], f["object_id"], f["field"] or "", f["file"] or "", f["reason"])
    return report


def _write_shard(extractor: Extractor, ds: CleanDataset, columns: Mapping[str, Mapping[str, list[str]]],
                 numeric: Mapping[str, Any] | None, bounds: Limits, label: str, meta: dict[str, Any],
                 out: str | Path) -> tuple[int, list[dict[str, str | None]]]:
    """Embed one shard with ``extractor`` and write it to ``out``; return its rows and its failures."""
    modality = extractor.spec.modality
    if modality in ("video", "audio"):
        clip_shard, failures = _clip_shard(extractor, ds, label, meta)
        write_clip_shard(out, clip_shard)
        return len(clip_shard.clip_ids), failures
    if modality == "text":
        table, failures = _text_shard(extractor, field_rows(ds, columns, "text"), label, bounds, meta)
    elif modality == "image":
        table, failures = _image_shard(extractor, ds, field_rows(ds, columns, "image"), label, meta)
    else:
        table, failures = _numeric_shard(extractor, ds, columns, numeric)
    write_field_shard(out, table)
    return table.num_rows, failures
