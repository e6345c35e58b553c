"""Fusion models: MEMF, its entity-level variants, the modality-first order and five baselines, in one registry.

    from memf.models import build_model, ModelOutput, MODELS, batch_dims
    model = build_model("memf", batch_dims(batch), **DEMO_OPTIONS)
    out = model(batch)  # out.pred [B], out.attention [B, E, E] or None

See docs/models.md.
"""

# Importing registers the models; this order is the registry order (MEMF and variants, modality-first, baselines).
from memf.models import memf, modality, baselines  # noqa: F401, I001
from memf.models.common import (
    COMMON_OPTIONS,
    DEMO_OPTIONS,
    MODELS,
    PAPER_OPTIONS,
    ModelConfig,
    ModelOutput,
    batch_dims,
    build_model,
)
from memf.models.fusions import ENTITY_FUSIONS
from memf.models.options import MODEL_OPTIONS, accepted_options, model_config

__all__ = [
    "COMMON_OPTIONS",
    "DEMO_OPTIONS",
    "ENTITY_FUSIONS",
    "MODELS",
    "MODEL_OPTIONS",
    "PAPER_OPTIONS",
    "ModelConfig",
    "ModelOutput",
    "batch_dims",
    "accepted_options",
    "build_model",
    "model_config",
]
