"""Predicting upcoming streams with a trained experiment: the model bundle's format and checks
(:mod:`memf.predict.bundle`), writing one (:mod:`memf.predict.export`), the predictor (:mod:`memf.predict.predictor`),
intervals (:mod:`memf.predict.intervals`) and drivers (:mod:`memf.predict.drivers`).

    bundle = memf.load_bundle("results/bundles/memf")
    frame = bundle.predict("next_week/")          # a raw dataset (docs/data-format.md), sales optional

See docs/predict.md. Importing this package imports nothing heavy; torch is loaded with the bundle.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from memf.predict.predictor import Predictor

__all__ = ["load_bundle"]


def load_bundle(path: str | os.PathLike[str], device: str = "cpu", builder: Any = None) -> Predictor:
    """Load and check a model bundle, ready to predict raw datasets (:func:`memf.predict.predictor.load_bundle`;
    torch and the models are imported here, on the first call)."""
    from memf.predict.predictor import load_bundle as load

    return load(path, device, builder)
