"""The neutral reference of each entity, against which the drivers measure a stream's entities (docs/predict.md).

Per member fold, from that fold's training part, in the model's standardised input space: for the anchor and the
streaming room, the mean of each field's vector (and standardised numeric value) over the training streams; for the
commodities, video and audio, a set of ``n`` identical mean objects (the mean item, the mean clip over every real item
or clip of the training streams), ``n`` the training streams' mean count rounded (at least 1), so the masks stay
valid and the set's size is neutral too. The export computes it (it is part of a bundle); the predictor neutralises
one entity of a stream at a time.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from memf.data.contract import CLIP_KINDS, ENTITIES, MODALITIES

#: Entity -> (the mask of its set, or None) for the entities whose inputs are sets.
SET_MASKS: dict[str, str] = {"commodity": "commodity/mask", "video": "video/mask", "audio": "audio/mask"}


def entity_keys(entity: str, arrays: Mapping[str, np.ndarray]) -> list[str]:
    """The batch keys holding ``entity``'s inputs (its mask excluded)."""
    if entity in CLIP_KINDS:
        return [f"{entity}/x"]
    return [f"{entity}/{m}" for m in MODALITIES if f"{entity}/{m}" in arrays]


def neutral_reference(arrays: Mapping[str, np.ndarray], rows: np.ndarray) -> dict[str, np.ndarray]:
    """The neutral inputs of every entity from the streams ``rows`` (a fold's training part), model input space.

    Returns batch key -> one stream's (anchor, room: ``[L, ...]``) or one object's (commodity ``[L, ...]``, clips
    ``[D]``) mean input, and ``{entity}/count`` -> the rounded mean set size (int64 scalar, at least 1).
    """
    out: dict[str, np.ndarray] = {}
    for entity in ENTITIES:
        mask_key = SET_MASKS.get(entity)
        if mask_key is None:
            for key in entity_keys(entity, arrays):
                out[key] = arrays[key][rows].astype(np.float64).mean(axis=0).astype(np.float32)
            continue
        mask = arrays[mask_key][rows]  # [N, M]
        for key in entity_keys(entity, arrays):
            real = arrays[key][rows][mask]  # [n_objects, ...]
            out[key] = real.astype(np.float64).mean(axis=0).astype(np.float32)
        out[f"{entity}/count"] = np.array(max(1, int(round(float(mask.sum(axis=1).mean())))), dtype=np.int64)
    return out


def neutralise(arrays: Mapping[str, np.ndarray], entity: str, neutral: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A copy of the batch ``arrays`` with ``entity``'s inputs replaced by the neutral reference (masks stay valid)."""
    out = dict(arrays)
    mask_key = SET_MASKS.get(entity)
    n = len(next(iter(arrays.values())))
    if mask_key is None:
        for key in entity_keys(entity, arrays):
            out[key] = np.broadcast_to(neutral[key], arrays[key].shape).astype(np.float32)
        return out
    slots = arrays[mask_key].shape[1]
    count = min(int(neutral[f"{entity}/count"]), slots)
    mask = np.zeros((n, slots), dtype=bool)
    mask[:, :count] = True
    out[mask_key] = mask
    for key in entity_keys(entity, arrays):
        x = np.zeros_like(arrays[key])
        x[:, :count] = neutral[key]
        out[key] = x
    return out
