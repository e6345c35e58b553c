"""Model options and the catalog of model names, importable without torch (the workflow checks them when it loads).

:class:`ModelConfig` holds every hyperparameter of every fusion model; :data:`MODEL_OPTIONS` says which of them each
registered model accepts. The torch registry (:mod:`memf.models.common`) registers exactly these names with exactly
these options (a test checks the two agree), so a config naming an unknown model or a misspelt option fails when the
workflow loads, not hours later in a job.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from memf.data.contract import ENTITIES

#: Entity-level fusions of MEMF (paper Table 7); ``transformer`` is the Multi-Entity Transformer.
ENTITY_FUSION_NAMES: tuple[str, ...] = ("transformer", "mean", "fc", "lstm", "cnn")
#: How a sequence of token vectors becomes one vector (docs/models.md, "Pooling"): the paper's masked mean; the mean
#: plus a learned embedding of log(number of real positions); attention pooling with a learned query.
SET_POOLS: tuple[str, ...] = ("mean", "mean_count", "attention")
#: Field tokens always number the same (every stream has every field), so a count carries nothing there.
FIELD_POOLS: tuple[str, ...] = ("mean", "attention")
#: Normalisation of each modality's input vectors before its projection (the paper: none).
INPUT_NORMS: tuple[str, ...] = ("none", "layernorm")


@dataclass(frozen=True)
class ModelConfig:
    """Hyperparameters of every fusion model. Defaults are the paper's final settings (Table 6) where it gives them.

    Which options a model accepts: every model takes ``COMMON_OPTIONS``; the rest are model-specific
    (:data:`MODEL_OPTIONS`, ``docs/models.md``), and passing one to a model that does not use it raises a ValueError.
    """

    width: int = 512  # D: common embedding width of all tokens (paper: 512, searched over 256/512/768)
    heads: int = 8  # attention heads in every Transformer (paper: 8)
    layers: int = 6  # stacked encoder blocks in every Transformer (paper: 6)
    dropout: float = 0.1  # dropout in attention, feed-forward and predictor (paper: 0.1)
    ffn_mult: int = 4  # feed-forward hidden width = ffn_mult * width (paper silent; the Transformer's usual 4)
    numeric_hidden: int = 64  # hidden width of the shared numeric-field MLP (paper silent)
    predictor_hidden: tuple[int, ...] | None = None  # DNN predictor hidden widths; None = (width, width // 2)
    input_norm: str = "none"  # INPUT_NORMS: per-modality LayerNorm of the input vectors (paper: none)
    entity_fusion: str = "transformer"  # MEMF entity-level fusion, one of ENTITY_FUSION_NAMES (paper Table 7)
    drop_entities: tuple[str, ...] = ()  # MEMF entities left out, a subset of contract.ENTITIES (paper Table 8)
    field_pool: str = "mean"  # FIELD_POOLS: anchor/room field tokens and one commodity's modality tokens (eq 13)
    commodity_pool: str = "mean"  # SET_POOLS: MEMF's commodities -> the commodity entity vector (paper: mean)
    clip_pool: str = "mean"  # SET_POOLS: a stream's video or audio clips -> one vector (paper: mean)
    token_pool: str = "mean"  # SET_POOLS: modality-first models, all tokens of one modality -> one vector
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
        for key, allowed in (("entity_fusion", ENTITY_FUSION_NAMES), ("field_pool", FIELD_POOLS),
                             ("commodity_pool", SET_POOLS), ("clip_pool", SET_POOLS), ("token_pool", SET_POOLS),
                             ("input_norm", INPUT_NORMS)):
            if getattr(self, key) not in allowed:
                raise ValueError(f"model '{model}': option '{key}' is '{getattr(self, key)}', expected one of "
                                 f"{', '.join(allowed)}")
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
    {"width", "heads", "layers", "dropout", "ffn_mult", "numeric_hidden", "predictor_hidden", "input_norm",
     "clip_pool"}
)
_MEMF = frozenset({"drop_entities", "field_pool", "commodity_pool"})
_MODALITY_FIRST = frozenset({"token_pool"})
#: Registered model name -> the options it accepts besides COMMON_OPTIONS (registry order: MEMF and its Table 7
#: variants, the modality-first order, the five baselines).
MODEL_OPTIONS: dict[str, frozenset[str]] = {
    "memf": _MEMF | {"entity_fusion"},
    **{f"memf_{fusion}": _MEMF for fusion in ENTITY_FUSION_NAMES if fusion != "transformer"},
    "memf_modality_first": _MODALITY_FIRST,
    "mfb": _MODALITY_FIRST | {"mfb_factor", "mfb_out"},
    "mfh": _MODALITY_FIRST | {"mfb_factor", "mfb_out", "mfh_blocks"},
    "tfn": _MODALITY_FIRST | {"tfn_dim", "tfn_hidden"},
    "vtfsa": _MODALITY_FIRST,
    "cmmt": _MODALITY_FIRST,
}
#: The paper's final settings (Table 6); too slow for 2 CPU cores.
PAPER_OPTIONS: dict[str, Any] = {"width": 512, "heads": 8, "layers": 6, "dropout": 0.1}
#: Demo settings, NOT the paper's: sized for the demo dataset on 2 CPU cores.
DEMO_OPTIONS: dict[str, Any] = {"width": 64, "heads": 4, "layers": 2, "dropout": 0.1}


def accepted_options(model: str) -> frozenset[str]:
    """Every option ``model`` accepts. Raises ValueError for a name that is not in the catalog."""
    if model not in MODEL_OPTIONS:
        raise ValueError(f"unknown model '{model}' (known: {', '.join(MODEL_OPTIONS)})")
    return COMMON_OPTIONS | MODEL_OPTIONS[model]


def model_config(model: str, options: Mapping[str, Any]) -> ModelConfig:
    """The validated :class:`ModelConfig` of ``model`` with ``options`` (ValueError naming what is wrong)."""
    return ModelConfig.from_options(model, options, accepted_options(model))
