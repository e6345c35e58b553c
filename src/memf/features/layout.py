"""Where stage 1 writes: the one place each path of the feature store is spelled (standard library only: the
workflow reads it when it loads).

A store is a folder (``results/features``, or ``features/`` inside a dataset to predict's folder) holding, per
modality and extractor, one shard file and one failures file per shard and a manifest (memf.features.store reads and
writes them). Paths are strings so that Snakemake wildcards pass through them.
"""

from __future__ import annotations

import os

from memf.data.layout import RESULTS
from memf.features.spec import CLIP_MODALITIES

#: Where the workflow keeps the tiny local models it builds (rule tiny_model).
MODELS_DIR = f"{RESULTS}/models"
#: The feature store's folder inside a dataset's results folder (``results/``, or a dataset to predict's).
STORE = "features"


def store_dir(prefix: str = "") -> str:
    """``results/{prefix}features``: the training data's store (prefix empty) or a dataset to predict's."""
    return f"{RESULTS}/{prefix}{STORE}"


def shard_suffix(modality: str) -> str:
    """``h5`` for the clip modalities (ragged clip vectors), ``parquet`` for the field modalities."""
    return "h5" if modality in CLIP_MODALITIES else "parquet"


def shard_path(store: str | os.PathLike[str], modality: str, extractor: str, shard: int | str) -> str:
    """``{store}/{modality}/{extractor}/shard-{shard}.{parquet|h5}``."""
    return f"{os.fspath(store)}/{modality}/{extractor}/shard-{shard}.{shard_suffix(modality)}"


def failures_path(store: str | os.PathLike[str], modality: str, extractor: str, shard: int | str) -> str:
    """``{store}/{modality}/{extractor}/shard-{shard}.failures.parquet``: what produced no feature in the shard."""
    return f"{os.fspath(store)}/{modality}/{extractor}/shard-{shard}.failures.parquet"


def manifest_path(store: str | os.PathLike[str], modality: str, extractor: str) -> str:
    """``{store}/{modality}/{extractor}/manifest.json``."""
    return f"{os.fspath(store)}/{modality}/{extractor}/manifest.json"


def model_dir(name: str) -> str:
    """``results/models/{name}``: a tiny local model the workflow builds."""
    return f"{MODELS_DIR}/{name}"
