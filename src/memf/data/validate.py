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

The table checks are columnar (polars expressions over whole columns), so 10^5 streams validate in seconds. Media are
decoded once each, in isolated worker processes: inside :func:`validate_dataset`, or beforehand by one
:func:`probe_shard` job per shard whose records (per file: the reason it failed, or its truncation) the validation
then reads (``probes``). A **media-free** dataset (``media=False``: the simulator's ``media: false``, whose
``dataset.json`` says so) has no image columns and no clip paths: those are neither required nor probed, and every
other check is as above.

A dataset to **predict** (``folds = 0``: upcoming streams given to a model bundle, :mod:`memf.predict`) goes through
the same checks and drop rules, with two differences: ``sales`` is optional (the column may be absent, and a null
value means "not known yet"; a negative or non-finite value is still a recorded drop), and no folds are assigned
(``fold = -1``; ``target`` is NaN where sales are unknown). A missing attribute column is then named with the bundle's
column mapping, which cannot change after training.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from memf.core.html import table_page
from memf.core.io import DataError, read_parquet_checked, write_json, write_parquet, write_text
from memf.core.isolate import isolated_map
from memf.data import contract
from memf.data.contract import KEY_COLUMNS, TABLES, Limits, columns_from_config, required_columns
from memf.data.dataset import shard_of
from memf.data.folds import FIXED_ROLE, SPLITS, FoldPlan, assign_folds, split_of
from memf.data.media import applied_limits, drop_reason, probe

log = logging.getLogger(__name__)

ID_COLUMN = {"streams": "stream_id", "anchors": "anchor_id", "items": "item_id", "clips": "clip_id"}
EXCLUDED_SCHEMA = {
    "level": pl.String, "stream_id": pl.String, "object_id": pl.String,
    "reason": pl.String, "file": pl.String, "field": pl.String,
}
#: A media file to decode: its kind (image, video, audio), its path relative to the root, and the object and field
#: that reference it (stream_id: the owning stream; null for an anchor).
REF_SCHEMA = {"kind": pl.String, "path": pl.String, "level": pl.String, "object_id": pl.String, "field": pl.String,
              "stream_id": pl.String}
#: A probe record (:func:`probe_shard`): per distinct (kind, path), why it does not decode (null: it decodes) and
#: why it is truncated (null: it is not).
PROBE_SCHEMA = {"kind": pl.String, "path": pl.String, "reason": pl.String, "truncated": pl.String}
_LEVEL = {"anchors": "anchor", "items": "item", "streams": "stream", "clips": "clip"}


@dataclass(frozen=True)
class ValidationResult:
    n_input: int
    n_kept: int
    n_excluded_streams: int
    fold_sizes: list[int]


class _Records:
    """Excluded (or truncated) objects in the order they were found, column-wise: blocks of rows, each object (or
    each ``key``) kept once with its first reason."""

    def __init__(self, key: tuple[str, ...] = ("level", "object_id")) -> None:
        self.key = key
        self._blocks: list[pl.DataFrame] = []
        self._frame: pl.DataFrame | None = pl.DataFrame(schema=EXCLUDED_SCHEMA)

    def add(self, rows: pl.DataFrame) -> None:
        """Append rows with the columns of :data:`EXCLUDED_SCHEMA` (missing ones are null)."""
        if rows.height:
            self._blocks.append(rows.select(pl.col(c).cast(t) if c in rows.columns else pl.lit(None, t).alias(c)
                                            for c, t in EXCLUDED_SCHEMA.items()))
            self._frame = None

    def frame(self) -> pl.DataFrame:
        if self._frame is None:
            self._frame = pl.concat([pl.DataFrame(schema=EXCLUDED_SCHEMA), *self._blocks]).unique(
                subset=list(self.key), keep="first", maintain_order=True)
        return self._frame

    def ids(self, level: str) -> pl.Series:
        return self.frame().filter(pl.col("level") == level)["object_id"]


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


def media_free_columns(columns: dict[str, dict[str, list[str]]]) -> dict[str, dict[str, list[str]]]:
    """The column mapping without its image columns: what a media-free dataset has."""
    return {entity: {**mods, "image": []} for entity, mods in columns.items()}


def load_raw_tables(root: Path, columns: dict[str, dict[str, list[str]]], sales_required: bool = True,
                    media: bool = True) -> dict[str, pl.DataFrame]:
    """Read and schema-check the four raw tables; raise :class:`DataError` on contract errors.

    With ``sales_required`` False (a dataset to predict) the streams table may lack ``sales``; when it has the
    column, its type is checked as usual. With ``media`` False the image columns and the clips' ``path`` are neither
    required nor read.
    """
    required = required_columns(columns if media else media_free_columns(columns))
    if not media:
        del required["clips"]["path"]
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
        if not media:
            df = df.drop(_media_columns(columns, name), strict=False)
        id_col = ID_COLUMN[name]
        dup = df[id_col].drop_nulls().is_duplicated()
        if dup.any():
            first = df[id_col].drop_nulls().filter(dup)[0]
            raise DataError(f"{path}: column '{id_col}' has duplicate id '{first}'")
        if df[id_col].null_count():
            raise DataError(f"{path}: column '{id_col}' has {df[id_col].null_count()} null ids")
        tables[name] = df
    return tables


def _media_columns(columns: dict[str, dict[str, list[str]]], table: str) -> list[str]:
    """The columns of ``table`` that name media files: its entity's image columns, and the clips' ``path``."""
    images = [c.name for c in columns_from_config(columns) if c.table == table and c.modality == "image"]
    return images + (["path"] if table == "clips" else [])


def _column_names(path: Path) -> list[str]:
    """Column names of a Parquet file; an unreadable file gives none (read_parquet_checked then names the problem)."""
    try:
        return pq.read_schema(path).names
    except (OSError, pa.ArrowException):
        return []


def raw_media_flag(root: Path) -> bool | None:
    """``media`` of the raw dataset's ``dataset.json`` when the simulator wrote it; None for any other dataset (the
    file is not part of the raw format, so another program's file, or none, says nothing)."""
    try:
        meta = json.loads((root / "dataset.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict) or meta.get("generator") != "memf.simulate":
        return None
    return bool(meta.get("media", True))


def _inside(root: Path, rel: str) -> bool:
    """True if ``rel`` is a relative path that stays inside ``root`` (symbolic links resolved)."""
    if Path(rel).is_absolute():
        return False
    real_root = root.resolve()
    return (real_root / rel).resolve().is_relative_to(real_root)


def _inside_mask(root: Path, paths: pl.Series) -> pl.Series:
    """Per path (nulls: False): does it stay inside ``root``? Each distinct path is resolved once."""
    verdict = {p: _inside(root, p) for p in paths.drop_nulls().unique().to_list()}
    return paths.replace_strict(verdict, default=False, return_dtype=pl.Boolean).fill_null(False)


def _bad_number(col: str, non_negative: bool) -> pl.Expr:
    """Why a number is not accepted (null: it is): missing, not finite, or negative where ``non_negative``."""
    x = pl.col(col).cast(pl.Float64)
    why = pl.when(x.is_null()).then(pl.lit("missing")).when(~x.is_finite()).then(pl.lit("not finite"))
    if non_negative:
        why = why.when(x < 0).then(pl.lit("negative"))
    return why.otherwise(pl.lit(None, pl.String))


def _stream_lacks(missing: list[str]) -> str:
    """The drop reason of a stream lacking modalities, naming every one (``no valid video clip (missing modality)``)."""
    if len(missing) == 1:
        return f"no valid {missing[0]} (missing modality)"
    return f"no valid {', '.join(missing[:-1])} or {missing[-1]} (missing modalities)"


def _probe_task(task: tuple[str, str]) -> dict[str, Any]:
    return probe(*task)


# --- the table checks: each returns its drops (and media references) in the order the rows are found ------------------
def _base(root: Path, table: str, df: pl.DataFrame) -> pl.DataFrame:
    """Per row of ``table``: level, object_id, stream_id (the owning stream; null for anchors) and file."""
    owner = pl.col("stream_id") if "stream_id" in df.columns else pl.lit(None, pl.String)
    return df.select(level=pl.lit(_LEVEL[table]), object_id=pl.col(ID_COLUMN[table]), stream_id=owner,
                     file=pl.lit(str(root / f"{table}.parquet")))


def _column_checks(root: Path, base: pl.DataFrame, values: pl.Series, col: contract.Column, non_negative: bool,
                   limits: Limits) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """Drops, truncations and media references of one attribute column (``values``, row-aligned with ``base``)."""
    what = f"{col.entity} {col.modality} '{col.name}'"
    rows = base.with_columns(value=values, field=pl.lit(col.name))
    value, missing = pl.col("value"), pl.lit(f"{what} is missing")
    cut = rows.clear()
    refs = pl.DataFrame(schema=REF_SCHEMA)
    if col.modality == "numeric":
        why = _bad_number("value", non_negative)
        reason = pl.concat_str(pl.lit(f"{what} is "), why, pl.when(why == "negative").then(pl.lit(
            " (its numeric transform log1p needs >= 0; see config numeric.columns)")).otherwise(pl.lit("")))
    elif col.modality == "text":
        reason = pl.when(value.is_null()).then(missing)
        long = rows.filter(value.str.len_chars() > limits.max_text_chars)
        cut = long.with_columns(reason=pl.Series([
            f"{col.entity} text '{col.name}' of {len(v):,} characters cut to limits.max_text_chars = "
            f"{limits.max_text_chars:,} before tokenising" for v in long["value"].to_list()], dtype=pl.String))
    else:
        inside = _inside_mask(root, values)
        reason = pl.when(value.is_null()).then(missing).when(~inside).then(
            pl.concat_str(pl.lit("path escapes the dataset root: "), value))
        refs = rows.filter(inside).select(kind=pl.lit("image"), path=value, level="level", object_id="object_id",
                                          field="field", stream_id="stream_id")
    drops = rows.with_columns(reason=reason).filter(pl.col("reason").is_not_null())
    return drops, cut, refs


def _check_values(root: Path, tables: dict[str, pl.DataFrame], columns: dict[str, dict[str, list[str]]],
                  accepts: dict[str, dict[str, str]], limits: Limits, drops: _Records,
                  truncated: _Records) -> list[pl.DataFrame]:
    """Values of each entity's own columns (missing text or media, bad numbers, escaping paths, texts over the
    bound), table by table and column by column; returns the image references."""
    refs = []
    for table in ("anchors", "items", "streams"):
        df = tables[table]
        base = _base(root, table, df)
        for col in (c for c in columns_from_config(columns) if c.table == table and c.name in df.columns):
            non_negative = accepts.get(col.entity, {}).get(col.name, "non-negative") == "non-negative"
            dropped, cut, found = _column_checks(root, base, df[col.name], col, non_negative, limits)
            drops.add(dropped)
            truncated.add(cut)
            refs.append(found)
    return refs


def _check_sales(root: Path, streams: pl.DataFrame, target_offset: float, predicting: bool) -> pl.DataFrame:
    """Streams whose sales the target cannot take (a null is "not known yet" for a dataset to predict)."""
    sales = pl.col("sales").cast(pl.Float64)
    reason = pl.when(sales.is_null() & pl.lit(predicting)).then(pl.lit(None, pl.String))
    reason = reason.when(sales.is_null()).then(pl.lit("sales is missing"))
    reason = reason.when(~sales.is_finite()).then(pl.lit("sales is not finite"))
    reason = reason.when(sales < 0).then(pl.lit("sales is negative"))
    reason = reason.when(sales + target_offset <= 0).then(pl.lit("zero sales with target.offset 0 (log undefined)"))
    return streams.select(level=pl.lit("stream"), stream_id="stream_id", object_id="stream_id",
                          reason=reason.otherwise(pl.lit(None, pl.String)), file=pl.lit(str(root / "streams.parquet")),
                          field=pl.lit("sales")).filter(pl.col("reason").is_not_null())


def _quoted(col: str) -> pl.Expr:
    return pl.concat_str(pl.lit("'"), pl.col(col).fill_null("None"), pl.lit("'"))


def _check_references(root: Path, tables: dict[str, pl.DataFrame], media: bool, drops: _Records) -> pl.DataFrame:
    """References between tables (a stream's anchor, an item's or a clip's stream) and each clip's kind and path, in
    the order streams, clips, items; returns the clips' media references."""
    streams, clips, items = tables["streams"], tables["clips"], tables["items"]
    anchor_known = pl.col("anchor_id").is_in(tables["anchors"]["anchor_id"].implode()).fill_null(False)
    drops.add(_base(root, "streams", streams).with_columns(anchor_id=streams["anchor_id"]).filter(~anchor_known)
              .with_columns(reason=pl.concat_str(pl.lit("unknown anchor_id "), _quoted("anchor_id")),
                            field=pl.lit("anchor_id")))
    stream_known = pl.col("stream_id").is_in(streams["stream_id"].implode()).fill_null(False)
    rows = _base(root, "clips", clips).with_columns(kind=clips["kind"])
    reason = pl.when(~stream_known).then(pl.struct(
        reason=pl.concat_str(pl.lit("unknown stream_id "), _quoted("stream_id")), field=pl.lit("stream_id")))
    reason = reason.when(~pl.col("kind").is_in(["video", "audio"]).fill_null(False)).then(pl.struct(
        reason=pl.concat_str(pl.lit("unknown clip kind "), _quoted("kind"), pl.lit(" (expected video or audio)")),
        field=pl.lit("kind")))
    if media:
        rows = rows.with_columns(path=clips["path"], inside=_inside_mask(root, clips["path"]))
        reason = reason.when(pl.col("path").is_null()).then(pl.struct(
            reason=pl.lit("clip path is missing"), field=pl.lit("path")))
        reason = reason.when(~pl.col("inside")).then(pl.struct(
            reason=pl.concat_str(pl.lit("path escapes the dataset root: "), pl.col("path")), field=pl.lit("path")))
    rows = rows.with_columns(problem=reason.otherwise(pl.lit(None, pl.Struct({"reason": pl.String,
                                                                                "field": pl.String}))))
    drops.add(rows.filter(pl.col("problem").is_not_null()).unnest("problem"))
    refs = rows.filter(pl.col("problem").is_null()).select(
        kind="kind", path="path", level="level", object_id="object_id", field=pl.lit("path"),
        stream_id="stream_id") if media else pl.DataFrame(schema=REF_SCHEMA)
    drops.add(_base(root, "items", items).with_columns(
        reason=pl.concat_str(pl.lit("unknown stream_id "), _quoted("stream_id")), field=pl.lit("stream_id"))
        .filter(~stream_known))
    return refs


def _media_refs(tables: dict[str, pl.DataFrame], found: list[pl.DataFrame]) -> pl.DataFrame:
    """The media files the checks ``found`` (in table, column and row order) that are to be decoded: not the avatars
    of anchors that no stream references, nor the photos of items of unknown streams (those are dropped anyway)."""
    refs = pl.concat([pl.DataFrame(schema=REF_SCHEMA), *(r.select(list(REF_SCHEMA)) for r in found)])
    streams = tables["streams"]
    used = (pl.col("level") != "anchor") | pl.col("object_id").is_in(streams["anchor_id"].implode()).fill_null(False)
    known = (pl.col("level") != "item") | pl.col("stream_id").is_in(streams["stream_id"].implode()).fill_null(False)
    return refs.filter(used & known)


# --- decoding the media -------------------------------------------------------------------------------------------
def _probe(root: Path, refs: pl.DataFrame, limits: Limits, workers: int, timeout_s: float) -> pl.DataFrame:
    """Decode every distinct (kind, path) of ``refs`` once, in isolated workers (a crashing decoder is one failed
    file, not a failed run); one row per file (:data:`PROBE_SCHEMA`)."""
    tasks = refs.select("kind", "path").unique().sort("kind", "path").rows()
    reason: list[str | None] = [None] * len(tasks)
    cut: list[str | None] = [None] * len(tasks)
    with applied_limits(limits):  # the workers forked here read under the same bounds as the extractors
        for outcome in isolated_map(_probe_task, [(k, str(root / p)) for k, p in tasks], workers=workers,
                                    timeout_s=timeout_s, desc="probe media"):
            if not outcome.ok:
                reason[outcome.index] = outcome.failure.reason
            else:
                cut[outcome.index] = outcome.value.get("truncated")
    return pl.DataFrame({"kind": [k for k, _ in tasks], "path": [p for _, p in tasks], "reason": reason,
                         "truncated": cut}, schema=PROBE_SCHEMA)


def _read_probes(paths: Sequence[str | Path]) -> pl.DataFrame:
    frames = [pl.from_arrow(read_parquet_checked(p, {k: "string" for k in PROBE_SCHEMA})) for p in paths]
    return pl.concat([pl.DataFrame(schema=PROBE_SCHEMA), *(f.select(list(PROBE_SCHEMA)).cast(PROBE_SCHEMA)
                                                            for f in frames)]).unique(["kind", "path"], keep="first")


def _record_probes(root: Path, refs: pl.DataFrame, results: pl.DataFrame, drops: _Records,
                   truncated: _Records) -> None:
    """Drop every object whose media file does not decode, and record every truncated one, in ``refs`` order."""
    found = refs.join(results.with_columns(probed=pl.lit(True)), on=["kind", "path"], how="left",
                      maintain_order="left")
    lost = found.filter(pl.col("probed").is_null())
    if lost.height:
        row = lost.row(0, named=True)
        raise DataError(f"{root}: the probe records have no result for {row['kind']} '{row['path']}' ({row['level']} "
                        f"{row['object_id']}) nor for {lost.height - 1} other file(s); they were made with other "
                        "settings or another dataset: rerun the probe jobs")
    found = found.with_columns(file=pl.concat_str(pl.lit(f"{root}/"), "path"))
    drops.add(found.filter(pl.col("reason").is_not_null()).with_columns(
        reason=pl.struct("kind", "reason").map_elements(lambda r: drop_reason(r["kind"], r["reason"]),
                                                        return_dtype=pl.String)))
    truncated.add(found.filter(pl.col("reason").is_null() & pl.col("truncated").is_not_null())
                  .with_columns(reason="truncated"))


def probe_shard(root: str | Path, out: str | Path, *, columns: dict[str, dict[str, list[str]]], shard: int,
                shards: int, limits: Limits | dict[str, Any] | None = None, probe_workers: int = 2,
                probe_timeout_s: float = 30.0) -> int:
    """Decode the media of one shard of a raw dataset and write its probe record to ``out`` (:data:`PROBE_SCHEMA`):
    the files referenced by the streams of the shard (``memf.data.dataset.shard_of`` of their ``stream_id``) and the
    avatars of its anchors (of the ``anchor_id``). :func:`validate_dataset` reads every shard's record instead of
    decoding (``probes``). Returns the number of files probed.

    Raises:
        DataError: a contract error of the raw tables (the same one-line message validation gives).
    """
    root = Path(root)
    limits = limits if isinstance(limits, Limits) else Limits.from_config(limits)
    tables = load_raw_tables(root, columns, sales_required=False)
    drops, truncated = _Records(), _Records(("level", "object_id", "field"))  # validation records them
    found = _check_values(root, tables, columns, contract.numeric_accepts(None, columns), limits, drops, truncated)
    refs = _media_refs(tables, [*found, _check_references(root, tables, True, drops)])
    owner = refs.select(pl.when(pl.col("level") == "anchor").then("object_id").otherwise("stream_id"))
    mine = refs.filter(pl.Series([shard_of(o, shards) == shard for o in owner.to_series().to_list()], dtype=pl.Boolean))
    results = _probe(root, mine, limits, probe_workers, probe_timeout_s)
    write_parquet(out, results)
    log.info("probe shard %d of %d: %d files, %d do not decode, %d truncated", shard, shards, results.height,
             results["reason"].is_not_null().sum(), results["truncated"].is_not_null().sum())
    return results.height


# --- what the drops leave ----------------------------------------------------------------------------------------
def _cascade(root: Path, tables: dict[str, pl.DataFrame], drops: _Records) -> tuple[pl.DataFrame, pl.DataFrame]:
    """A bad anchor, and (paper section 4.1) a lack of any modality, drop the stream; the items and clips of a
    dropped stream leave with it, each with a line. Returns the items and clips not dropped themselves."""
    streams, items, clips = tables["streams"], tables["items"], tables["clips"]
    anchors = drops.frame().filter(pl.col("level") == "anchor").select(anchor_id="object_id", why="reason")
    drops.add(streams.select("stream_id", "anchor_id").join(anchors, on="anchor_id", how="inner",
                                                            maintain_order="left").select(
        level=pl.lit("stream"), stream_id="stream_id", object_id="stream_id", file=pl.lit(str(root / "streams.parquet")),
        field=pl.lit("anchor_id"), reason=pl.concat_str(pl.lit("anchor '"), "anchor_id", pl.lit("': "), "why")))
    good_items = items.filter(~pl.col("item_id").is_in(drops.ids("item").implode()))
    good_clips = clips.filter(~pl.col("clip_id").is_in(drops.ids("clip").implode()))
    has = streams.select("stream_id", pl.col("stream_id").is_in(good_items["stream_id"].implode()).alias("commodity"),
                         *(pl.col("stream_id").is_in(good_clips.filter(pl.col("kind") == kind)["stream_id"].implode())
                           .alias(f"{kind} clip") for kind in ("video", "audio")))
    lacking = has.filter(~pl.all_horizontal("commodity", "video clip", "audio clip"))
    reasons = [_stream_lacks([m for m in ("commodity", "video clip", "audio clip") if not row[m]])
               for row in lacking.iter_rows(named=True)]
    drops.add(lacking.select(level=pl.lit("stream"), stream_id="stream_id", object_id="stream_id")
              .with_columns(reason=pl.Series(reasons, dtype=pl.String)))
    dropped = drops.ids("stream").implode()
    for df, level, id_col in ((good_items, "item", "item_id"), (good_clips, "clip", "clip_id")):
        drops.add(df.filter(pl.col("stream_id").is_in(dropped)).select(
            level=pl.lit(level), stream_id="stream_id", object_id=id_col, reason=pl.lit("its stream was excluded")))
    return good_items, good_clips


def _kept_truncations(truncated: _Records, excluded: pl.DataFrame, anchors: pl.DataFrame) -> pl.DataFrame:
    """The truncations of objects still kept: neither the object nor its stream dropped, and an anchor only while
    one of its streams is kept (``anchors``: the clean anchors)."""
    dropped_streams = excluded.filter(pl.col("level") == "stream")["object_id"].implode()
    kept = truncated.frame().join(excluded.select("level", "object_id"), on=["level", "object_id"], how="anti",
                                  maintain_order="left")
    kept = kept.filter((pl.col("level") == "anchor") | ~pl.col("stream_id").is_in(dropped_streams).fill_null(False))
    return kept.filter((pl.col("level") != "anchor") | pl.col("object_id").is_in(anchors["anchor_id"].implode()))


def _check_drop_fraction(root: Path, excluded: pl.DataFrame, n_input: int, n_kept: int, max_drop_fraction: float,
                         folds: int) -> None:
    dropped = excluded.filter(pl.col("level") == "stream")
    fraction = dropped.height / max(n_input, 1)
    if fraction > max_drop_fraction:
        counts = Counter(reason.split(":")[0] for reason in dropped["reason"].to_list())
        top = "; ".join(f"{n} x {reason}" for reason, n in counts.most_common(5))
        log.error("excluded rows:\n%s", excluded)
        raise DataError(
            f"{root}: {dropped.height} of {n_input} streams excluded ({fraction:.0%}), more than "
            f"validation.max_drop_fraction={max_drop_fraction:.0%}; most common: {top}"
        )
    if n_kept < max(folds, 1):
        raise DataError(f"{root}: only {n_kept} valid streams, need at least "
                        + (f"split.folds = {folds}" if folds else "one to predict"))


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
    media: bool = True,
    probes: Sequence[str | Path] | None = None,
    fixed: FoldPlan | None = None,
) -> ValidationResult:
    """Validate the raw dataset at ``root`` and write the clean dataset, with its folds, to ``out_dir``.

    Args:
        folds: K cross-validation folds; 0 for a dataset to predict (``sales`` optional, no folds: ``fold = -1``,
            ``target`` NaN where sales are unknown; every other check and drop rule as for training data).
        numeric_accepts: entity -> numeric column -> "non-negative" or "finite" (from
            :func:`memf.data.contract.numeric_accepts` of the config's ``numeric`` policy); None: the default policy.
        limits: the config's ``limits`` (None: the defaults); media are probed under them and texts checked against
            ``max_text_chars``.
        media: False for a media-free dataset (the simulator's ``media: false``): no image column or clip path is
            required, read or probed, and the clean tables have none. A simulated dataset whose ``dataset.json``
            says ``media: false`` cannot be validated with media.
        probes: the records of :func:`probe_shard` (every shard's) to read instead of decoding the media here.
        fixed: the fixed protocol's plan (config ``split.mode: fixed``; :class:`memf.data.folds.FoldPlan`): the
            ``fold`` column holds each stream's role instead of a fold id, and ``folds`` is ignored.

    Outputs (all atomic): streams/anchors/items/clips.parquet, excluded.parquet/.csv, truncated.parquet/.csv,
    summary.csv, summary.md, summary.html, excluded.html, dataset.json. See docs/data-format.md for the checks and
    :mod:`memf.data.folds` for the folds.
    """
    root, out_dir = Path(root), Path(out_dir)
    limits = limits if isinstance(limits, Limits) else Limits.from_config(limits)
    accepts = numeric_accepts if numeric_accepts is not None else contract.numeric_accepts(None, columns)
    plan = fixed if fixed is not None else FoldPlan(folds, split_seed)
    folds = plan.k
    predicting = folds == 0
    if media and raw_media_flag(root) is False:
        raise DataError(f"{root / 'dataset.json'}: the simulator wrote this dataset without media (media: false); "
                        "validate it media-free (config simulator.media: false)")
    tables = load_raw_tables(root, columns, sales_required=not predicting, media=media)
    if "sales" not in tables["streams"].columns:
        tables["streams"] = tables["streams"].with_columns(pl.lit(None, dtype=pl.Float64).alias("sales"))
    drops, truncated = _Records(), _Records(("level", "object_id", "field"))
    found = _check_values(root, tables, columns, accepts, limits, drops, truncated)
    drops.add(_check_sales(root, tables["streams"], target_offset, predicting))
    refs = _media_refs(tables, [*found, _check_references(root, tables, media, drops)])
    if media:
        needed = refs.join(drops.frame().select("level", "object_id"), on=["level", "object_id"], how="anti",
                           maintain_order="left")
        results = _read_probes(probes) if probes is not None else _probe(root, needed, limits, probe_workers,
                                                                          probe_timeout_s)
        _record_probes(root, needed, results, drops, truncated)
    good_items, good_clips = _cascade(root, tables, drops)
    excluded = drops.frame()
    n_input = tables["streams"].height
    clean = _clean_tables(tables, good_items, good_clips, drops.ids("stream"))
    _check_drop_fraction(root, excluded, n_input, clean["streams"].height, max_drop_fraction, folds)
    try:
        clean["streams"] = _with_folds(clean["streams"], plan, group_by, target_offset)
    except ValueError as exc:
        raise DataError(f"{root}: {exc}") from None
    cut = _kept_truncations(truncated, excluded, clean["anchors"])
    _write_outputs(out_dir, clean, excluded, cut, plan)
    meta = _dataset_record(root, columns, target_offset, predicting, media, n_input, clean["streams"], excluded, cut,
                           accepts, limits, plan, group_by)
    write_json(out_dir / "dataset.json", meta)
    _log_outcome(excluded, cut, meta)
    return ValidationResult(n_input=n_input, n_kept=clean["streams"].height,
                            n_excluded_streams=excluded.filter(pl.col("level") == "stream").height,
                            fold_sizes=meta["folds"]["test_sizes"])


def _clean_tables(tables: dict[str, pl.DataFrame], good_items: pl.DataFrame, good_clips: pl.DataFrame,
                  dropped_streams: pl.Series) -> dict[str, pl.DataFrame]:
    """The kept streams (by id), their anchors, items (by stream, position) and clips (by stream, kind, position)."""
    kept = tables["streams"].filter(~pl.col("stream_id").is_in(dropped_streams.implode())).sort("stream_id")
    kept_ids = kept["stream_id"].implode()
    return {
        "streams": kept,
        "anchors": tables["anchors"].filter(pl.col("anchor_id").is_in(kept["anchor_id"].unique().implode()))
        .sort("anchor_id"),
        "items": good_items.filter(pl.col("stream_id").is_in(kept_ids)).sort(["stream_id", "position", "item_id"]),
        "clips": good_clips.filter(pl.col("stream_id").is_in(kept_ids)).sort(["stream_id", "kind", "position",
                                                                             "clip_id"]),
    }


def _with_folds(kept: pl.DataFrame, plan: FoldPlan, group_by: str | None, target_offset: float) -> pl.DataFrame:
    """Columns ``fold`` (-1 for a dataset to predict; the role in the fixed protocol) and ``target`` (NaN where sales
    are unknown)."""
    if plan.fixed:
        fold = plan.assign(kept["stream_id"].to_list())
    elif plan.k == 0:
        fold = np.full(kept.height, -1, dtype=np.int64)
    else:
        fold = assign_folds(kept["stream_id"].to_list(), kept["anchor_id"].to_list(), folds=plan.k, seed=plan.seed,
                            group_by=group_by)
    return kept.with_columns(
        pl.Series("fold", fold, dtype=pl.Int16),
        (pl.col("sales").cast(pl.Float64) + target_offset).log().fill_null(float("nan")).alias("target"),
    )


def _write_outputs(out_dir: Path, clean: dict[str, pl.DataFrame], excluded: pl.DataFrame, cut: pl.DataFrame,
                   plan: FoldPlan) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, df in (*clean.items(), ("excluded", excluded), ("truncated", cut)):
        write_parquet(out_dir / f"{name}.parquet", df)
    write_text(out_dir / "excluded.csv", excluded.write_csv())
    write_text(out_dir / "truncated.csv", cut.write_csv())
    summary = fold_summary(clean["streams"], plan)
    write_text(out_dir / "summary.csv", summary.write_csv())
    write_text(out_dir / "summary.md", _markdown(summary))
    write_report_pages(out_dir, summary, excluded, cut)


def _dataset_record(root: Path, columns: dict[str, dict[str, list[str]]], target_offset: float, predicting: bool,
                    media: bool, n_input: int, kept: pl.DataFrame, excluded: pl.DataFrame, cut: pl.DataFrame,
                    accepts: dict[str, dict[str, str]], limits: Limits, plan: FoldPlan,
                    group_by: str | None) -> dict[str, Any]:
    """The clean dataset's ``dataset.json``."""
    fold, ids = kept["fold"].to_numpy(), kept["stream_id"].to_list()
    return {
        "root": str(root),
        "columns": columns if media else media_free_columns(columns),
        "media": media,
        "target": f"log(sales + {target_offset:g})",
        "target_offset": target_offset,
        "purpose": "predict" if predicting else "train",
        "sales_known": int(kept["target"].is_not_nan().sum()),
        "streams_in": n_input,
        "streams_kept": kept.height,
        "excluded": dict(Counter(excluded["level"].to_list())),
        "truncated": dict(Counter(cut["level"].to_list())),
        "numeric_accepts": accepts,
        "limits": limits.as_dict(),
        "folds": {**plan.record(), "group_by": group_by,
                  "test_sizes": [int((plan.split(fold, k, ids) == SPLITS.index("test")).sum()) for k in range(plan.k)]},
    }


def _log_outcome(excluded: pl.DataFrame, cut: pl.DataFrame, meta: dict[str, Any]) -> None:
    for level, count in sorted(meta["excluded"].items()):
        log.info("excluded %d %s rows", count, level)
    for row in cut.iter_rows(named=True):
        log.warning("truncated %s %s %s: %s", row["level"], row["object_id"], row["field"], row["reason"])
    sizes = meta["folds"]["test_sizes"]
    log.info("kept %d of %d streams; %s", meta["streams_kept"], meta["streams_in"],
             f"test streams per fold {sizes}" if meta["folds"]["k"] else
             f"to predict ({meta['sales_known']} with known sales)")


def fold_summary(streams: pl.DataFrame, plan: FoldPlan | int) -> pl.DataFrame:
    """The paper's Table 5 for fold 0 (its 80/20 split: train + validation, test), every fold's test part, and all.

    A dataset to predict (``folds = 0``) has one row: all its streams, with the statistics of the known targets. In
    the fixed protocol the rows are the training pool, the validation set, the test set and all.
    """
    plan = plan if isinstance(plan, FoldPlan) else FoldPlan(plan)
    folds = plan.k
    def stats(df: pl.DataFrame, name: str) -> dict[str, Any]:
        y = df["target"].filter(df["target"].is_not_nan())
        return {"part": name, "size": df.height, "max": y.max(), "min": y.min(), "mean": y.mean(),
                "median": y.median(), "sd": y.std()}
    if folds == 0:
        return pl.DataFrame([stats(streams, "to predict")], schema_overrides={k: pl.Float64 for k in (
            "max", "min", "mean", "median", "sd")})
    if plan.fixed:
        rows = [stats(streams.filter(pl.col("fold") == code), name) for name, code in
                (("training pool", FIXED_ROLE["pool"]), ("validation", FIXED_ROLE["val"]), ("test", FIXED_ROLE["test"]))]
        return pl.DataFrame([*rows, stats(streams, "all")])
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
