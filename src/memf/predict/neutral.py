"""The neutral reference of each entity, against which the drivers measure a stream's entities (docs/predict.md).

Per member fold, from that fold's training part, in the model's standardised input space: for the anchor and the
streaming room, the mean of each field's vector (and standardised numeric value) over the training streams; for the
commodities, video and audio, a set of ``n`` identical mean objects (the mean item, the mean clip over every real item
or clip of the training streams), ``n`` the training streams' mean count rounded (at least 1), so the masks stay
valid and the set's size is neutral too. The export computes it (it is part of a bundle); the predictor neutralises
one entity of a stream at a time.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from memf.data.contract import CLIP_KINDS, ENTITIES, MODALITIES

#: Entity -> (the mask of its set, or None) for the entities whose inputs are sets.
SET_MASKS: dict[str, str] = {"commodity": "commodity/mask", "video": "video/mask", "audio": "audio/mask"}


def entity_keys(entity: str, arrays: Mapping[str, np.ndarray]) -> list[str]:
    """The batch keys holding ``entity``'s inputs (its mask excluded)."""
    if entity in CLIP_KINDS:
        return [f"{entity}/x"]
    return [f"{entity}/{m}" for m in MODALITIES if f"{entity}/{m}" in arrays]


def neutral_reference(batches: Iterable[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The neutral inputs of every entity from the streams of ``batches`` (a fold's training part as standardised
    padded batches, model input space), accumulated batch by batch.

    Returns batch key -> one stream's (anchor, room: ``[L, ...]``) or one object's (commodity ``[L, ...]``, clips
    ``[D]``) mean input, and ``{entity}/count`` -> the rounded mean set size (int64 scalar, at least 1).
    """
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    sizes = {entity: [0, 0] for entity in SET_MASKS}  # entity -> [objects, streams]
    for arrays in batches:
        for entity in ENTITIES:
            mask_key = SET_MASKS.get(entity)
            mask = arrays[mask_key] if mask_key is not None else None  # [B, M]
            for key in entity_keys(entity, arrays):
                x = arrays[key] if mask is None else arrays[key][mask]  # [B, ...] or [n_objects, ...]
                sums[key] = sums.get(key, 0.0) + x.astype(np.float64).sum(axis=0)
                counts[key] = counts.get(key, 0) + len(x)
            if mask is not None:
                sizes[entity][0] += int(mask.sum())
                sizes[entity][1] += len(mask)
    out = {key: (total / counts[key]).astype(np.float32) for key, total in sums.items()}
    for entity, (objects, streams) in sizes.items():
        out[f"{entity}/count"] = np.array(max(1, int(round(objects / streams))), dtype=np.int64)
    return out


def neutralise(arrays: Mapping[str, np.ndarray], entity: str, neutral: Mapping[str, np.ndarray]
               ) -> dict[str, np.ndarray]:
    """A copy of the batch ``arrays`` with ``entity``'s inputs replaced by the neutral reference (masks stay valid).

    A neutral set may be longer than the batch's own set axis (a batch is padded to its own longest list): the
    entity's arrays then grow to the neutral count.
    """
    out = dict(arrays)
    mask_key = SET_MASKS.get(entity)
    n = len(next(iter(arrays.values())))
    if mask_key is None:
        for key in entity_keys(entity, arrays):
            out[key] = np.broadcast_to(neutral[key], arrays[key].shape).astype(np.float32)
        return out
    count = int(neutral[f"{entity}/count"])
    slots = max(arrays[mask_key].shape[1], count)
    mask = np.zeros((n, slots), dtype=bool)
    mask[:, :count] = True
    out[mask_key] = mask
    for key in entity_keys(entity, arrays):
        x = np.zeros((n, slots, *arrays[key].shape[2:]), dtype=arrays[key].dtype)  # [B, slots, ...]
        x[:, :count] = neutral[key]
        out[key] = x
    return out
