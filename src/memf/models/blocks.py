"""Building blocks shared by the fusion models: token projections (paper eqs 1-4), the post-norm Transformer encoder
(eqs 5-9), set pooling, the clip-sequence encoder and the DNN predictor (section 3.4).

Masking (eq 9): the paper multiplies the attention scores by the mask; here padded positions are excluded from the
softmax instead (``key_padding_mask`` of ``nn.MultiheadAttention``, i.e. an additive -inf): they get weight exactly 0.

Pooling (:class:`SetPool`): the paper averages (eq 13 and the masked means after each encoder). A mean cannot tell
two items from eight of the same kind, so two alternatives are options the tuning searches (docs/models.md):
``mean_count`` adds a learned embedding of log(number of real positions) to the mean, ``attention`` weighs the
positions by a learned query.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from memf.models.options import ModelConfig

# Stacking order of one entity's tokens (eq 4: F = [F_t, F_n, F_i]).
TOKEN_ORDER: tuple[str, ...] = ("text", "numeric", "image")


def key_padding(valid: torch.Tensor) -> torch.Tensor:
    """[B, T] bool (True = real) -> ``key_padding_mask`` (True = ignored key).

    A row with no real position (cannot happen after validation) attends to all positions rather than to none, so the
    softmax never sees only -inf and returns no NaN; :func:`masked_mean` then gives that row a zero vector.
    """
    return ~valid & valid.any(dim=-1, keepdim=True)


def masked_mean(x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean of x [B, T, D] over the real positions of valid [B, T] -> [B, D]; padded positions never leak in."""
    w = valid.unsqueeze(-1)
    total = x.masked_fill(~w, 0.0).sum(dim=1)
    return total / w.sum(dim=1).clamp(min=1).to(x.dtype)


class SetPool(nn.Module):
    """x [B, T, D] with valid [B, T] (None = all real) -> [B, D]: ``mean``, ``mean_count`` or ``attention``."""

    def __init__(self, kind: str, cfg: ModelConfig) -> None:
        super().__init__()
        self.kind = kind
        if kind == "mean_count":
            self.count = nn.Linear(1, cfg.width)  # log(n) -> an offset added to the mean
        elif kind == "attention":
            self.query = nn.Parameter(torch.zeros(1, 1, cfg.width))  # zero query: a plain mean at initialisation
            self.attn = nn.MultiheadAttention(cfg.width, cfg.heads, dropout=cfg.dropout, batch_first=True)
        elif kind != "mean":
            raise ValueError(f"pooling '{kind}', expected mean, mean_count or attention")

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        if valid is None:
            valid = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
        if self.kind == "attention":
            q = self.query.expand(x.shape[0], 1, -1)  # [B, 1, D]
            out, _ = self.attn(q, x, x, key_padding_mask=key_padding(valid), need_weights=False)
            return out.squeeze(1) * valid.any(dim=1, keepdim=True).to(x.dtype)  # a row without real positions -> 0
        pooled = masked_mean(x, valid)  # [B, D]
        if self.kind == "mean_count":
            n = valid.sum(dim=1, keepdim=True).to(x.dtype)  # [B, 1]
            pooled = pooled + self.count(torch.log1p(n))
        return pooled


class FeedForward(nn.Module):
    """Eq 7: ReLU(Z W1 + b1) W2 + b2, dropout after the activation."""

    def __init__(self, width: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(width, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class EncoderBlock(nn.Module):
    """Post-norm Transformer encoder block (eqs 5-8): M = LN(F + MHA(F)); Out = LN(M + FFN(M))."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(cfg.width, cfg.heads, dropout=cfg.dropout, batch_first=True)
        self.norm1 = nn.LayerNorm(cfg.width)
        self.ffn = FeedForward(cfg.width, cfg.ffn_width, cfg.dropout)
        self.norm2 = nn.LayerNorm(cfg.width)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(
        self, x: torch.Tensor, pad: torch.Tensor | None = None, need_weights: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        # x: [B, T, D]; pad: [B, T] True = ignored key; weights: [B, T, T] averaged over heads
        a, weights = self.attn(x, x, x, key_padding_mask=pad, need_weights=need_weights, average_attn_weights=True)
        x = self.norm1(x + self.drop(a))
        x = self.norm2(x + self.drop(self.ffn(x)))
        return x, weights


class Encoder(nn.Module):
    """``cfg.layers`` stacked :class:`EncoderBlock`s (the paper's Multimodal Transformer: 6 blocks x 8 heads)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(EncoderBlock(cfg) for _ in range(cfg.layers))

    def forward(
        self, x: torch.Tensor, valid: torch.Tensor | None = None, need_weights: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x [B, T, D], valid [B, T] (True = real; None = all real) -> ([B, T, D], last block's weights [B, T, T])."""
        pad = None if valid is None else key_padding(valid)
        weights = None
        for i, block in enumerate(self.blocks):
            x, weights = block(x, pad, need_weights=need_weights and i == len(self.blocks) - 1)
        return x, weights


class NumericTokens(nn.Module):
    """One token per numeric field: a small MLP shared by the fields, made field-specific by a learned per-field
    embedding added before its non-linearity: token_j = W2 ReLU(w1 x_j + e_j) + b2. (Eq 2's X_n with Dn = 1.)"""

    def __init__(self, n_fields: int, hidden: int, width: int) -> None:
        super().__init__()
        self.inp = nn.Linear(1, hidden)
        self.field = nn.Parameter(torch.empty(n_fields, hidden))
        nn.init.normal_(self.field, std=1.0)
        self.out = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [..., L] -> [..., L, D]
        return self.out(torch.relu(self.inp(x.unsqueeze(-1)) + self.field))


def projection(size: int, cfg: ModelConfig) -> nn.Module:
    """Eqs 1 and 3: a vector of ``size`` -> width D, after a LayerNorm of the input when ``cfg.input_norm`` says so.

    The LayerNorm makes the token independent of the feature's scale (a ResNet-50 vector has a norm near 430, a tiny
    BERT's near 4), which the paper's bare Linear is not.
    """
    linear = nn.Linear(size, cfg.width)
    return nn.Sequential(nn.LayerNorm(size), linear) if cfg.input_norm == "layernorm" else linear


class FieldTokens(nn.Module):
    """Eqs 1-4 for one field entity: a linear projection per modality to width D, one token per field, stacked.

    Numeric fields are scalars standardised per fold before training, so ``input_norm`` leaves them alone.
    """

    def __init__(self, entity: str, layout: Mapping[str, tuple[int, int]], cfg: ModelConfig) -> None:
        super().__init__()
        self.entity = entity
        self.proj = nn.ModuleDict()
        for modality in TOKEN_ORDER:
            if modality not in layout:
                continue
            n_fields, size = layout[modality]
            self.proj[modality] = (
                NumericTokens(n_fields, cfg.numeric_hidden, cfg.width) if modality == "numeric"
                else projection(size, cfg)
            )

    def by_modality(self, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Modality -> tokens [B, L_m, D] (anchor, room) or [B, M, L_m, D] (commodity)."""
        return {m: proj(batch[f"{self.entity}/{m}"]) for m, proj in self.proj.items()}

    def forward(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        # -> [B, (M,) Lt + Ln + Li, D]
        return torch.cat(list(self.by_modality(batch).values()), dim=-2)


class ClipEncoder(nn.Module):
    """Video or audio: project each clip vector to D, encode the clip sequence with key padding (eq 9), pool the real
    clips (``cfg.clip_pool``; the paper: mean)."""

    def __init__(self, kind: str, size: int, cfg: ModelConfig) -> None:
        super().__init__()
        self.kind = kind
        self.proj = projection(size, cfg)
        self.encoder = Encoder(cfg)
        self.pool = SetPool(cfg.clip_pool, cfg)

    def forward(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        valid = batch[f"{self.kind}/mask"]  # [B, C]
        h, _ = self.encoder(self.proj(batch[f"{self.kind}/x"]), valid)  # [B, C, D]
        return self.pool(h, valid)  # [B, D]


class Predictor(nn.Module):
    """Section 3.4's DNN predictor: (Linear, ReLU, Dropout) per hidden size, then Linear -> one scalar per stream."""

    def __init__(self, in_dim: int, hidden: tuple[int, ...], dropout: float) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for size in hidden:
            layers += [nn.Linear(in_dim, size), nn.ReLU(), nn.Dropout(dropout)]
            in_dim = size
        layers.append(nn.Linear(in_dim, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)  # [B, in] -> [B]
