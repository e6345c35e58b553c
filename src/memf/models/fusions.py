"""Entity-level fusions (paper section 3.3.3 and Table 7): each maps the entity vectors [B, E, D] to one vector [B, D]
and returns ``(fused, attention)`` with attention [B, E, E] or None. Registered in ``ENTITY_FUSIONS`` as
``builder(n_entities, cfg) -> nn.Module``; MEMF picks one with the option ``entity_fusion``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from memf.core.registry import Registry
from memf.models.blocks import Encoder
from memf.models.options import ModelConfig

EntityFusionBuilder = Callable[[int, ModelConfig], nn.Module]
ENTITY_FUSIONS: Registry[EntityFusionBuilder] = Registry("entity fusion")

FusionOut = tuple[torch.Tensor, torch.Tensor | None]


@ENTITY_FUSIONS.register("transformer")
class TransformerFusion(nn.Module):
    """The Multi-Entity Transformer: ``layers`` post-norm blocks over the E entity tokens, mean over entities.

    Returns the last block's attention averaged over heads, [B, E, E] (rows = query entities, each sums to 1 in eval).
    """

    returns_attention = True

    def __init__(self, n_entities: int, cfg: ModelConfig) -> None:
        super().__init__()
        self.encoder = Encoder(cfg)

    def forward(self, x: torch.Tensor) -> FusionOut:
        h, weights = self.encoder(x, need_weights=True)  # [B, E, D], [B, E, E]
        return h.mean(dim=1), weights


@ENTITY_FUSIONS.register("mean")
class MeanFusion(nn.Module):
    """Table 7 "Mean": the average of the entity vectors; no parameters."""

    returns_attention = False

    def __init__(self, n_entities: int, cfg: ModelConfig) -> None:
        super().__init__()

    def forward(self, x: torch.Tensor) -> FusionOut:
        return x.mean(dim=1), None


@ENTITY_FUSIONS.register("fc")
class FCFusion(nn.Module):
    """Table 7 "FC": the concatenated entity vectors [B, E*D] through Linear -> ReLU -> Dropout to [B, D]."""

    returns_attention = False

    def __init__(self, n_entities: int, cfg: ModelConfig) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(n_entities * cfg.width, cfg.width), nn.ReLU(), nn.Dropout(cfg.dropout))

    def forward(self, x: torch.Tensor) -> FusionOut:
        return self.net(x.flatten(1)), None


@ENTITY_FUSIONS.register("lstm")
class LSTMFusion(nn.Module):
    """Table 7 "LSTM": one LSTM layer of width D over the entities in ``contract.ENTITIES`` order; last hidden state."""

    returns_attention = False

    def __init__(self, n_entities: int, cfg: ModelConfig) -> None:
        super().__init__()
        self.lstm = nn.LSTM(cfg.width, cfg.width, batch_first=True)

    def forward(self, x: torch.Tensor) -> FusionOut:
        _, (h, _) = self.lstm(x)  # h: [1, B, D]
        return h[-1], None


@ENTITY_FUSIONS.register("cnn")
class CNNFusion(nn.Module):
    """Table 7 "CNN": 1-D convolutions of kernel sizes 3 and 5 along the entity axis ("same" padding, so any E works),
    ReLU, max over entities, concatenated and projected back to D with Linear -> ReLU -> Dropout."""

    returns_attention = False
    kernel_sizes: tuple[int, ...] = (3, 5)

    def __init__(self, n_entities: int, cfg: ModelConfig) -> None:
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv1d(cfg.width, cfg.width, k, padding="same") for k in self.kernel_sizes)
        self.out = nn.Sequential(
            nn.Linear(len(self.kernel_sizes) * cfg.width, cfg.width), nn.ReLU(), nn.Dropout(cfg.dropout)
        )

    def forward(self, x: torch.Tensor) -> FusionOut:
        c = x.transpose(1, 2)  # [B, D, E]
        pooled = [torch.relu(conv(c)).amax(dim=-1) for conv in self.convs]  # each [B, D]
        return self.out(torch.cat(pooled, dim=-1)), None
