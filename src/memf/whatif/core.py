"""Predicting what-if variants of planned streams (docs/predict.md, "What if").

The dataset (planned streams and every stream whose anchor, items or room a variant borrows) is validated, extracted,
padded and predicted by the bundle's predict chain (:func:`memf.predict.predictor.predict_dataset`, its files in
``out``). A variant's model inputs are then its planned stream's padded inputs with the anchor's fields taken from a
stream of that anchor, each listed item's fields from the stream where it is listed (at its place among that stream's
kept items), and the room's fields from the named stream: the features of the very objects the simulator's
counterfactual truth uses (:mod:`memf.simulate.counterfactual`). Video and audio stay the planned stream's.

Every member of the bundle (each fold's seeds; each fold's weighted ensemble for ``best``) predicts every variant:

- ``log_sales_pred`` / ``sales_pred``: the members' mean, with the bundle's interval (``*_lower``, ``*_upper``);
- ``rank``: 1 for the variant of its stream with the highest prediction;
- ``diff_log``: the mean over members of (variant - plan) in log(sales), ``diff_lower``/``diff_upper`` its 5th and
  95th percentiles over the members: how far the models the bundle averages disagree about the difference (the
  stream's own noise cancels in a difference of one stream with itself, so this is the models' uncertainty);
- on simulated data, ``true_expected_log_sales``, ``true_rank`` and ``true_diff``: the simulator's counterfactual
  truth; ``whatif.json`` says how often the predicted best variant of a stream is its true best, and the mean
  Spearman correlation of the predicted and true values of each stream's variants.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import yaml
from scipy.stats import spearmanr

from memf.core.io import DataError, write_json, write_parquet, write_text
from memf.data.layout import VALIDATED
from memf.padding.batches import BatchReader
from memf.padding.store import PaddedStore
from memf.predict.neutral import entity_keys
from memf.predict.plan import PREDICT_FILES, WHATIF_FILES
from memf.predict.predictor import predict_arrays, predict_dataset
from memf.simulate.counterfactual import Variant, counterfactual_truth

log = logging.getLogger(__name__)

#: The columns of a variants file (CSV, Parquet or YAML); ``items`` is a list, or in a CSV ``;``-separated ids.
VARIANT_COLUMNS: tuple[str, ...] = ("stream_id", "label", "anchor_id", "items", "room_from")
#: Percentiles of the members' differences that bound ``diff_log``.
DIFF_PERCENTILES: tuple[float, float] = (5.0, 95.0)
PLANNED = "as planned"


# --- variants ------------------------------------------------------------------------------------------------------


def _none(value: Any) -> Any:
    return None if value is None or (isinstance(value, str) and not value.strip()) else value


def _variant(row: Mapping[str, Any], where: str) -> Variant:
    unknown = sorted(set(row) - set(VARIANT_COLUMNS))
    if unknown or not _none(row.get("stream_id")):
        raise DataError(f"{where}: columns {unknown} unknown or stream_id missing; a variant has "
                        f"{', '.join(VARIANT_COLUMNS)} (stream_id required)")
    items = _none(row.get("items"))
    if isinstance(items, str):
        items = [i.strip() for i in items.split(";") if i.strip()]
    try:
        return Variant(str(row["stream_id"]), _none(row.get("anchor_id")), tuple(items) if items is not None else None,
                       _none(row.get("room_from")), str(_none(row.get("label")) or ""))
    except (TypeError, ValueError) as exc:
        raise DataError(f"{where}: {exc}") from None


def read_variants(path: str | os.PathLike[str]) -> list[Variant]:
    """The variants of a file: Parquet or CSV with :data:`VARIANT_COLUMNS`, or YAML (a list of mappings)."""
    path = Path(path)
    if path.suffix == ".parquet":
        rows = pl.read_parquet(path).to_dicts()
    elif path.suffix == ".csv":
        rows = pl.read_csv(path, infer_schema_length=0).to_dicts()
    elif path.suffix in (".yaml", ".yml"):
        rows = yaml.safe_load(path.read_text(encoding="utf-8")) or []
    else:
        raise DataError(f"{path}: a variants file is .parquet, .csv, .yaml or .yml")
    if not isinstance(rows, list) or not rows:
        raise DataError(f"{path}: no variants (expected rows with {', '.join(VARIANT_COLUMNS)})")
    return [_variant(row, f"{path} variant {i}") for i, row in enumerate(rows)]


def with_plans(variants: Sequence[Variant]) -> list[Variant]:
    """The variants, each stream's unchanged plan first where the list lacks it (the differences are to it)."""
    out: list[Variant] = []
    for v in variants:
        if not any(o.stream_id == v.stream_id for o in out):
            if not any(_unchanged(w) and w.stream_id == v.stream_id for w in variants):
                out.append(Variant(v.stream_id, label=PLANNED))
        out.append(v)
    return out


def _unchanged(v: Variant) -> bool:
    return v.anchor_id is None and v.items is None and v.room_from is None


# --- where each object's inputs are --------------------------------------------------------------------------------


@dataclass
class _Index:
    row: dict[str, int]  # stream_id -> its row in the padded store
    anchor_stream: dict[str, str]  # anchor_id -> a predicted stream of that anchor
    item_at: dict[str, tuple[str, int]]  # item_id -> (its stream, its place among that stream's kept items)


def _index(store: PaddedStore, data_dir: Path, truncated: Path) -> _Index:
    ids = [str(s) for s in store.stream_id]
    row = {sid: i for i, sid in enumerate(ids)}
    streams = pl.read_parquet(data_dir / "streams.parquet").select("stream_id", "anchor_id")
    anchor_stream: dict[str, str] = {}
    for sid, aid in streams.sort("stream_id").iter_rows():
        if sid in row:
            anchor_stream.setdefault(str(aid), str(sid))
    dropped = set(pl.read_parquet(truncated).filter(pl.col("entity") == "commodity")["object_id"].to_list())
    items = (pl.read_parquet(data_dir / "items.parquet").select("stream_id", "item_id", "position")
             .filter(pl.col("stream_id").is_in(list(row)) & ~pl.col("item_id").is_in(list(dropped)))
             .sort("stream_id", "position"))
    items = items.with_columns(pl.col("position").rank("ordinal").over("stream_id").cast(pl.Int64).alias("k") - 1)
    item_at = {str(i): (str(s), int(k)) for s, i, k in items.select("stream_id", "item_id", "k").iter_rows()}
    return _Index(row, anchor_stream, item_at)


@dataclass
class _Sources:
    plan: str
    anchor: str | None
    room: str | None
    items: list[tuple[str, int]] | None


def _sources(v: Variant, i: int, index: _Index) -> _Sources:
    where = f"variant {i} of {v.stream_id}"
    if v.stream_id not in index.row:
        raise DataError(f"{where}: '{v.stream_id}' is not a predicted stream of the dataset (unpredicted.csv says "
                        "why when it was dropped)")
    anchor = None if v.anchor_id is None else index.anchor_stream.get(v.anchor_id)
    if v.anchor_id is not None and anchor is None:
        raise DataError(f"{where}: anchor '{v.anchor_id}' is not the anchor of a predicted stream of the dataset; "
                        "the dataset must hold a stream of every anchor a variant books")
    if v.room_from is not None and v.room_from not in index.row:
        raise DataError(f"{where}: room_from '{v.room_from}' is not a predicted stream of the dataset")
    items = None
    if v.items is not None:
        missing = [item for item in v.items if item not in index.item_at]
        if missing:
            raise DataError(f"{where}: items {missing} are not items of predicted streams of the dataset (or were "
                            "cut by the model's item axis; padded.truncated.parquet says which)")
        items = [index.item_at[item] for item in v.items]
    return _Sources(v.stream_id, anchor, v.room_from, items)


def _read_rows(store: PaddedStore, rows: list[int]) -> dict[str, np.ndarray]:
    """The padded arrays of the store's ``rows`` (ascending), in that order, as one batch."""
    reader = BatchReader(store, np.asarray(rows, dtype=np.int64), block_rows=max(1, len(rows)))
    ((_, arrays),) = list(reader.batches(len(rows)))
    return arrays


def _variant_arrays(src: _Sources, batch: Mapping[str, np.ndarray], at: Mapping[str, int]) -> dict[str, np.ndarray]:
    """One variant's padded inputs [1, ...]: the plan's, with the anchor's, room's and items' fields replaced."""
    out = {k: v[at[src.plan]][None] for k, v in batch.items()}
    for entity, donor in (("anchor", src.anchor), ("room", src.room)):
        if donor is not None:
            for key in entity_keys(entity, batch):
                out[key] = batch[key][at[donor]][None]
    if src.items is not None:
        for key in entity_keys("commodity", batch):
            out[key] = np.stack([batch[key][at[sid], k] for sid, k in src.items])[None]  # [1, n, ...]
        out["commodity/mask"] = np.ones((1, len(src.items)), dtype=bool)
    return out


def _stack(parts: Sequence[Mapping[str, np.ndarray]], max_items: int) -> dict[str, np.ndarray]:
    """Variants' inputs [1, ...] -> one batch [V, ...], the item axis padded to the longest list."""
    m = max(p["commodity/mask"].shape[1] for p in parts)
    if m > max_items:
        raise DataError(f"a variant lists {m} items; the bundle's models read at most {max_items} per stream")
    out = {}
    for key in parts[0]:
        if key.startswith("commodity/"):
            out[key] = np.concatenate([np.pad(p[key], [(0, 0), (0, m - p[key].shape[1])] + [(0, 0)] * (p[key].ndim - 2))
                                       for p in parts])
        else:
            out[key] = np.concatenate([p[key] for p in parts])
    return out


# --- the answer ----------------------------------------------------------------------------------------------------


def predict_variants(bundle: Any, folder: Path, variants: Sequence[Variant]) -> np.ndarray:
    """[members, V] log(sales) of each variant by each member of ``bundle``, from the predicted dataset in
    ``folder`` (its padded store, validated data and truncation record)."""
    with PaddedStore(folder / PREDICT_FILES["padded"]) as store:
        index = _index(store, folder / VALIDATED, folder / PREDICT_FILES["truncated"])
        sources = [_sources(v, i, index) for i, v in enumerate(variants)]
        streams = {s for src in sources for s in (src.plan, src.anchor, src.room, *(t for t, _ in src.items or []))
                   if s is not None}
        rows = sorted(index.row[s] for s in streams)
        batch = _read_rows(store, rows)
    at = {str(s): i for i, s in enumerate(np.asarray(store.stream_id)[rows])}
    inputs = _stack([_variant_arrays(src, batch, at) for src in sources], bundle.model_axes()[0])
    preds = predict_arrays(bundle, inputs)
    return np.stack([preds[key] for key in sorted(preds)])  # [members, V]


def _frame(variants: Sequence[Variant], members: np.ndarray, q: float, offset: float) -> pl.DataFrame:
    members = members.astype(np.float64)  # [members, V]
    mean = members.mean(axis=0)
    plan_of = {v.stream_id: i for i, v in enumerate(variants) if _unchanged(v)}
    diffs = members - members[:, [plan_of[v.stream_id] for v in variants]]  # [members, V]
    lo, hi = np.percentile(diffs, DIFF_PERCENTILES, axis=0)

    def sales(x: np.ndarray) -> np.ndarray:
        return np.maximum(np.exp(x) - offset, 0.0)

    frame = pl.DataFrame({
        "stream_id": [v.stream_id for v in variants], "variant": np.arange(len(variants)),
        "planned": [_unchanged(v) for v in variants],
        "label": [v.label or _describe(v) for v in variants], "anchor_id": [v.anchor_id for v in variants],
        "items": [";".join(v.items) if v.items else None for v in variants],
        "room_from": [v.room_from for v in variants],
        "log_sales_pred": mean, "sales_pred": sales(mean), "log_sales_lower": mean - q, "log_sales_upper": mean + q,
        "sales_lower": sales(mean - q), "sales_upper": sales(mean + q),
        "diff_log": diffs.mean(axis=0), "diff_lower": lo, "diff_upper": hi, "members": members.shape[0],
    })
    return frame.with_columns(pl.col("log_sales_pred").rank("ordinal", descending=True).over("stream_id")
                              .cast(pl.Int64).alias("rank"))


def _describe(v: Variant) -> str:
    parts = [f"anchor {v.anchor_id}" if v.anchor_id else "", f"items {', '.join(v.items)}" if v.items else "",
             f"room of {v.room_from}" if v.room_from else ""]
    return "; ".join(p for p in parts if p) or PLANNED


def agreement(frame: pl.DataFrame) -> dict[str, Any]:
    """How the predicted variants of each stream (two or more) agree with the counterfactual truth: how often the
    predicted best is the true best (and that rate by chance), and Spearman's rho of predicted and true values."""
    hits, chance, rhos = [], [], []
    for _, part in frame.group_by("stream_id", maintain_order=True):
        if part.height < 2:
            continue
        pred, true = part["log_sales_pred"].to_numpy(), part["true_expected_log_sales"].to_numpy()
        hits.append(bool(np.argmax(pred) == np.argmax(true)))
        chance.append(1.0 / part.height)
        # two variants: +1 when the order agrees, -1 when it does not (Spearman's rho of two values)
        rho = spearmanr(pred, true).statistic if part.height > 2 else np.sign(np.diff(pred)[0] * np.diff(true)[0])
        rhos.append(float(rho))
    if not hits:
        return {"streams": 0}
    return {"streams": len(hits), "variants": frame.height, "best_hit_rate": float(np.mean(hits)),
            "best_hit_rate_by_chance": float(np.mean(chance)), "spearman_mean": float(np.nanmean(rhos)),
            "spearman_median": float(np.nanmedian(rhos))}


def _with_truth(root: Path, variants: Sequence[Variant], frame: pl.DataFrame) -> pl.DataFrame:
    truth = counterfactual_truth(root, variants).select("variant", pl.col("expected_log_sales")
                                                        .alias("true_expected_log_sales"))
    frame = frame.join(truth, on="variant", how="left")
    plan = (frame.filter(pl.col("planned")).unique("stream_id", keep="last")
            .select("stream_id", pl.col("true_expected_log_sales").alias("_plan")))
    return (frame.join(plan, on="stream_id", how="left")
            .with_columns((pl.col("true_expected_log_sales") - pl.col("_plan")).alias("true_diff"),
                          pl.col("true_expected_log_sales").rank("ordinal", descending=True).over("stream_id")
                          .cast(pl.Int64).alias("true_rank"))
            .drop("_plan"))


def answer(bundle: Any, folder: str | os.PathLike[str], dataset_root: str | os.PathLike[str],
           variants: Sequence[Variant]) -> tuple[pl.DataFrame, dict[str, Any]]:
    """The table and summary of the variants (each stream's plan among them, :func:`with_plans`) of a dataset the
    predict chain has predicted into ``folder`` (``results/predict/{name}``: its padded store, validated data and
    truncation record); with the counterfactual truth when ``dataset_root`` holds the simulator's
    ``ground_truth.json``."""
    root = Path(dataset_root)
    members = predict_variants(bundle, Path(folder), variants)
    frame = _frame(variants, members, float(bundle.meta["intervals"]["q"]), bundle.target_offset)
    summary: dict[str, Any] = {"bundle": str(bundle.path), "experiment": bundle.meta["experiment"],
                               "dataset": str(root), "variants": frame.height, "members": int(members.shape[0]),
                               "diff_interval": f"percentiles {DIFF_PERCENTILES} of the members' differences"}
    if (root / "ground_truth.json").is_file():
        frame = _with_truth(root, variants, frame)
        summary["truth"] = agreement(frame)
    return frame.sort("stream_id", "rank"), summary


def write_answer(out: str | os.PathLike[str], frame: pl.DataFrame, summary: Mapping[str, Any]) -> None:
    """``whatif.parquet``, ``whatif.csv`` and ``whatif.json`` in ``out``."""
    out = Path(out)
    write_parquet(out / WHATIF_FILES["table"], frame)
    write_text(out / WHATIF_FILES["csv"], frame.write_csv())
    write_json(out / WHATIF_FILES["summary"], dict(summary))
    log.info("what-if: %d variants of %d streams predicted with %s%s", frame.height, frame["stream_id"].n_unique(),
             summary["experiment"], f"; against the truth: {summary['truth']}" if "truth" in summary else "")


def what_if(bundle: Any, dataset_root: str | os.PathLike[str], variants: str | os.PathLike[str] | Sequence[Variant],
            out: str | os.PathLike[str], **options: Any) -> pl.DataFrame:
    """Predict the variants with ``bundle`` (a loaded :class:`memf.predict.predictor.Predictor`) and write
    ``whatif.parquet``, ``whatif.csv`` and ``whatif.json`` to ``out``, after the predict chain's files of the
    dataset (:func:`memf.predict.predictor.predict_dataset`, given ``options``). ``variants``: a file
    (:func:`read_variants`) or a list of Variants; each stream's unchanged plan is added where missing.

    Raises:
        DataError: a variant naming a stream, anchor, room or item the predicted dataset does not hold (one line).
    """
    chosen = with_plans(read_variants(variants) if isinstance(variants, (str, os.PathLike)) else list(variants))
    predict_dataset(bundle, dataset_root, out, **options)
    frame, summary = answer(bundle, out, dataset_root, chosen)
    write_answer(out, frame, summary)
    return frame
