"""Linear probes of MEMF's entity vectors: what did each entity encoder learn? (docs/training.md, "Learning curves").

MEMF fuses one vector per entity (the Multi-Entity Transformer's input, [B, E, D]). A probe reads those vectors of a
trained run and fits a ridge regression (scikit-learn's ``RidgeCV``, its penalty chosen by efficient leave-one-out on
the training part) per entity, predicting that entity's true contribution to the expected log sales from its vector
on the run's training streams; its R² on the run's test streams says how much of the contribution the vector holds
linearly (1: all of it; 0: nothing a linear read-out finds).

The same probe of the same architecture **untrained** (its initial weights, seeded) is the baseline: entity tokens fed
nearly linear inputs (the simulator's latent factors) keep much of a linear contribution even through random layers, so
what training added is the difference.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import RidgeCV
from sklearn.metrics import r2_score

from memf.core.io import DataError
from memf.models import build_model
from memf.padding.store import PaddedStore
from memf.training.loop import to_device
from memf.training.members import load_models
from memf.training.prepare import fold_data

PROBE_ALPHAS = np.logspace(-3, 4, 15)
PROBE_BATCH = 256  # streams per forward pass (memory only)


def entity_vectors(run_dir: str | Path, padded: str | Path, fold: int, seed: int,
                   splits: tuple[str, ...] = ("train", "test"), trained: bool = True
                   ) -> tuple[tuple[str, ...], dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The entity vectors of one seed's trained MEMF (or, ``trained=False``, the same architecture with its initial
    weights drawn from ``seed``) on the streams of ``splits`` of run fold ``fold``.

    Returns (entities, split -> stream ids [N], split -> vectors [N, E, D]).

    Raises:
        DataError: the run's model has no entity fusion (not MEMF or one of its entity-level variants).
    """
    models, meta = load_models(run_dir)
    model = models[seed]
    if not trained:
        torch.manual_seed(seed)
        model = build_model(meta["model"], {k: tuple(v) for k, v in meta["dims"].items()}, **meta["options"]).eval()
    if not hasattr(model, "fusion") or not hasattr(model, "entities"):
        raise DataError(f"{run_dir}: {type(model).__name__} has no entity vectors to probe (MEMF's fusion input)")
    captured: list[np.ndarray] = []
    hook = model.fusion.register_forward_hook(lambda _m, args, _out: captured.append(args[0].float().numpy()))
    ids, vectors = {}, {}
    try:
        with PaddedStore(padded) as store, torch.no_grad():
            data = fold_data(store, fold)
            for split in splits:
                rows = data.rows[split]
                captured.clear()
                for arrays in data.batches(rows, PROBE_BATCH):
                    model(to_device(arrays, torch.device("cpu")))
                vectors[split] = np.concatenate(captured)  # [N, E, D]
                ids[split] = store.stream_id[rows].astype(str)
    finally:
        hook.remove()
    return tuple(model.entities), ids, vectors


def probe_entities(entities: tuple[str, ...], vectors: Mapping[str, np.ndarray],
                   truth: Mapping[str, Mapping[str, np.ndarray]]) -> dict[str, float]:
    """Entity -> test R² of a ridge probe fitted on the training vectors for ``truth[split][entity]`` ([N] each)."""
    out = {}
    for e, entity in enumerate(entities):
        if entity not in truth["train"]:
            continue
        probe = RidgeCV(alphas=PROBE_ALPHAS).fit(vectors["train"][:, e], truth["train"][entity])
        out[entity] = float(r2_score(truth["test"][entity], probe.predict(vectors["test"][:, e])))
    return out
