"""Modality-first fusion (paper section 4.4.3, Fig. 5) and the frame the five baselines share (Table 9).

Stage 1, by modality: all text tokens of the anchor, the commodities and the room are encoded together by one
Multimodal Transformer (real items only: padded items are ignored keys) and mean-pooled over real tokens; likewise
image and numeric tokens; video and audio clip sequences as in MEMF. That gives one vector per modality, [B, K, D]
with K = 5 (text, image, numeric, video, audio). Stage 2 fuses the K vectors: ``memf_modality_first`` with the same
kind of Transformer as MEMF's Multi-Entity Transformer, the baselines with their own fusion. The token projections
(eqs 1-3) and the DNN predictor are the same modules as MEMF's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import nn

from memf.data.contract import CLIP_KINDS, FIELD_ENTITIES, MODALITIES
from memf.models.blocks import ClipEncoder, Encoder, FieldTokens, Predictor, SetPool
from memf.models.common import (
    ModelOutput,
    check_batch,
    clip_layout,
    field_keys,
    field_layout,
    register_model,
)
from memf.models.options import ModelConfig

# --- Blocks --------------------------------------------------------------------------------------------------------


class ModalityEncoders(nn.Module):
    """Stage 1: one vector per modality across entities -> [B, K, D], in the order of ``modalities``."""

    def __init__(self, dims: Mapping[str, tuple[int, ...]], cfg: ModelConfig) -> None:
        super().__init__()
        layouts = {e: field_layout(dims, e) for e in FIELD_ENTITIES}
        self.tokens = nn.ModuleDict({e: FieldTokens(e, layouts[e], cfg) for e in FIELD_ENTITIES})
        field_modalities = tuple(m for m in MODALITIES if any(m in layouts[e] for e in FIELD_ENTITIES))
        self.encoders = nn.ModuleDict({m: Encoder(cfg) for m in field_modalities})
        self.pools = nn.ModuleDict({m: SetPool(cfg.token_pool, cfg) for m in field_modalities})
        self.clips = nn.ModuleDict({k: ClipEncoder(k, clip_layout(dims, k), cfg) for k in CLIP_KINDS})
        self.modalities: tuple[str, ...] = field_modalities + CLIP_KINDS
        self.input_keys = [key for e in FIELD_ENTITIES for key in field_keys(e, layouts[e])]
        self.input_keys += [f"{k}/{s}" for k in CLIP_KINDS for s in ("x", "mask")]

    def forward(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        tokens = {e: self.tokens[e].by_modality(batch) for e in FIELD_ENTITIES}
        item_valid = batch["commodity/mask"]  # [B, M]
        vectors = []
        for modality, encoder in self.encoders.items():
            seqs, valids = [], []
            for entity in FIELD_ENTITIES:
                if modality not in tokens[entity]:
                    continue
                t = tokens[entity][modality]
                if entity == "commodity":
                    b, m, n_fields, d = t.shape
                    seqs.append(t.reshape(b, m * n_fields, d))  # [B, M*L, D], item-major
                    valids.append(item_valid.repeat_interleave(n_fields, dim=1))  # [B, M*L]
                else:
                    seqs.append(t)  # [B, L, D]
                    valids.append(torch.ones(t.shape[:2], dtype=torch.bool, device=t.device))
            valid = torch.cat(valids, dim=1)
            h, _ = encoder(torch.cat(seqs, dim=1), valid)
            vectors.append(self.pools[modality](h, valid))  # [B, D]
        vectors += [self.clips[k](batch) for k in CLIP_KINDS]
        return torch.stack(vectors, dim=1)  # [B, K, D]


ModalityFusionBuilder = Callable[[tuple[str, ...], ModelConfig], nn.Module]


class ModalityTransformerFusion(nn.Module):
    """Stage 2 of ``memf_modality_first``: post-norm Transformer over the K modality vectors, mean -> [B, D]."""

    def __init__(self, modalities: tuple[str, ...], cfg: ModelConfig) -> None:
        super().__init__()
        self.encoder = Encoder(cfg)
        self.out_dim = cfg.width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, _ = self.encoder(x)  # [B, K, D]
        return h.mean(dim=1)


# --- Model ---------------------------------------------------------------------------------------------------------


class ModalityFusionModel(nn.Module):
    """Stage-1 modality encoders -> a modality fusion [B, K, D] -> [B, F] (``fusion.out_dim`` = F) -> DNN predictor.

    Returns no attention: nothing here is entity-level (``attention_labels`` is None).
    """

    attention_labels = None

    def __init__(self, dims: Mapping[str, tuple[int, ...]], cfg: ModelConfig, fusion: ModalityFusionBuilder) -> None:
        super().__init__()
        self.dims = dict(dims)
        self.modality_encoders = ModalityEncoders(dims, cfg)
        self.input_keys = self.modality_encoders.input_keys
        self.fusion = fusion(self.modality_encoders.modalities, cfg)
        self.predictor = Predictor(self.fusion.out_dim, cfg.predictor_sizes, cfg.dropout)

    def forward(self, batch: Mapping[str, torch.Tensor]) -> ModelOutput:
        check_batch(batch, self.dims, self.input_keys)
        return ModelOutput(pred=self.predictor(self.fusion(self.modality_encoders(batch))), attention=None)


register_model("memf_modality_first", lambda dims, cfg: ModalityFusionModel(dims, cfg, ModalityTransformerFusion))
