"""The run folder (``results/runs/{experiment}/seed{seed}/``): what every trained or reference model writes, and reading
it back. Training (:mod:`memf.training.train`), the reference models (:mod:`memf.training.references`) and the tables
(:mod:`memf.report`) share this format, so a table never needs to know which kind of model made a run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from memf.data.dataset import SPLITS
from memf.core.io import DataError, read_json, read_parquet_checked, write_json, write_parquet
from memf.core.metrics import regression_metrics
from memf.training.matrix import (  # re-exported: the file names live with the matrix, which must import quickly
    ATTENTION_FILE,
    HISTORY_FILE,
    METRICS_FILE,
    MODEL_JSON,
    PREDICTIONS_FILE,
    REFERENCE_FILES,
    TRAINED_FILES,
    WEIGHTS_FILE,
)

PREDICTION_COLUMNS: dict[str, str] = {"stream_id": "string", "split": "string", "y_true": "float", "y_pred": "float"}
SPLIT_NAMES = np.array(SPLITS)


def predictions_frame(stream_id: np.ndarray, split_code: np.ndarray, y_true: np.ndarray, y_pred: np.ndarray) -> pl.DataFrame:
    """One row per stream of every split: stream_id, split name, y_true, y_pred (float64)."""
    return pl.DataFrame(
        {
            "stream_id": np.asarray(stream_id).astype(str),
            "split": SPLIT_NAMES[np.asarray(split_code, dtype=np.int64)],
            "y_true": np.asarray(y_true, dtype=np.float64),
            "y_pred": np.asarray(y_pred, dtype=np.float64),
        }
    )


def read_predictions(path: str | Path) -> pl.DataFrame:
    """A run's ``predictions.parquet``, checked for its columns and for finite values."""
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
    """The five metrics of one split of a predictions frame."""
    part = frame.filter(pl.col("split") == split)
    return regression_metrics(part["y_true"].to_numpy(), part["y_pred"].to_numpy())


def oracle_r2(ground_truth: str | Path, stream_id: np.ndarray, y_true: np.ndarray) -> float:
    """R^2 of the simulator's noiseless ``expected_log_sales`` against the realised target on the given streams.

    This is the best R^2 any model can expect on those streams. ``ground_truth`` is the simulator's
    ``ground_truth.parquet`` (stream_id, expected_log_sales, ...).

    Raises:
        DataError: a stream has no ground-truth row.
    """
    table = pl.from_arrow(read_parquet_checked(ground_truth, {"stream_id": "string", "expected_log_sales": "float"}))
    assert isinstance(table, pl.DataFrame)
    want = pl.DataFrame({"stream_id": np.asarray(stream_id).astype(str), "y_true": np.asarray(y_true, dtype=np.float64)})
    joined = want.join(table.select("stream_id", "expected_log_sales"), on="stream_id", how="left", maintain_order="left")
    missing = joined.filter(pl.col("expected_log_sales").is_null())["stream_id"].to_list()
    if missing:
        raise DataError(f"{ground_truth}: no row for {len(missing)} streams (first: {missing[0]})")
    return regression_metrics(joined["y_true"].to_numpy(), joined["expected_log_sales"].to_numpy())["r2"]


def write_run_core(
    out_dir: str | Path,
    predictions: pl.DataFrame,
    metrics: dict[str, Any],
    model_meta: dict[str, Any],
    ground_truth: str | Path | None,
) -> dict[str, Any]:
    """Write predictions.parquet, metrics.json and model.json of a run; return the metrics written.

    ``metrics`` gets the test-split metrics recomputed from ``predictions`` (so the file and the tables agree by
    construction), the validation metrics under ``val``, split sizes, and on simulated data (``ground_truth`` given)
    ``oracle_r2`` and ``fraction_of_oracle_r2`` on the same test streams.
    """
    out_dir = Path(out_dir)
    test = predictions.filter(pl.col("split") == "test")
    out = dict(metrics)
    out.update(split_metrics(predictions, "test"))
    out["val"] = split_metrics(predictions, "val")
    out["n"] = {split: predictions.filter(pl.col("split") == split).height for split in SPLITS}
    if ground_truth is not None:
        oracle = oracle_r2(ground_truth, test["stream_id"].to_numpy(), test["y_true"].to_numpy())
        out["oracle_r2"] = oracle
        out["fraction_of_oracle_r2"] = out["r2"] / oracle if oracle > 0 else None
    write_parquet(out_dir / PREDICTIONS_FILE, predictions)
    write_json(out_dir / MODEL_JSON, model_meta)
    write_json(out_dir / METRICS_FILE, out)
    return out


def read_metrics(run_dir: str | Path) -> dict[str, Any]:
    return read_json(Path(run_dir) / METRICS_FILE)
