"""Reading the runs of an experiment: every fold's test predictions for every seed, pooled over the folds."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from memf.core.io import DataError, read_json
from memf.training.matrix import MODEL_JSON, PREDICTIONS_FILE, RUNS_DIR, Experiment
from memf.training.runs import read_predictions


@dataclass(frozen=True)
class RunSet:
    """The test predictions of one experiment: each fold's test part, pooled, for every seed.

    Every stream appears once (its fold's test part), so pooled metrics are over all streams.
    """

    experiment: Experiment
    stream_id: np.ndarray  # [N] str, ordered by fold, then stream id
    fold: np.ndarray  # [N] the fold whose test part holds the stream
    y_true: np.ndarray  # [N]
    preds: np.ndarray  # [n_seeds, N]
    params: dict[int, dict]  # fold -> the settings that fold's runs used
    n_parameters: dict[int, int]  # fold -> parameter count of its (first seed's) model; empty for references

    @property
    def folds(self) -> list[int]:
        return sorted(set(self.fold.tolist()))


def load_runset(exp: Experiment, folds: Sequence[int], root: Path = RUNS_DIR) -> RunSet:
    """Read ``predictions.parquet`` of every fold of ``exp`` and pool the test parts.

    Raises:
        DataError: a fold lacks a seed, or the seeds of a fold disagree on its test streams or targets.
    """
    ids, fold_of, truth, preds = [], [], [], []
    params, sizes = {}, {}
    for fold in folds:
        path = exp.run_dir(fold, root) / PREDICTIONS_FILE
        test = read_predictions(path).filter(pl.col("split") == "test").sort("seed", "stream_id")
        per_seed = []
        first = None
        for seed in exp.seeds:
            part = test.filter(pl.col("seed") == seed)
            if part.height == 0:
                raise DataError(f"{path}: no test predictions for seed {seed} of experiment {exp.name}")
            if first is None:
                first = part
            elif part["stream_id"].to_list() != first["stream_id"].to_list():
                raise DataError(f"{path}: seed {seed} has other test streams than seed {exp.seeds[0]}")
            per_seed.append(part["y_pred"].to_numpy())
        assert first is not None
        ids.append(first["stream_id"].to_numpy())
        fold_of.append(np.full(first.height, fold))
        truth.append(first["y_true"].to_numpy())
        preds.append(np.stack(per_seed))
        meta = read_json(exp.run_dir(fold, root) / MODEL_JSON)
        params[fold] = meta.get("params", {})
        if "n_parameters" in meta:
            sizes[fold] = int(meta["n_parameters"])
    stream_id = np.concatenate(ids)
    if len(set(stream_id.tolist())) != len(stream_id):
        raise DataError(f"experiment {exp.name}: a stream is a test stream in two folds")
    return RunSet(exp, stream_id, np.concatenate(fold_of), np.concatenate(truth), np.concatenate(preds, axis=1),
                  params, sizes)
