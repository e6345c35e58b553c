"""Where the data stage writes: the one place each of its paths is spelled (standard library only: the workflow
reads it when it loads; the simulator's and the validator's modules load media libraries).

Paths are strings so that Snakemake wildcards pass through them: ``validated_dir("{prefix}")`` is the output pattern
of rule ``validate``. The training data's folders sit under ``results/``; a dataset to predict has its own under
``results/predict/{name}/`` (its prefix, memf.predict.plan.predict_prefix).
"""

from __future__ import annotations

from pathlib import Path

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


def render_record_path(raw_root: str | Path, shard: int | str) -> Path:
    """``{raw_root}/media/render-{shard}.parquet``: the media files render shard ``shard`` wrote (``path`` relative to
    the root, ``bytes``), in the order it wrote them (memf.simulate.writer writes it)."""
    return Path(raw_root) / "media" / f"render-{shard}.parquet"


def probe_record_path(data_dir: str | Path, shard: int | str) -> Path:
    """``{data_dir}/probe/shard-{shard}.parquet``: per media file of probe shard ``shard``, why it does not decode
    and why it is truncated (``memf.data.validate.PROBE_SCHEMA``)."""
    return Path(data_dir) / "probe" / f"shard-{shard}.parquet"
