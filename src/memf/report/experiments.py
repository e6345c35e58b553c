"""Reading the runs of an experiment: every seed's test predictions, aligned by stream."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from memf.core.io import DataError
from memf.training.matrix import PREDICTIONS_FILE, RUNS_DIR, Experiment
from memf.training.runs import read_predictions


@dataclass(frozen=True)
class RunSet:
    """Test-split predictions of every seed of one experiment, aligned on the same streams."""

    experiment: Experiment
    stream_id: np.ndarray  # [N] str
    y_true: np.ndarray  # [N]
    preds: np.ndarray  # [n_seeds, N]


def load_runset(exp: Experiment, root: Path = RUNS_DIR) -> RunSet:
    """Read ``predictions.parquet`` of each seed of ``exp`` and align the test split by stream id.

    Raises:
        DataError: the seeds disagree on the test streams or their targets.
    """
    preds = []
    first: pl.DataFrame | None = None
    for seed in exp.seeds:
        path = exp.run_dir(seed, root) / PREDICTIONS_FILE
        test = read_predictions(path).filter(pl.col("split") == "test").sort("stream_id")
        if first is None:
            first = test
        elif test["stream_id"].to_list() != first["stream_id"].to_list() or not np.allclose(
            test["y_true"].to_numpy(), first["y_true"].to_numpy()
        ):
            raise DataError(f"{path}: test streams or targets differ from seed {exp.seeds[0]} of experiment {exp.name}")
        preds.append(test["y_pred"].to_numpy())
    assert first is not None
    return RunSet(exp, first["stream_id"].to_numpy(), first["y_true"].to_numpy(), np.stack(preds))
