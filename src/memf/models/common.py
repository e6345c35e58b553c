"""Shared parts of the fusion models: output type, options, input layout checks and the registries.

Every model is built by :func:`build_model` from the per-stream shapes of a padded batch (:func:`batch_dims`) and plain
JSON-able options, and is called as ``model(batch) -> ModelOutput``. The batch layout is ``docs/architecture.md``'s
padded tensor file: ``"{entity}/{modality}"`` field tensors, ``"commodity/mask"`` and ``"{video,audio}/{x,mask}"``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import torch
from torch import nn

from memf.data.contract import CLIP_KINDS, ENTITIES, FIELD_ENTITIES, MODALITIES

Dims = dict[str, tuple[int, ...]]
T = TypeVar("T")


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


class Registry(Mapping[str, T], Generic[T]):
    """Name -> object. Registering a name twice raises; looking up an unknown name raises a ValueError naming it."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def add(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} '{name}' is already registered")
            self._items[name] = obj
            return obj

        return add

    def lookup(self, name: str) -> T:
        if name not in self._items:
            raise ValueError(f"unknown {self.kind} '{name}' (known: {', '.join(sorted(self._items))})")
        return self._items[name]

    def __getitem__(self, name: str) -> T:
        return self._items[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)


# --- Options -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelConfig:
    """Hyperparameters of every fusion model. Defaults are the paper's final settings (Table 6) where it gives them.

    Which options a model accepts: every model takes ``COMMON_OPTIONS``; the rest are model-specific (see
    ``docs/models.md``), and passing one to a model that does not use it raises a ValueError.
    """

    width: int = 512  # D: common embedding width of all tokens (paper: 512, searched over 256/512/768)
    heads: int = 8  # attention heads in every Transformer (paper: 8)
    layers: int = 6  # stacked encoder blocks in every Transformer (paper: 6)
    dropout: float = 0.1  # dropout in attention, feed-forward and predictor (paper: 0.1)
    ffn_mult: int = 4  # feed-forward hidden width = ffn_mult * width (paper silent; the Transformer's usual 4)
    numeric_hidden: int = 64  # hidden width of the shared numeric-field MLP (paper silent)
    predictor_hidden: tuple[int, ...] | None = None  # DNN predictor hidden widths; None = (width, width // 2)
    entity_fusion: str = "transformer"  # MEMF entity-level fusion, a key of fusions.ENTITY_FUSIONS (paper Table 7)
    drop_entities: tuple[str, ...] = ()  # MEMF entities left out, a subset of contract.ENTITIES (paper Table 8)
    mfb_factor: int = 5  # MFB/MFH factor k: sum-pooling group size (original: 5)
    mfb_out: int = 256  # MFB/MFH output size o per block (original: 1000; smaller here to fit the data size)
    mfh_blocks: int = 2  # MFH: stacked MFB blocks (original: 2)
    tfn_dim: int = 8  # TFN: per-modality vector size before appending 1; fused size = (tfn_dim + 1) ** 5
    tfn_hidden: int = 128  # TFN: width of the MLP layer after the outer product

    @property
    def predictor_sizes(self) -> tuple[int, ...]:
        return self.predictor_hidden if self.predictor_hidden is not None else (self.width, self.width // 2)

    @property
    def ffn_width(self) -> int:
        return self.ffn_mult * self.width

    @classmethod
    def from_options(cls, model: str, options: Mapping[str, Any], accepted: frozenset[str]) -> ModelConfig:
        """Validate ``options`` for ``model`` and build the config.

        Raises:
            ValueError: an unknown option, an option ``model`` does not use, or a bad value; the message names it.
        """
        known = {f.name for f in dataclasses.fields(cls)}
        values: dict[str, Any] = {}
        listed = ", ".join(sorted(accepted))
        for key, value in options.items():
            if key not in known:
                raise ValueError(f"model '{model}': unknown option '{key}' (accepted: {listed})")
            if key not in accepted:
                raise ValueError(f"model '{model}': option '{key}' does not apply to this model (accepted: {listed})")
            values[key] = _coerce(model, key, value)
        cfg = cls(**values)
        cfg._check(model)
        return cfg

    def _check(self, model: str) -> None:
        for key in ("width", "heads", "layers", "ffn_mult", "numeric_hidden", "mfb_factor", "mfb_out", "mfh_blocks",
                    "tfn_dim", "tfn_hidden"):
            if getattr(self, key) < 1:
                raise ValueError(f"model '{model}': option '{key}' is {getattr(self, key)}, expected >= 1")
        if self.width % self.heads:
            raise ValueError(f"model '{model}': width {self.width} is not divisible by heads {self.heads}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"model '{model}': option 'dropout' is {self.dropout}, expected 0 <= dropout < 1")
        if any(h < 1 for h in self.predictor_sizes):
            raise ValueError(
                f"model '{model}': option 'predictor_hidden' is {self.predictor_hidden}, expected sizes >= 1"
            )
        unknown = [e for e in self.drop_entities if e not in ENTITIES]
        if unknown or len(set(self.drop_entities)) != len(self.drop_entities):
            raise ValueError(
                f"model '{model}': option 'drop_entities' is {list(self.drop_entities)}, expected distinct names from "
                f"{', '.join(ENTITIES)}"
            )
        if len(self.drop_entities) == len(ENTITIES):
            raise ValueError(f"model '{model}': option 'drop_entities' leaves no entity")


_TUPLE_OPTIONS = {"predictor_hidden": int, "drop_entities": str}


def _coerce(model: str, key: str, value: Any) -> Any:
    """Check one option's JSON type; lists become tuples."""
    default = {f.name: f.default for f in dataclasses.fields(ModelConfig)}[key]
    if key in _TUPLE_OPTIONS:
        if key == "predictor_hidden" and value is None:
            return None
        item = _TUPLE_OPTIONS[key]
        if not isinstance(value, (list, tuple)) or any(isinstance(v, bool) or not isinstance(v, item) for v in value):
            raise ValueError(f"model '{model}': option '{key}' is {value!r}, expected a list of {item.__name__}")
        return tuple(value)
    if isinstance(value, bool):
        raise ValueError(f"model '{model}': option '{key}' is {value!r}, expected {type(default).__name__}")
    if isinstance(default, float):
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"model '{model}': option '{key}' is {value!r}, expected a number")
        return float(value)
    if not isinstance(value, type(default)):
        raise ValueError(f"model '{model}': option '{key}' is {value!r}, expected {type(default).__name__}")
    return value


#: Options every model accepts.
COMMON_OPTIONS: frozenset[str] = frozenset(
    {"width", "heads", "layers", "dropout", "ffn_mult", "numeric_hidden", "predictor_hidden"}
)
#: The paper's final settings (Table 6); too slow for 2 CPU cores.
PAPER_OPTIONS: dict[str, Any] = {"width": 512, "heads": 8, "layers": 6, "dropout": 0.1}
#: Demo settings, NOT the paper's: sized for the demo dataset on 2 CPU cores.
DEMO_OPTIONS: dict[str, Any] = {"width": 64, "heads": 4, "layers": 2, "dropout": 0.1}


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


def check_batch(batch: Mapping[str, torch.Tensor], dims: Mapping[str, tuple[int, ...]], keys: list[str]) -> None:
    """Check that ``batch`` holds ``keys`` with the shapes the model was built for, one batch size, bool masks."""
    size: int | None = None
    for key in keys:
        if key not in batch:
            raise ValueError(f"batch: missing input '{key}'")
        tensor = batch[key]
        if tuple(tensor.shape[1:]) != tuple(dims[key]):
            expected = ", ".join(map(str, ("B", *dims[key])))
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


def register_model(
    name: str, options: frozenset[str], make: Callable[[Mapping[str, tuple[int, ...]], ModelConfig], nn.Module]
) -> None:
    """Register ``name``: its builder validates options (COMMON_OPTIONS plus ``options``) and calls ``make``.

    The built model gets ``spec`` (name, dims, options as given: JSON-able, enough to rebuild it for loading weights).
    """
    accepted = COMMON_OPTIONS | options

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
