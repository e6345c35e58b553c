"""Shared parts of the fusion models: output type, options, input layout checks and the model registry.

Every model is built by :func:`build_model` from the per-stream shapes of a padded batch (:func:`batch_dims`) and plain
JSON-able options, and is called as ``model(batch) -> ModelOutput``. The batch layout is ``docs/architecture.md``'s
padded tensor file: ``"{entity}/{modality}"`` field tensors, ``"commodity/mask"`` and ``"{video,audio}/{x,mask}"``.

In ``dims`` the item axis M (``commodity/*``) and the clip axes C (``video/*``, ``audio/*``) are the most items and
clips a batch may hold (the padded store's longest lists); a batch is padded to its own longest lists, so its M and C
may be shorter. Nothing in a model depends on them: every model is padding-invariant (tested).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from memf.core.registry import Registry
from memf.data.contract import CLIP_KINDS, ENTITIES, FIELD_ENTITIES, MODALITIES
from memf.models.options import (  # noqa: F401 (re-exported: the option catalog is torch-free)
    COMMON_OPTIONS,
    DEMO_OPTIONS,
    MODEL_OPTIONS,
    PAPER_OPTIONS,
    ModelConfig,
    accepted_options,
)

Dims = dict[str, tuple[int, ...]]


@dataclass
class ModelOutput:
    """What every fusion model returns.

    Attributes:
        pred: [B] predicted target (log sales).
        attention: [B, E, E] head-averaged attention of the last Multi-Entity Transformer layer, rows = queries, in
            the order of ``model.attention_labels``; None for models without entity-level attention.
    """

    pred: torch.Tensor
    attention: torch.Tensor | None


# --- Input layout --------------------------------------------------------------------------------------------------

_FIELD_SUFFIXES = frozenset(MODALITIES)
_CLIP_SUFFIXES = frozenset({"x", "mask"})


def batch_dims(batch: Mapping[str, Any]) -> Dims:
    """Per-stream shape of every tensor in ``batch`` (the batch axis dropped). Non-tensor values are not inputs."""
    return {k: tuple(int(s) for s in v.shape[1:]) for k, v in batch.items() if isinstance(v, torch.Tensor)}


def check_dims(dims: Mapping[str, tuple[int, ...]]) -> None:
    """Refuse keys that name an entity but no known input (a typo would otherwise be ignored)."""
    for key in dims:
        entity, _, suffix = key.partition("/")
        if entity not in ENTITIES:
            continue
        if entity in CLIP_KINDS:
            allowed = _CLIP_SUFFIXES
        else:
            allowed = _FIELD_SUFFIXES | {"mask"} if entity == "commodity" else _FIELD_SUFFIXES
        if suffix not in allowed:
            raise ValueError(f"dims: unknown input key '{key}' (expected {entity}/{{{','.join(sorted(allowed))}}})")


def field_layout(dims: Mapping[str, tuple[int, ...]], entity: str) -> dict[str, tuple[int, int]]:
    """Modality -> (fields L, feature size) of a field entity; numeric fields have feature size 1.

    A modality whose key is absent or has 0 fields is not an input of this entity.

    Raises:
        ValueError: a shape of the wrong rank, commodity shapes that disagree with ``commodity/mask``, or no fields.
    """
    if entity not in FIELD_ENTITIES:
        raise ValueError(f"entity '{entity}' is not a field entity (expected one of {', '.join(FIELD_ENTITIES)})")
    items = 1 if entity == "commodity" else 0
    if items:
        mask = dims.get("commodity/mask")
        if mask is None or len(mask) != 1:
            raise ValueError(f"dims['commodity/mask']: shape {mask}, expected (M,)")
    out: dict[str, tuple[int, int]] = {}
    for modality in MODALITIES:
        key = f"{entity}/{modality}"
        if key not in dims:
            continue
        shape = dims[key]
        rank = items + (1 if modality == "numeric" else 2)
        expected = ("M, " if items else "") + ("L" if modality == "numeric" else "L, D")
        if len(shape) != rank:
            raise ValueError(f"dims['{key}']: shape {shape}, expected ({expected})")
        if items and shape[0] != dims["commodity/mask"][0]:
            raise ValueError(f"dims['{key}']: {shape[0]} items, expected {dims['commodity/mask'][0]} as commodity/mask")
        n_fields, size = shape[items], (1 if modality == "numeric" else shape[items + 1])
        if n_fields and size < 1:
            raise ValueError(f"dims['{key}']: feature size {size}, expected >= 1")
        if n_fields:
            out[modality] = (n_fields, size)
    if not out:
        raise ValueError(
            f"dims: entity '{entity}' has no input fields (keys {entity}/text, /image, /numeric); leave it out instead"
        )
    return out


def field_keys(entity: str, layout: Mapping[str, tuple[int, int]]) -> list[str]:
    """Batch keys a field entity's encoder reads."""
    return [f"{entity}/{m}" for m in layout] + (["commodity/mask"] if entity == "commodity" else [])


def clip_layout(dims: Mapping[str, tuple[int, ...]], kind: str) -> int:
    """Feature size of a ``kind`` ("video" | "audio") clip, checking ``{kind}/x`` [C, D] and ``{kind}/mask`` [C]."""
    x, mask = dims.get(f"{kind}/x"), dims.get(f"{kind}/mask")
    if x is None or len(x) != 2 or x[1] < 1:
        raise ValueError(f"dims['{kind}/x']: shape {x}, expected (C, D)")
    if mask is None or mask != (x[0],):
        raise ValueError(f"dims['{kind}/mask']: shape {mask}, expected ({x[0]},) as {kind}/x")
    return x[1]


#: Entities whose inputs are sets: the first per-stream axis of their keys is the batch's own item or clip axis.
SET_ENTITIES: frozenset[str] = frozenset({"commodity", *CLIP_KINDS})


def _fits(key: str, shape: tuple[int, ...], want: tuple[int, ...], axes: dict[str, int]) -> bool:
    """``shape`` (per stream) is what ``dims`` says, a set's axis at most ``dims``'s and equal to its set's others."""
    entity = key.partition("/")[0]
    if entity not in SET_ENTITIES or not want:
        return shape == want
    return (len(shape) == len(want) and shape[1:] == want[1:] and shape[0] <= want[0]
            and axes.setdefault(entity, shape[0]) == shape[0])


def check_batch(batch: Mapping[str, torch.Tensor], dims: Mapping[str, tuple[int, ...]], keys: list[str]) -> None:
    """Check that ``batch`` holds ``keys`` with the shapes the model was built for (item and clip axes up to the
    built ones, one per set), one batch size, bool masks."""
    size: int | None = None
    axes: dict[str, int] = {}
    for key in keys:
        if key not in batch:
            raise ValueError(f"batch: missing input '{key}'")
        tensor = batch[key]
        if not _fits(key, tuple(tensor.shape[1:]), tuple(dims[key]), axes):
            set_axis = key.partition("/")[0] in SET_ENTITIES and dims[key]
            per_stream = [f"<={dims[key][0]}", *dims[key][1:]] if set_axis else list(dims[key])
            expected = ", ".join(map(str, ("B", *per_stream)))
            raise ValueError(f"batch['{key}']: shape {tuple(tensor.shape)}, expected ({expected})")
        if size is not None and tensor.shape[0] != size:
            raise ValueError(f"batch['{key}']: batch size {tensor.shape[0]}, expected {size} as the other inputs")
        size = tensor.shape[0]
        if key.endswith("/mask") and tensor.dtype != torch.bool:
            raise ValueError(f"batch['{key}']: dtype {tensor.dtype}, expected torch.bool (True = real)")


# --- Model registry ------------------------------------------------------------------------------------------------

ModelBuilder = Callable[..., nn.Module]
#: name -> builder(dims, **options) -> nn.Module.
MODELS: Registry[ModelBuilder] = Registry("model")


def register_model(name: str, make: Callable[[Mapping[str, tuple[int, ...]], ModelConfig], nn.Module]) -> None:
    """Register ``name``, which must be in the torch-free catalog ``memf.models.options.MODEL_OPTIONS``: its builder
    validates the options the catalog lists for it and calls ``make``.

    The built model gets ``spec`` (name, dims, options as given: JSON-able, enough to rebuild it for loading weights).
    """
    accepted = accepted_options(name)

    def build(dims: Mapping[str, tuple[int, ...]], **opts: Any) -> nn.Module:
        cfg = ModelConfig.from_options(name, opts, accepted)
        dims = {key: tuple(int(s) for s in shape) for key, shape in dims.items()}
        check_dims(dims)
        model = make(dims, cfg)
        model.spec = {"name": name, "dims": {k: list(v) for k, v in dims.items()}, "options": dict(opts)}
        return model

    build.accepted_options = accepted  # type: ignore[attr-defined]
    MODELS.register(name)(build)


def build_model(name: str, dims: Mapping[str, tuple[int, ...]], **options: Any) -> nn.Module:
    """Build registered model ``name`` for inputs of per-stream shapes ``dims`` (see :func:`batch_dims`).

    Raises:
        ValueError: unknown model, unknown or inapplicable option, bad value, or dims that break the batch layout.
    """
    return MODELS.lookup(name)(dims, **options)
