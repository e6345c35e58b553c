"""The run folder (``results/runs/{experiment}/fold{k}/``): what every trained or reference model writes for one
fold, every seed inside, and reading it back. Training (:mod:`memf.training.fit`) and the tables
(:mod:`memf.report`) share this format, so a table never needs to know which kind of model made a run.

- ``predictions.parquet``: stream_id, seed, split (train | val | test of this fold), y_true, y_pred; every stream of
  the fold for every seed.
- ``metrics.json``: per seed the test and validation metrics and the training facts; the settings used; split sizes;
  on simulated data the oracle R² on this fold's test streams.
- ``model.json``: everything needed to rebuild the models (name, options, dims, target and numeric scaling).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from memf.core.io import DataError, read_json, read_parquet_checked, write_json, write_parquet
from memf.core.metrics import regression_metrics
from memf.data.folds import SPLITS
from memf.training.matrix import METRICS_FILE, MODEL_JSON, PREDICTIONS_FILE

PREDICTION_COLUMNS: dict[str, str] = {
    "stream_id": "string", "seed": "integer", "split": "string", "y_true": "float", "y_pred": "float",
}
SPLIT_NAMES = np.array(SPLITS)


def predictions_frame(
    stream_id: np.ndarray, split_code: np.ndarray, y_true: np.ndarray, y_pred: np.ndarray, seed: int
) -> pl.DataFrame:
    """One row per stream of the fold (split code >= 0; the fixed protocol's unused pool has -1): stream_id, seed,
    split name, y_true, y_pred (float64)."""
    keep = np.flatnonzero(np.asarray(split_code) >= 0)
    return pl.DataFrame(
        {
            "stream_id": np.asarray(stream_id)[keep].astype(str),
            "seed": np.full(len(keep), seed, dtype=np.int64),
            "split": SPLIT_NAMES[np.asarray(split_code, dtype=np.int64)[keep]],
            "y_true": np.asarray(y_true, dtype=np.float64)[keep],
            "y_pred": np.asarray(y_pred, dtype=np.float64)[keep],
        }
    )


def read_predictions(path: str | Path) -> pl.DataFrame:
    """A run's ``predictions.parquet``, checked for its columns, its splits and finite values."""
    frame = pl.from_arrow(read_parquet_checked(path, PREDICTION_COLUMNS))
    assert isinstance(frame, pl.DataFrame)
    bad = frame.filter(~pl.col("y_pred").is_finite() | ~pl.col("y_true").is_finite()).height
    if bad:
        raise DataError(f"{path}: {bad} rows with non-finite y_true or y_pred")
    unknown = set(frame["split"].unique().to_list()) - set(SPLITS)
    if unknown:
        raise DataError(f"{path}: column 'split' holds {sorted(unknown)}, expected one of {list(SPLITS)}")
    return frame


def split_metrics(frame: pl.DataFrame, split: str = "test") -> dict[str, float]:
    """The five metrics of one split of a one-seed predictions frame."""
    part = frame.filter(pl.col("split") == split)
    return regression_metrics(part["y_true"].to_numpy(), part["y_pred"].to_numpy())


def expected_log_sales(ground_truth: str | Path, stream_id: np.ndarray) -> np.ndarray:
    """The simulator's noiseless ``expected_log_sales`` for ``stream_id``, in that order.

    Raises:
        DataError: a stream has no ground-truth row.
    """
    table = pl.from_arrow(read_parquet_checked(ground_truth, {"stream_id": "string", "expected_log_sales": "float"}))
    assert isinstance(table, pl.DataFrame)
    lookup = dict(zip(table["stream_id"].to_list(), table["expected_log_sales"].to_list(), strict=True))
    missing = [s for s in np.asarray(stream_id).astype(str) if s not in lookup]
    if missing:
        raise DataError(f"{ground_truth}: no row for {len(missing)} streams (first: {missing[0]})")
    return np.array([lookup[s] for s in np.asarray(stream_id).astype(str)], dtype=np.float64)


def write_run(
    out_dir: str | Path,
    predictions: pl.DataFrame,
    metrics: dict[str, Any],
    model_meta: dict[str, Any],
    ground_truth: str | Path | None,
) -> dict[str, Any]:
    """Write predictions.parquet, metrics.json and model.json of one (experiment, fold); return the metrics written.

    ``metrics`` gets, per seed (under ``seeds``, keyed by the seed as a string), the test and validation metrics
    recomputed from ``predictions`` (so the file and the tables agree by construction), the split sizes, and on
    simulated data (``ground_truth`` given) ``oracle_r2`` on this fold's test streams.
    """
    out_dir = Path(out_dir)
    out = dict(metrics)
    per_seed = out.setdefault("seeds", {})
    for seed in sorted(predictions["seed"].unique().to_list()):
        part = predictions.filter(pl.col("seed") == seed)
        entry = per_seed.setdefault(str(seed), {})
        entry["test"] = split_metrics(part, "test")
        entry["val"] = split_metrics(part, "val")
    first = predictions.filter(pl.col("seed") == predictions["seed"].min())
    out["n"] = {split: first.filter(pl.col("split") == split).height for split in SPLITS}
    if ground_truth is not None:
        test = first.filter(pl.col("split") == "test")
        truth = expected_log_sales(ground_truth, test["stream_id"].to_numpy())
        out["oracle_r2"] = regression_metrics(test["y_true"].to_numpy(), truth)["r2"]
    write_parquet(out_dir / PREDICTIONS_FILE, predictions)
    write_json(out_dir / MODEL_JSON, model_meta)
    write_json(out_dir / METRICS_FILE, out)
    return out


def read_metrics(run_dir: str | Path) -> dict[str, Any]:
    return read_json(Path(run_dir) / METRICS_FILE)
