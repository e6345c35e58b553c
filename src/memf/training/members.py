"""Rebuilding the trained models of a run folder (``model.json`` + ``weights.safetensors``; docs/training.md): what a
model bundle's members load. Kept apart from :mod:`memf.training.runs`, which the tables read without the models.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from memf.core.io import read_json
from memf.training.matrix import MODEL_JSON, WEIGHTS_FILE


def load_models(run_dir: str | Path, builder: Callable[..., Any] | None = None,
                device: str = "cpu") -> tuple[dict[int, Any], dict[str, Any]]:
    """Rebuild every seed's model of a trained run folder from ``model.json`` and ``weights.safetensors`` (every key
    must match). Returns seed -> model (eval mode, on ``device``) and the metadata; ``per_seed[seed]`` holds each
    target scaling (memf.models.build_model by default, or ``builder``)."""
    from safetensors.torch import load_file

    from memf.models import build_model

    run_dir = Path(run_dir)
    meta = read_json(run_dir / MODEL_JSON)
    builder = builder or build_model
    dims = {k: tuple(v) for k, v in meta["dims"].items()}
    tensors = load_file(str(run_dir / WEIGHTS_FILE))
    models = {}
    for seed in meta["seeds"]:
        prefix = f"seed{seed}/"
        model = builder(meta["model"], dims, **meta["options"])
        model.load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}, strict=True)
        models[int(seed)] = model.to(device).eval()
    return models, meta
