"""MEMF: Multi-Entity Multimodal Fusion for live-commerce sales prediction (manuscript DECSUP-D-23-01630, sections
3.3-3.4).

Entity-first fusion: the anchor and the streaming room each fuse their text, numeric and image field tokens with a
Multimodal Transformer (eqs 1-8); the commodities with the Multimodal QuadTransformer (intra-commodity attention,
eqs 10-12, mean over modality tokens, eq 13, masked inter-commodity encoder, eqs 14-18); video and audio fuse their
clip sequences with a masked Multimodal Transformer (eq 9). The five entity vectors are fused by the Multi-Entity
Transformer (or a Table 7 alternative) and a DNN predicts log sales. ``drop_entities`` leaves entities out (Table 8).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

import torch
from torch import nn

from memf.data.contract import CLIP_KINDS, ENTITIES
from memf.models.blocks import ClipEncoder, Encoder, FieldTokens, Predictor, SetPool
from memf.models.common import (
    ModelOutput,
    check_batch,
    clip_layout,
    field_keys,
    field_layout,
    register_model,
)
from memf.models.fusions import ENTITY_FUSIONS
from memf.models.options import ModelConfig

# --- Blocks --------------------------------------------------------------------------------------------------------


class FieldEntityEncoder(nn.Module):
    """Multimodal Transformer of the anchor or the streaming room: field tokens (eqs 1-4), encoder (eqs 5-8), pooled
    over the tokens (all real: every stream has every field; ``cfg.field_pool``, the paper: mean)."""

    def __init__(self, entity: str, layout: Mapping[str, tuple[int, int]], cfg: ModelConfig) -> None:
        super().__init__()
        self.tokens = FieldTokens(entity, layout, cfg)
        self.encoder = Encoder(cfg)
        self.pool = SetPool(cfg.field_pool, cfg)

    def forward(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        h, _ = self.encoder(self.tokens(batch))  # [B, L, D]
        return self.pool(h)  # [B, D]


class IntraCommodityAttention(nn.Module):
    """Eqs 10-12: self-attention among one commodity's modality tokens, residual, LayerNorm; every commodity at once."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(cfg.width, cfg.heads, dropout=cfg.dropout, batch_first=True)
        self.norm = nn.LayerNorm(cfg.width)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [..., L, D], e.g. [B, M, L, D]; each leading index is one commodity
        flat = x.reshape(-1, x.shape[-2], x.shape[-1])  # [B*M, L, D]
        a, _ = self.attn(flat, flat, flat, need_weights=False)
        return self.norm(flat + self.drop(a)).reshape(x.shape)


class QuadTransformer(nn.Module):
    """Multimodal QuadTransformer (section 3.3.2) on [B, M, L, D] commodity tokens -> [B, M, D] commodity vectors."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.intra = IntraCommodityAttention(cfg)
        self.tokens_pool = SetPool(cfg.field_pool, cfg)  # eq 13: the paper's mean over one item's modality tokens
        self.inter = Encoder(cfg)

    def forward(self, tokens: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        # tokens: [B, M, L, D]; valid: [B, M] True = a real item
        b, m, n_tokens, d = tokens.shape
        fused = self.intra(tokens).reshape(b * m, n_tokens, d)  # eqs 10-12, one row per item
        items = self.tokens_pool(fused).reshape(b, m, d)  # eq 13: [B, M, D]
        h, _ = self.inter(items, valid)  # eqs 14-18, padded items are ignored keys
        return h


class CommodityEncoder(nn.Module):
    """Commodity entity: field tokens per item, QuadTransformer, pooled over the real items (``cfg.commodity_pool``,
    the paper: mean) -> [B, D]."""

    def __init__(self, layout: Mapping[str, tuple[int, int]], cfg: ModelConfig) -> None:
        super().__init__()
        self.tokens = FieldTokens("commodity", layout, cfg)
        self.quad = QuadTransformer(cfg)
        self.pool = SetPool(cfg.commodity_pool, cfg)

    def forward(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        valid = batch["commodity/mask"]  # [B, M]
        return self.pool(self.quad(self.tokens(batch), valid), valid)


# --- Model ---------------------------------------------------------------------------------------------------------


class MEMF(nn.Module):
    """Entity encoders -> entity-level fusion [B, E, D] -> [B, D] -> DNN predictor [B].

    Entities left out by ``cfg.drop_entities`` get no encoder (no parameters) and E shrinks; the entity order is
    ``contract.ENTITIES`` and is ``attention_labels`` when the fusion returns attention.
    """

    def __init__(self, dims: Mapping[str, tuple[int, ...]], cfg: ModelConfig) -> None:
        super().__init__()
        self.dims = dict(dims)
        self.entities = tuple(e for e in ENTITIES if e not in cfg.drop_entities)
        self.encoders = nn.ModuleDict()
        self.input_keys: list[str] = []
        for entity in self.entities:
            if entity in CLIP_KINDS:
                self.encoders[entity] = ClipEncoder(entity, clip_layout(dims, entity), cfg)
                self.input_keys += [f"{entity}/x", f"{entity}/mask"]
                continue
            layout = field_layout(dims, entity)
            self.encoders[entity] = (
                CommodityEncoder(layout, cfg) if entity == "commodity" else FieldEntityEncoder(entity, layout, cfg)
            )
            self.input_keys += field_keys(entity, layout)
        self.fusion = ENTITY_FUSIONS.lookup(cfg.entity_fusion)(len(self.entities), cfg)
        self.predictor = Predictor(cfg.width, cfg.predictor_sizes, cfg.dropout)
        self.attention_labels = self.entities if self.fusion.returns_attention else None

    def forward(self, batch: Mapping[str, torch.Tensor]) -> ModelOutput:
        check_batch(batch, self.dims, self.input_keys)
        x = torch.stack([self.encoders[e](batch) for e in self.entities], dim=1)  # [B, E, D]
        fused, attention = self.fusion(x)  # [B, D], [B, E, E] | None
        return ModelOutput(pred=self.predictor(fused), attention=attention)


register_model("memf", MEMF)


def _fixed_fusion(fusion: str) -> Callable[[Mapping[str, tuple[int, ...]], ModelConfig], MEMF]:
    def make(dims: Mapping[str, tuple[int, ...]], cfg: ModelConfig) -> MEMF:
        return MEMF(dims, dataclasses.replace(cfg, entity_fusion=fusion))

    return make


# Table 7's entity-level variants under their own names (the same as memf with entity_fusion=...).
for _fusion in (name for name in ENTITY_FUSIONS if name != "transformer"):
    register_model(f"memf_{_fusion}", _fixed_fusion(_fusion))
