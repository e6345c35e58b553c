"""MEMF: multi-entity multimodal fusion for live-commerce sales prediction.

``memf.load_bundle(path)`` loads a model bundle for predicting new streams (docs/predict.md); it is imported on first
use, so that importing ``memf`` stays cheap (the workflow imports ``memf.*`` modules at every load).
"""

from __future__ import annotations

from typing import Any

from memf.core.release import VERSION as __version__

__all__ = ["__version__", "load_bundle"]


def __getattr__(name: str) -> Any:
    if name == "load_bundle":
        from memf.predict import load_bundle

        return load_bundle
    raise AttributeError(f"module 'memf' has no attribute {name!r}")
