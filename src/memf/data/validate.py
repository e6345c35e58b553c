"""Ingest, validate and split a raw dataset (docs/data-format.md) into ``results/data``.

Two kinds of bad input are told apart:

- **Contract errors** stop the run with a one-line :class:`~memf.core.io.DataError` naming the file and the column: a missing
  table, an unreadable file, a missing column or one of the wrong type, a duplicate id.
- **Bad values** are recorded drops, one row each in ``excluded.parquet``/``excluded.csv`` (level, stream_id,
  object_id, reason, file, field): unknown references, missing text or media, non-finite numbers, negative numbers
  in a column whose numeric transform needs them >= 0 (config ``numeric``), zero sales that the target transform
  cannot take, media paths that escape the dataset root, media that do not decode or are over
  ``limits.max_image_pixels``. Following the paper (section 4.1), a stream that lacks any modality after this is
  dropped too, with every modality it lacks in the reason.
- **Inputs cut to a bound** (config ``limits``: a clip longer than the video or audio bound, a text longer than
  ``max_text_chars``) are kept and listed in ``truncated.parquet``/``truncated.csv`` with the same columns.

If more than ``max_drop_fraction`` of the streams is excluded the run fails loudly, with the reasons counted in the
message. The kept streams are assigned to cross-validation folds (:mod:`memf.data.folds`): column ``fold`` of
``streams.parquet``.

A dataset to **predict** (``folds = 0``: upcoming streams given to a model bundle, :mod:`memf.predict`) goes through
the same checks and drop rules, with two differences: ``sales`` is optional (the column may be absent, and a null
value means "not known yet"; a negative or non-finite value is still a recorded drop), and no folds are assigned
(``fold = -1``; ``target`` is NaN where sales are unknown). A missing attribute column is then named with the bundle's
column mapping, which cannot change after training.
"""

from __future__ import annotations

import logging
import math
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from memf.data import contract
from memf.data.contract import KEY_COLUMNS, TABLES, Limits, columns_from_config, required_columns
from memf.data.folds import SPLITS, assign_folds, split_of
from memf.core.html import table_page
from memf.core.io import DataError, read_parquet_checked, write_json, write_parquet, write_text
from memf.core.isolate import isolated_map
from memf.data.media import applied_limits, drop_reason, probe

log = logging.getLogger(__name__)

ID_COLUMN = {"streams": "stream_id", "anchors": "anchor_id", "items": "item_id", "clips": "clip_id"}
EXCLUDED_SCHEMA = {
    "level": pl.String, "stream_id": pl.String, "object_id": pl.String,
    "reason": pl.String, "file": pl.String, "field": pl.String,
}


@dataclass(frozen=True)
class ValidationResult:
    n_input: int
    n_kept: int
    n_excluded_streams: int
    fold_sizes: list[int]


class _Drops:
    """Collects excluded objects; each object is recorded once, with its first reason."""

    def __init__(self) -> None:
        self.rows: list[dict[str, str | None]] = []
        self._seen: set[tuple[str, str]] = set()

    def add(self, level: str, object_id: str, reason: str, *, stream_id: str | None = None,
            file: str | None = None, field: str | None = None, key: tuple[str, ...] | None = None) -> None:
        """Record ``object_id`` once (or once per ``key``: a truncation is recorded per object and field)."""
        key = key or (level, object_id)
        if key in self._seen:
            return
        self._seen.add(key)
        self.rows.append({"level": level, "stream_id": stream_id, "object_id": object_id,
                          "reason": reason, "file": file, "field": field})

    def ids(self, level: str) -> set[str]:
        return {r["object_id"] for r in self.rows if r["level"] == level}

    def frame(self) -> pl.DataFrame:
        return pl.DataFrame(self.rows, schema=EXCLUDED_SCHEMA)


def mapping_hints(columns: dict[str, dict[str, list[str]]], bundle: bool = False) -> dict[str, dict[str, str]]:
    """Table -> attribute column -> what fixes it when the data names it otherwise: the ``columns:`` key that maps it,
    or, for a dataset to predict (``bundle``), renaming the column, since a trained model's mapping is fixed."""
    hints: dict[str, dict[str, str]] = {t: {} for t in TABLES}
    for col in columns_from_config(columns):
        if col.name in KEY_COLUMNS[col.table]:
            continue
        if bundle:
            hints[col.table][col.name] = (f"the model bundle was trained with the {col.entity}'s {col.modality} in a "
                                          f"column named '{col.name}' (its columns.{col.entity}.{col.modality}); "
                                          "name that column so in this dataset")
        else:
            hints[col.table][col.name] = (f"if the {col.entity}'s {col.modality} column has another name, list that "
                                          f"name under columns.{col.entity}.{col.modality} instead")
    return hints


def load_raw_tables(root: Path, columns: dict[str, dict[str, list[str]]],
                    sales_required: bool = True) -> dict[str, pl.DataFrame]:
    """Read and schema-check the four raw tables; raise :class:`DataError` on contract errors.

    With ``sales_required`` False (a dataset to predict) the streams table may lack ``sales``; when it has the
    column, its type is checked as usual.
    """
    required = required_columns(columns)
    hints = mapping_hints(columns, bundle=not sales_required)
    tables: dict[str, pl.DataFrame] = {}
    for name in TABLES:
        path = root / f"{name}.parquet"
        if not path.is_file():
            raise DataError(f"{path}: missing table '{name}' (see docs/data-format.md)")
        wanted = dict(required[name])
        if name == "streams" and not sales_required and "sales" not in _column_names(path):
            del wanted["sales"]
        df = pl.from_arrow(read_parquet_checked(path, wanted, hints=hints[name]))
        id_col = ID_COLUMN[name]
        dup = df[id_col].drop_nulls().is_duplicated()
        if dup.any():
            first = df[id_col].drop_nulls().filter(dup)[0]
            raise DataError(f"{path}: column '{id_col}' has duplicate id '{first}'")
        if df[id_col].null_count():
            raise DataError(f"{path}: column '{id_col}' has {df[id_col].null_count()} null ids")
        tables[name] = df
    return tables


def _column_names(path: Path) -> list[str]:
    """Column names of a Parquet file; an unreadable file gives none (read_parquet_checked then names the problem)."""
    try:
        return pq.read_schema(path).names
    except (OSError, pa.ArrowException):
        return []


def _inside(root: Path, rel: str) -> bool:
    """True if ``rel`` is a relative path that stays inside ``root`` (symbolic links resolved)."""
    if Path(rel).is_absolute():
        return False
    real_root = root.resolve()
    return (real_root / rel).resolve().is_relative_to(real_root)


def _bad_number(value: Any, non_negative: bool = True) -> str | None:
    if value is None:
        return "missing"
    if not math.isfinite(value):
        return "not finite"
    if non_negative and value < 0:
        return "negative"
    return None


def _stream_lacks(missing: list[str]) -> str:
    """The drop reason of a stream lacking modalities, naming every one (``no valid video clip (missing modality)``)."""
    if len(missing) == 1:
        return f"no valid {missing[0]} (missing modality)"
    return f"no valid {', '.join(missing[:-1])} or {missing[-1]} (missing modalities)"


def _probe_task(task: tuple[str, str]) -> dict[str, Any]:
    return probe(*task)


def validate_dataset(
    root: str | Path,
    out_dir: str | Path,
    *,
    columns: dict[str, dict[str, list[str]]],
    target_offset: float,
    max_drop_fraction: float,
    split_seed: int,
    folds: int,
    group_by: str | None = None,
    probe_workers: int = 2,
    probe_timeout_s: float = 30.0,
    numeric_accepts: dict[str, dict[str, str]] | None = None,
    limits: Limits | dict[str, Any] | None = None,
) -> ValidationResult:
    """Validate the raw dataset at ``root`` and write the clean dataset, with its folds, to ``out_dir``.

    Args:
        folds: K cross-validation folds; 0 for a dataset to predict (``sales`` optional, no folds: ``fold = -1``,
            ``target`` NaN where sales are unknown; every other check and drop rule as for training data).
        numeric_accepts: entity -> numeric column -> "non-negative" or "finite" (from
            :func:`memf.data.contract.numeric_accepts` of the config's ``numeric`` policy); None: the default policy.
        limits: the config's ``limits`` (None: the defaults); media are probed under them and texts checked against
            ``max_text_chars``.

    Outputs (all atomic): streams/anchors/items/clips.parquet, excluded.parquet/.csv, truncated.parquet/.csv,
    summary.csv, summary.md, dataset.json. See docs/data-format.md for the checks and :mod:`memf.data.folds` for
    the folds.
    """
    root, out_dir = Path(root), Path(out_dir)
    limits = limits if isinstance(limits, Limits) else Limits.from_config(limits)
    accepts = numeric_accepts if numeric_accepts is not None else contract.numeric_accepts(None, columns)
    predicting = folds == 0
    tables = load_raw_tables(root, columns, sales_required=not predicting)
    streams, anchors, items, clips = (tables[t] for t in TABLES)
    drops = _Drops()
    truncated = _Drops()
    cols = columns_from_config(columns)

    # Values of each entity's own columns: missing text or media, bad numbers, escaping paths.
    media_refs: list[tuple[str, str, str, str, str]] = []  # (kind, path, level, object_id, field)
    level_of = {"anchors": "anchor", "items": "item", "streams": "stream"}
    for table in ("anchors", "items", "streams"):
        df, level, id_col = tables[table], level_of[table], ID_COLUMN[table]
        file = str(root / f"{table}.parquet")
        owner_stream = df["stream_id"].to_list() if "stream_id" in df.columns else [None] * df.height
        for col in (c for c in cols if c.table == table):
            non_negative = accepts.get(col.entity, {}).get(col.name, "non-negative") == "non-negative"
            for obj, stream, value in zip(df[id_col].to_list(), owner_stream, df[col.name].to_list(), strict=True):
                if col.modality == "numeric":
                    why = _bad_number(value, non_negative)
                    if why == "negative":
                        why += " (its numeric transform log1p needs >= 0; see config numeric.columns)"
                    if why:
                        drops.add(level, obj, f"{col.entity} {col.modality} '{col.name}' is {why}",
                                  stream_id=stream, file=file, field=col.name)
                elif value is None:
                    drops.add(level, obj, f"{col.entity} {col.modality} '{col.name}' is missing",
                              stream_id=stream, file=file, field=col.name)
                elif col.modality == "text" and len(value) > limits.max_text_chars:
                    truncated.add(level, obj, f"{col.entity} text '{col.name}' of {len(value):,} characters cut to "
                                  f"limits.max_text_chars = {limits.max_text_chars:,} before tokenising",
                                  stream_id=stream, file=file, field=col.name, key=(level, obj, col.name))
                elif col.modality == "image":
                    if _inside(root, value):
                        media_refs.append(("image", value, level, obj, col.name))
                    else:
                        drops.add(level, obj, f"path escapes the dataset root: {value}",
                                  stream_id=stream, file=file, field=col.name)
    sales_file = str(root / "streams.parquet")
    if "sales" not in streams.columns:
        streams = streams.with_columns(pl.lit(None, dtype=pl.Float64).alias("sales"))
    for sid, sales in zip(streams["stream_id"].to_list(), streams["sales"].to_list(), strict=True):
        if sales is None and predicting:
            continue  # not known yet: the stream is predicted, not scored
        why = _bad_number(sales)
        if why:
            drops.add("stream", sid, f"sales is {why}", stream_id=sid, file=sales_file, field="sales")
        elif sales + target_offset <= 0:
            drops.add("stream", sid, "zero sales with target.offset 0 (log undefined)",
                      stream_id=sid, file=sales_file, field="sales")

    # References between tables.
    stream_ids = set(streams["stream_id"].to_list())
    anchor_ids = set(anchors["anchor_id"].to_list())
    for sid, aid in zip(streams["stream_id"].to_list(), streams["anchor_id"].to_list(), strict=True):
        if aid not in anchor_ids:
            drops.add("stream", sid, f"unknown anchor_id '{aid}'", stream_id=sid, file=sales_file, field="anchor_id")
    clips_file = str(root / "clips.parquet")
    for row in clips.iter_rows(named=True):
        cid, sid = row["clip_id"], row["stream_id"]
        if sid not in stream_ids:
            drops.add("clip", cid, f"unknown stream_id '{sid}'", stream_id=sid, file=clips_file, field="stream_id")
        elif row["kind"] not in ("video", "audio"):
            drops.add("clip", cid, f"unknown clip kind '{row['kind']}' (expected video or audio)",
                      stream_id=sid, file=clips_file, field="kind")
        elif row["path"] is None:
            drops.add("clip", cid, "clip path is missing", stream_id=sid, file=clips_file, field="path")
        elif not _inside(root, row["path"]):
            drops.add("clip", cid, f"path escapes the dataset root: {row['path']}",
                      stream_id=sid, file=clips_file, field="path")
        else:
            media_refs.append((row["kind"], row["path"], "clip", cid, "path"))
    items_file = str(root / "items.parquet")
    for iid, sid in zip(items["item_id"].to_list(), items["stream_id"].to_list(), strict=True):
        if sid not in stream_ids:
            drops.add("item", iid, f"unknown stream_id '{sid}'", stream_id=sid, file=items_file, field="stream_id")

    # Decode every referenced media file once, in isolated workers (a crashing decoder is one drop, not a failed run).
    # Anchors no stream references are not probed.
    used_anchors = set(streams["anchor_id"].to_list())
    media_refs = [r for r in media_refs if r[2] != "anchor" or r[3] in used_anchors]
    tasks = sorted({(kind, path) for kind, path, *_ in media_refs})
    failed: dict[tuple[str, str], str] = {}
    cut: dict[tuple[str, str], str] = {}
    with applied_limits(limits):  # the workers forked here read under the same bounds as the extractors
        for outcome in isolated_map(_probe_task, [(k, str(root / p)) for k, p in tasks], workers=probe_workers,
                                    timeout_s=probe_timeout_s, desc="probe media"):
            if not outcome.ok:
                failed[tasks[outcome.index]] = outcome.failure.reason
            elif outcome.value.get("truncated"):
                cut[tasks[outcome.index]] = outcome.value["truncated"]
    item_stream = dict(zip(items["item_id"].to_list(), items["stream_id"].to_list(), strict=True))
    clip_stream = dict(zip(clips["clip_id"].to_list(), clips["stream_id"].to_list(), strict=True))
    for kind, path, level, obj, field in media_refs:
        stream = {"item": item_stream, "clip": clip_stream, "stream": {obj: obj}}.get(level, {}).get(obj)
        if (kind, path) in failed:
            drops.add(level, obj, drop_reason(kind, failed[(kind, path)]),
                      stream_id=stream, file=str(root / path), field=field)
        elif (kind, path) in cut:
            truncated.add(level, obj, cut[(kind, path)], stream_id=stream, file=str(root / path), field=field,
                          key=(level, obj, field))

    # Cascade to streams: a bad anchor, and (paper section 4.1) a stream lacking a modality, drop the stream.
    bad_anchors = drops.ids("anchor")
    anchor_reason = {r["object_id"]: r["reason"] for r in drops.rows if r["level"] == "anchor"}
    for sid, aid in zip(streams["stream_id"].to_list(), streams["anchor_id"].to_list(), strict=True):
        if aid in bad_anchors:
            drops.add("stream", sid, f"anchor '{aid}': {anchor_reason[aid]}", stream_id=sid, file=sales_file,
                      field="anchor_id")
    good_items = items.filter(~pl.col("item_id").is_in(list(drops.ids("item"))))
    good_clips = clips.filter(~pl.col("clip_id").is_in(list(drops.ids("clip"))))
    has_items = set(good_items["stream_id"].to_list())
    has_kind = {kind: set(good_clips.filter(pl.col("kind") == kind)["stream_id"].to_list()) for kind in ("video", "audio")}
    for sid in streams["stream_id"].to_list():
        missing = ([] if sid in has_items else ["commodity"]) + [
            f"{kind} clip" for kind in ("video", "audio") if sid not in has_kind[kind]]
        if missing:
            drops.add("stream", sid, _stream_lacks(missing), stream_id=sid)

    dropped_streams = drops.ids("stream")
    n_input = streams.height
    kept = streams.filter(~pl.col("stream_id").is_in(list(dropped_streams))).sort("stream_id")
    # Items and clips of dropped streams leave with them; record them so nothing disappears without a line.
    for df, level, id_col in ((good_items, "item", "item_id"), (good_clips, "clip", "clip_id")):
        for obj, sid in zip(df[id_col].to_list(), df["stream_id"].to_list(), strict=True):
            if sid in dropped_streams:
                drops.add(level, obj, "its stream was excluded", stream_id=sid)
    excluded = drops.frame()
    dropped = {(r["level"], r["object_id"]) for r in drops.rows}
    cut_rows = [r for r in truncated.rows if (r["level"], r["object_id"]) not in dropped
                and (r["level"] == "anchor" or r["stream_id"] not in dropped_streams)]
    cut_frame = pl.DataFrame(cut_rows, schema=EXCLUDED_SCHEMA)
    fraction = len(dropped_streams) / max(n_input, 1)
    if fraction > max_drop_fraction:
        counts = Counter(r["reason"].split(":")[0] for r in drops.rows if r["level"] == "stream")
        top = "; ".join(f"{n} x {reason}" for reason, n in counts.most_common(5))
        log.error("excluded rows:\n%s", excluded)
        raise DataError(
            f"{root}: {len(dropped_streams)} of {n_input} streams excluded ({fraction:.0%}), more than "
            f"validation.max_drop_fraction={max_drop_fraction:.0%}; most common: {top}"
        )
    if kept.height < max(folds, 1):
        raise DataError(f"{root}: only {kept.height} valid streams, need at least "
                        + (f"split.folds = {folds}" if folds else "one to predict"))

    if predicting:
        fold = np.full(kept.height, -1, dtype=np.int64)
    else:
        fold = assign_folds(kept["stream_id"].to_list(), kept["anchor_id"].to_list(), folds=folds, seed=split_seed,
                            group_by=group_by)
    n = kept.height
    kept = kept.with_columns(
        pl.Series("fold", fold, dtype=pl.Int16),
        (pl.col("sales").cast(pl.Float64) + target_offset).log().fill_null(float("nan")).alias("target"),
    )
    kept_ids = kept["stream_id"].to_list()
    out_items = good_items.filter(pl.col("stream_id").is_in(kept_ids)).sort(["stream_id", "position", "item_id"])
    out_clips = good_clips.filter(pl.col("stream_id").is_in(kept_ids)).sort(["stream_id", "kind", "position", "clip_id"])
    out_anchors = anchors.filter(pl.col("anchor_id").is_in(kept["anchor_id"].unique().to_list())).sort("anchor_id")

    cut_frame = cut_frame.filter((pl.col("level") != "anchor") | pl.col("object_id").is_in(out_anchors["anchor_id"].implode()))
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, df in (("streams", kept), ("anchors", out_anchors), ("items", out_items), ("clips", out_clips),
                     ("excluded", excluded), ("truncated", cut_frame)):
        write_parquet(out_dir / f"{name}.parquet", df)
    write_text(out_dir / "excluded.csv", excluded.write_csv())
    write_text(out_dir / "truncated.csv", cut_frame.write_csv())
    summary = fold_summary(kept, folds)
    write_text(out_dir / "summary.csv", summary.write_csv())
    write_text(out_dir / "summary.md", _markdown(summary))
    write_report_pages(out_dir, summary, excluded, cut_frame)
    sizes = [int((fold == k).sum()) for k in range(folds)]
    sales_known = int(kept["target"].is_not_nan().sum())
    write_json(out_dir / "dataset.json", {
        "root": str(root),
        "columns": columns,
        "target": f"log(sales + {target_offset:g})",
        "target_offset": target_offset,
        "purpose": "predict" if predicting else "train",
        "sales_known": sales_known,
        "streams_in": n_input,
        "streams_kept": n,
        "excluded": dict(Counter(r["level"] for r in drops.rows)),
        "truncated": dict(Counter(cut_frame["level"].to_list())),
        "numeric_accepts": accepts,
        "limits": limits.as_dict(),
        "folds": {"k": folds, "seed": split_seed, "group_by": group_by, "test_sizes": sizes},
    })
    for level, count in sorted(Counter(r["level"] for r in drops.rows).items()):
        log.info("excluded %d %s rows", count, level)
    for row in cut_frame.iter_rows(named=True):
        log.warning("truncated %s %s %s: %s", row["level"], row["object_id"], row["field"], row["reason"])
    log.info("kept %d of %d streams; %s", n, n_input, f"test streams per fold {sizes}" if folds else
             f"to predict ({sales_known} with known sales)")
    return ValidationResult(n_input=n_input, n_kept=n, n_excluded_streams=len(dropped_streams), fold_sizes=sizes)


def fold_summary(streams: pl.DataFrame, folds: int) -> pl.DataFrame:
    """The paper's Table 5 for fold 0 (its 80/20 split: train + validation, test), every fold's test part, and all.

    A dataset to predict (``folds = 0``) has one row: all its streams, with the statistics of the known targets.
    """
    def stats(df: pl.DataFrame, name: str) -> dict[str, Any]:
        y = df["target"].filter(df["target"].is_not_nan())
        return {"part": name, "size": df.height, "max": y.max(), "min": y.min(), "mean": y.mean(),
                "median": y.median(), "sd": y.std()}
    if folds == 0:
        return pl.DataFrame([stats(streams, "to predict")], schema_overrides={k: pl.Float64 for k in (
            "max", "min", "mean", "median", "sd")})
    split = split_of(streams["fold"].to_numpy(), 0, folds)
    rows = [stats(streams.filter(pl.Series(split != SPLITS.index("test"))), "fold 0 train + val"),
            stats(streams.filter(pl.Series(split == SPLITS.index("test"))), "fold 0 test")]
    rows += [stats(streams.filter(pl.col("fold") == k), f"fold {k} test") for k in range(1, folds)]
    rows.append(stats(streams, "all"))
    return pl.DataFrame(rows)


SUMMARY_TITLE = "Dataset statistics (log(sales), paper Table 5; fold 0 is the paper's 80/20 split)"


def _summary_cells(summary: pl.DataFrame) -> tuple[list[str], list[list[str]]]:
    def num(value: float | None) -> str:
        return "-" if value is None else f"{value:.4f}"

    head = ["part", "size", "max", "min", "mean", "median", "sd"]
    rows = [[r["part"], str(r["size"]), *(num(r[k]) for k in ("max", "min", "mean", "median", "sd"))]
            for r in summary.iter_rows(named=True)]
    return head, rows


def _markdown(summary: pl.DataFrame) -> str:
    head, rows = _summary_cells(summary)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head), *("| " + " | ".join(r) + " |" for r in rows)]
    return f"# {SUMMARY_TITLE}\n\n" + "\n".join(lines) + "\n"


def write_report_pages(out_dir: Path, summary: pl.DataFrame, excluded: pl.DataFrame, truncated: pl.DataFrame) -> None:
    """``summary.html`` and ``excluded.html``: the data summary and every excluded or truncated object, as the
    report shows them inline."""
    head, rows = _summary_cells(summary)
    write_text(out_dir / "summary.html", table_page(SUMMARY_TITLE, head, rows, f"{summary['size'][-1]} streams kept."))
    cols = ["level", "stream_id", "object_id", "reason", "file", "field"]
    listed = [[str(r[c] or "") for c in cols] for r in excluded.iter_rows(named=True)]
    cut = [[str(r[c] or "") for c in cols] for r in truncated.iter_rows(named=True)] if truncated.height else []
    note = (f"{excluded.height} objects excluded, each with its reason (excluded.csv); {len(cut)} inputs truncated to a "
            "bound (truncated.csv), listed after them.")
    write_text(out_dir / "excluded.html", table_page("Excluded and truncated objects", cols, listed + cut, note))
