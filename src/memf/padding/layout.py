"""Where the padding rule writes: the one place each padded file's path is spelled (standard library only: the
workflow reads it when it loads)."""

from __future__ import annotations

from memf.data.layout import RESULTS

PADDED_DIR = f"{RESULTS}/padded"


def padded_path(feature_set: str) -> str:
    """``results/padded/{feature_set}.h5``: the padded tensors of a feature set (docs/architecture.md)."""
    return f"{PADDED_DIR}/{feature_set}.h5"


def truncated_path(padded: str) -> str:
    """The record of what padding dropped or cut, beside a padded file: ``{stem}.truncated.parquet``."""
    stem = padded[: -len(".h5")] if padded.endswith(".h5") else padded
    return f"{stem}.truncated.parquet"
