"""Where the data stage writes: the one place each of its paths is spelled (standard library only: the workflow
reads it when it loads).

Paths are strings so that Snakemake wildcards pass through them: ``validated_dir("{prefix}")`` is the output pattern
of rule ``validate``. The training data's folders sit under ``results/``; a dataset to predict has its own under
``results/predict/{name}/`` (its prefix, memf.predict.plan.predict_prefix).
"""

from __future__ import annotations

#: Every output of the pipeline is under this folder of the working directory.
RESULTS = "results"
#: The validated dataset's folder inside a dataset's results folder (``results/``, or a dataset to predict's).
VALIDATED = "data"


def validated_dir(prefix: str = "") -> str:
    """``results/{prefix}data``: the validated dataset with its folds (docs/architecture.md)."""
    return f"{RESULTS}/{prefix}{VALIDATED}"


def validated_file(name: str, prefix: str = "") -> str:
    """A file of the validated dataset (``streams.parquet``, ``dataset.json``, ``excluded.csv``, ...)."""
    return f"{validated_dir(prefix)}/{name}"
