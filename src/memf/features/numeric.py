"""Numeric fields: the paper's log transform, then standardisation fitted on the training split only.

Every numeric column is ``log1p``-transformed (counts, prices, durations; a value below 0 is a data error) except the
columns named in option ``identity`` (e.g. ``score``), which are kept as they are. Each (entity, field) is then
standardised with the mean and standard deviation (ddof 0) of its transformed values over the ``train`` split:
anchors referenced by training streams (each anchor once), items of training streams, training streams' rooms. A
field that is constant on the training split gets sd 1. The fitted statistics go into every shard and the manifest.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch

from memf.features.base import Extractor, register
from memf.features.spec import ExtractionSettings, ExtractorSpec
from memf.core.io import DataError


@register
class LogStandard(Extractor):
    kind: ClassVar[str] = "log-standard"
    modality: ClassVar[str] = "numeric"
    defaults: ClassVar[dict[str, Any]] = {"identity": ["score"]}

    def __init__(self, spec: ExtractorSpec, settings: ExtractionSettings, device: torch.device) -> None:
        super().__init__(spec, settings, device)
        self.identity_fields = frozenset(self.options["identity"])
        self.stats: dict[str, dict[str, Any]] = {}

    @property
    def dim(self) -> int:
        return 1

    @property
    def weights_id(self) -> str:
        return "fitted-on-train"

    def transform(self, field: str, values: np.ndarray) -> np.ndarray:
        """``log1p`` (or the identity for ``identity`` fields) of finite values; raises :class:`DataError` otherwise."""
        values = np.asarray(values, dtype=np.float64)
        if not np.isfinite(values).all():
            raise DataError(f"numeric field '{field}': non-finite value {values[~np.isfinite(values)][0]}")
        if field in self.identity_fields:
            return values
        if (values < 0).any():
            raise DataError(f"numeric field '{field}': value {values.min()} < 0 cannot be log1p-transformed (list it under identity)")
        return np.log1p(values)

    def fit(self, key: str, field: str, train_values: np.ndarray) -> None:
        """Fit the standardisation of ``key`` ("entity.field") on its training values."""
        if len(train_values) == 0:
            raise DataError(f"numeric field '{key}': no training values to fit the standardisation on")
        t = self.transform(field, train_values)
        sd = float(t.std())
        self.stats[key] = {
            "transform": "identity" if field in self.identity_fields else "log1p",
            "mean": float(t.mean()),
            "sd": sd if sd > 0 else 1.0,
            "n_train": len(t),
        }

    def apply(self, key: str, field: str, values: np.ndarray) -> np.ndarray:
        """Transformed, standardised float32 values of ``key``."""
        if key not in self.stats:
            raise ValueError(f"numeric field '{key}' was not fitted")
        s = self.stats[key]
        return ((self.transform(field, values) - s["mean"]) / s["sd"]).astype(np.float32)
