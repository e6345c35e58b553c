"""What-if questions about planned streams, answered with a model bundle (docs/predict.md, "What if").

    frame = memf.whatif.what_if(memf.load_bundle("results/bundles/best"), "next_week/", "variants.csv", "w23-whatif/")

A variant (:class:`memf.simulate.counterfactual.Variant`) books another anchor, sells other items, or runs in another
room, each naming objects of the dataset: the same references the simulator's counterfactual truth takes, so on
simulated data every variant's predicted sales can be compared with what the simulator says it would sell.
:mod:`memf.whatif.core` predicts them; ``python -m memf.whatif BUNDLE DATASET VARIANTS OUT`` is the CLI.
Importing this package imports nothing heavy.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import polars as pl

__all__ = ["what_if"]


def what_if(bundle: Any, dataset_root: str | os.PathLike[str], variants: Any, out: str | os.PathLike[str],
            **options: Any) -> pl.DataFrame:
    """Predict every variant of ``variants`` (a file or a list of Variants) of streams of ``dataset_root`` with
    ``bundle`` (:func:`memf.whatif.core.what_if`)."""
    from memf.whatif.core import what_if as run

    return run(bundle, dataset_root, variants, out, **options)
