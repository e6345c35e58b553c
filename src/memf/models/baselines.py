"""The paper's five fusion baselines (Table 9), adapted to five modalities and regression.

All five share MEMF's token projections, the modality-first stage 1 (``modality.ModalityEncoders``: one vector per
modality, text, image, numeric, video, audio -> [B, 5, D]) and the DNN predictor; only the fusion of the five modality
vectors differs. Written from the original papers:

- MFB: Z. Yu, J. Yu, J. Fan, D. Tao, "Multi-modal Factorized Bilinear Pooling with Co-Attention Learning for Visual
  Question Answering", ICCV 2017.
- MFH: Z. Yu, J. Yu, C. Xiang, J. Fan, D. Tao, "Beyond Bilinear: Generalized Multimodal Factorized High-Order Pooling
  for Visual Question Answering", IEEE TNNLS 29(12), 2018.
- TFN: A. Zadeh, M. Chen, S. Poria, E. Cambria, L.-P. Morency, "Tensor Fusion Network for Multimodal Sentiment
  Analysis", EMNLP 2017.
- VTFSA: S. Cui, R. Wang, J. Wei, J. Hu, S. Wang, "Self-Attention Based Visual-Tactile Fusion Learning for Predicting
  Grasp Outcomes", IEEE RA-L 5(4), 2020.
- CMMT: L. Yang, J.-C. Na, J. Yu, "Cross-Modal Multitask Transformer for End-to-End Multimodal Aspect-Based Sentiment
  Analysis", Information Processing & Management 59(5), 2022.

docs/models.md lists every adaptation to five modalities and regression.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from memf.models.blocks import FeedForward
from memf.models.common import register_model
from memf.models.modality import ModalityFusionModel
from memf.models.options import ModelConfig

# --- MFB / MFH -----------------------------------------------------------------------------------------------------

_SQRT_EPS = 1e-8


def signed_sqrt(z: torch.Tensor) -> torch.Tensor:
    """Power normalisation sign(z) * sqrt(|z|); the tiny epsilon keeps the gradient finite at 0."""
    return torch.sign(z) * torch.sqrt(z.abs() + _SQRT_EPS)


class MFHPair(nn.Module):
    """Factorized bilinear pooling of two vectors: MFB with ``blocks`` = 1, MFH with ``blocks`` > 1.

    Block i: expanded product e_i = Dropout(U_i x * V_i y * e_{i-1}) [B, k*o] (no e_{i-1} for the first block), sum
    pooled over contiguous groups of k -> [B, o], signed square root, L2 normalisation. Blocks are concatenated
    -> [B, blocks * o]; each block's part has unit L2 norm.
    """

    def __init__(self, dx: int, dy: int, factor: int, out: int, blocks: int, dropout: float) -> None:
        super().__init__()
        self.factor, self.out = factor, out
        self.proj_x = nn.ModuleList(nn.Linear(dx, factor * out) for _ in range(blocks))
        self.proj_y = nn.ModuleList(nn.Linear(dy, factor * out) for _ in range(blocks))
        self.drop = nn.Dropout(dropout)
        self.out_dim = blocks * out

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        pooled = []
        expanded: torch.Tensor | None = None
        for px, py in zip(self.proj_x, self.proj_y):
            e = px(x) * py(y)  # [B, k*o]
            expanded = self.drop(e if expanded is None else e * expanded)
            z = expanded.view(-1, self.out, self.factor).sum(dim=-1)  # [B, o]: group j = positions j*k .. j*k+k-1
            pooled.append(F.normalize(signed_sqrt(z), dim=-1))
        return torch.cat(pooled, dim=-1)


class HierarchicalPairwise(nn.Module):
    """MFB (Yu et al., ICCV 2017) / MFH (Yu et al., IEEE TNNLS 2018) for K modality vectors, as a chain of pairwise
    poolings in modality order: z_1 = P(text, image), z_j = P(z_{j-1}, x_{j+1}) -> z_{K-1} [B, blocks * o].

    Adaptation: the originals fuse two modalities (question, image) for VQA classification; here the chain fuses five,
    and the pooled vector goes to the shared DNN regression predictor.
    """

    def __init__(self, modalities: tuple[str, ...], cfg: ModelConfig, blocks: int) -> None:
        super().__init__()
        if len(modalities) < 2:
            raise ValueError(f"MFB/MFH: {len(modalities)} modalities, expected >= 2")
        self.pairs = nn.ModuleList()
        size = cfg.width
        for _ in modalities[1:]:
            pair = MFHPair(size, cfg.width, cfg.mfb_factor, cfg.mfb_out, blocks, cfg.dropout)
            self.pairs.append(pair)
            size = pair.out_dim
        self.out_dim = size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [B, K, D] -> [B, blocks * o]
        z = x[:, 0]
        for j, pair in enumerate(self.pairs, start=1):
            z = pair(z, x[:, j])
        return z


# --- TFN -----------------------------------------------------------------------------------------------------------


class TensorFusion(nn.Module):
    """TFN (Zadeh et al., EMNLP 2017): each modality vector is reduced by a Linear to d = ``tfn_dim`` values and gets a
    constant 1 appended; the outer product of all K is flattened to prod(d_i + 1) = (d + 1) ** K values (5 modalities,
    d = 8: 59,049), then dropout and Linear -> ReLU -> Dropout to ``tfn_hidden``.

    Adaptation: the original's three modality subnetworks are MEMF's projections and stage-1 encoders plus the Linear
    reduction (kept small so the product stays tractable); its post-fusion layers end in the shared DNN regressor.
    """

    def __init__(self, modalities: tuple[str, ...], cfg: ModelConfig) -> None:
        super().__init__()
        self.reduce = nn.ModuleList(nn.Linear(cfg.width, cfg.tfn_dim) for _ in modalities)
        self.fused_size = math.prod(cfg.tfn_dim + 1 for _ in modalities)
        self.drop = nn.Dropout(cfg.dropout)
        self.mlp = nn.Sequential(nn.Linear(self.fused_size, cfg.tfn_hidden), nn.ReLU(), nn.Dropout(cfg.dropout))
        self.out_dim = cfg.tfn_hidden

    def fuse(self, x: torch.Tensor) -> torch.Tensor:
        """[B, K, D] -> flattened outer product [B, prod(d_i + 1)]."""
        fused: torch.Tensor | None = None
        for i, reduce in enumerate(self.reduce):
            v = reduce(x[:, i])
            v = torch.cat([v, v.new_ones(v.shape[0], 1)], dim=-1)  # [B, d + 1]
            fused = v if fused is None else (fused.unsqueeze(-1) * v.unsqueeze(1)).flatten(1)
        return fused

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.drop(self.fuse(x)))


# --- VTFSA ---------------------------------------------------------------------------------------------------------


class SelfAttentionFusion(nn.Module):
    """VTFSA (Cui et al., IEEE RA-L 2020): SAGAN-style self-attention, query and key with max(1, D // 8) channels,
    value with D; output gamma * attention + input, gamma a learned scalar starting at 0 (identity at initialisation);
    then the mean over tokens -> [B, D].

    Adaptation: the original attends over the grid of visual-tactile pairs of CNN feature-map cells and classifies;
    here the tokens are the five modality vectors (unscaled dot products, as SAGAN) and the head regresses.
    """

    def __init__(self, modalities: tuple[str, ...], cfg: ModelConfig) -> None:
        super().__init__()
        channels = max(1, cfg.width // 8)
        self.query = nn.Linear(cfg.width, channels)
        self.key = nn.Linear(cfg.width, channels)
        self.value = nn.Linear(cfg.width, cfg.width)
        self.gamma = nn.Parameter(torch.zeros(1))
        self.out_dim = cfg.width

    def attend(self, x: torch.Tensor) -> torch.Tensor:
        # x: [B, K, D] -> [B, K, D]
        weights = torch.softmax(self.query(x) @ self.key(x).transpose(1, 2), dim=-1)  # [B, K, K]
        return self.gamma * (weights @ self.value(x)) + x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attend(x).mean(dim=1)


# --- CMMT ----------------------------------------------------------------------------------------------------------


class GatedCrossModalBlock(nn.Module):
    """Query tokens attend to the other modalities; a learned sigmoid gate g = sigmoid(W [q; c] + b) sets how much of
    the cross-modal representation c enters: h = LN(q + g * c); out = LN(h + FFN(h))."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(cfg.width, cfg.heads, dropout=cfg.dropout, batch_first=True)
        self.gate = nn.Linear(2 * cfg.width, cfg.width)
        self.norm1 = nn.LayerNorm(cfg.width)
        self.ffn = FeedForward(cfg.width, cfg.ffn_width, cfg.dropout)
        self.norm2 = nn.LayerNorm(cfg.width)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, q: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
        # q: [B, Q, D]; kv: [B, K', D]
        c, _ = self.attn(q, kv, kv, need_weights=False)  # [B, Q, D]
        g = torch.sigmoid(self.gate(torch.cat([q, c], dim=-1)))
        h = self.norm1(q + self.drop(g * c))
        return self.norm2(h + self.drop(self.ffn(h)))


class CrossModalFusion(nn.Module):
    """CMMT (Yang, Na, Yu, Information Processing & Management 2022): ``layers`` gated cross-modal blocks with the
    text vector as the query and the other four modality vectors as keys and values; the query's output is the fused
    vector [B, D] (one query token, so the final pooling is that token).

    Adaptation: the original queries image regions with text tokens for named-entity tagging, and its gate is the
    probability from an auxiliary entity-span head; without token labels the gate is learned (sigmoid of a Linear of
    the query and cross-modal representations), and the output feeds the shared DNN regressor.
    """

    query_modality = "text"

    def __init__(self, modalities: tuple[str, ...], cfg: ModelConfig) -> None:
        super().__init__()
        if self.query_modality not in modalities or len(modalities) < 2:
            raise ValueError(f"CMMT: modalities {modalities}, expected '{self.query_modality}' and at least one other")
        self.query_index = modalities.index(self.query_modality)
        self.blocks = nn.ModuleList(GatedCrossModalBlock(cfg) for _ in range(cfg.layers))
        self.out_dim = cfg.width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [B, K, D]
        q = x[:, self.query_index : self.query_index + 1]  # [B, 1, D]
        kv = torch.cat([x[:, : self.query_index], x[:, self.query_index + 1 :]], dim=1)  # [B, K-1, D]
        for block in self.blocks:
            q = block(q, kv)
        return q.squeeze(1)


# --- Registered models ---------------------------------------------------------------------------------------------

register_model(
    "mfb", lambda dims, cfg: ModalityFusionModel(dims, cfg, lambda mods, c: HierarchicalPairwise(mods, c, blocks=1))
)
register_model(
    "mfh", lambda dims, cfg: ModalityFusionModel(dims, cfg, lambda mods, c: HierarchicalPairwise(mods, c, c.mfh_blocks))
)
register_model("tfn", lambda dims, cfg: ModalityFusionModel(dims, cfg, TensorFusion))
register_model("vtfsa", lambda dims, cfg: ModalityFusionModel(dims, cfg, SelfAttentionFusion))
register_model("cmmt", lambda dims, cfg: ModalityFusionModel(dims, cfg, CrossModalFusion))
