"""Numeric fields: each column's transform from the numeric policy (config ``numeric``); nothing is fitted here.

The policy (:func:`memf.data.contract.numeric_transforms`) gives every numeric column one transform:

- ``log1p``: ``log(1 + x)``, the paper's transform for counts and money; a value below 0 is a data error here
  (validation drops such rows first, so reaching this means the data was validated under another policy);
- ``signed_log1p``: ``sign(x) * log(1 + |x|)``, for signed quantities (growth rates, temperatures): any finite value;
- ``identity``: the value as it is (scores, rates): any finite value.

Stage 1 stores the transformed values unstandardised: standardisation is fitted in stage 2, per cross-validation
fold on that fold's training part. The kind keeps its historical name ``log-standard``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch

from memf.core.io import DataError
from memf.data.contract import NUMERIC_TRANSFORMS
from memf.features.base import Extractor, register
from memf.features.spec import ExtractionSettings, ExtractorSpec


def apply_transform(transform: str, values: np.ndarray) -> np.ndarray:
    """``transform`` of float64 ``values`` (no checks; see :meth:`NumericTransform.transform`)."""
    values = np.asarray(values, dtype=np.float64)
    if transform == "log1p":
        return np.log1p(values)
    if transform == "signed_log1p":
        return np.sign(values) * np.log1p(np.abs(values))
    if transform == "identity":
        return values
    raise ValueError(f"unknown numeric transform '{transform}', expected one of {sorted(NUMERIC_TRANSFORMS)}")


@register
class NumericTransform(Extractor):
    kind: ClassVar[str] = "log-standard"
    modality: ClassVar[str] = "numeric"
    defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, spec: ExtractorSpec, settings: ExtractionSettings, device: torch.device) -> None:
        super().__init__(spec, settings, device)

    @property
    def dim(self) -> int:
        return 1

    @property
    def weights_id(self) -> str:
        return "none"

    def transform(self, key: str, transform: str, values: np.ndarray) -> np.ndarray:
        """float32 ``transform`` of ``key``'s ("entity.field") values; raises :class:`DataError` on a value the
        transform does not accept (non-finite, or negative under log1p)."""
        values = np.asarray(values, dtype=np.float64)
        if transform not in NUMERIC_TRANSFORMS:
            raise ValueError(f"numeric field '{key}': unknown transform '{transform}', expected one of "
                             f"{sorted(NUMERIC_TRANSFORMS)}")
        if not np.isfinite(values).all():
            raise DataError(f"numeric field '{key}': non-finite value {values[~np.isfinite(values)][0]}")
        if NUMERIC_TRANSFORMS[transform] == "non-negative" and (values < 0).any():
            raise DataError(f"numeric field '{key}': value {values.min():g} < 0 cannot be {transform}-transformed; "
                            "validation drops such rows, so results/data was validated under another numeric policy")
        return apply_transform(transform, values).astype(np.float32)
