"""Shared helpers of the training, reference and report tests: a tiny synthetic padded feature set (and its store) and
a small model that follows the ``memf.models`` contract (``model(batch) -> output with pred [B] and attention
[B, E, E] or None``)."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from memf.padding.padded import Padded
from memf.padding.store import PaddedStore, write_padded
from memf.training.prepare import FoldData, fold_data

ENTITY_KEYS = {
    "anchor": ("anchor/text", "anchor/image", "anchor/numeric"),
    "commodity": ("commodity/text", "commodity/image", "commodity/numeric"),
    "room": ("room/text", "room/image", "room/numeric"),
    "video": ("video/x",),
    "audio": ("audio/x",),
}


def tiny_padded(n: int = 60, seed: int = 0, noise: float = 0.3, folds: int = 5) -> Padded:
    """``n`` streams in ``folds`` folds (stream i in fold i mod folds: fold 0 tests streams 0, 5, 10, ..., validates
    on 1, 6, 11, ...) whose target is a linear function of the pooled features plus noise."""
    rng = np.random.default_rng(seed)
    m, c = 3, 2
    arrays = {
        "anchor/text": rng.normal(size=(n, 2, 6)), "anchor/image": rng.normal(size=(n, 1, 5)),
        "anchor/numeric": rng.normal(size=(n, 3)),
        "room/text": rng.normal(size=(n, 2, 6)), "room/image": rng.normal(size=(n, 1, 5)),
        "room/numeric": rng.normal(size=(n, 1)),
        "commodity/text": rng.normal(size=(n, m, 2, 6)), "commodity/image": rng.normal(size=(n, m, 1, 5)),
        "commodity/numeric": rng.normal(size=(n, m, 2)),
        "video/x": rng.normal(size=(n, c, 4)), "audio/x": rng.normal(size=(n, c, 4)),
    }
    masks = {
        "commodity/mask": np.arange(m)[None, :] < rng.integers(1, m + 1, size=n)[:, None],
        "video/mask": np.arange(c)[None, :] < rng.integers(1, c + 1, size=n)[:, None],
        "audio/mask": np.arange(c)[None, :] < rng.integers(1, c + 1, size=n)[:, None],
    }
    for key, mask_key in (("commodity/text", "commodity/mask"), ("commodity/image", "commodity/mask"),
                          ("commodity/numeric", "commodity/mask"), ("video/x", "video/mask"), ("audio/x", "audio/mask")):
        shape = masks[mask_key].shape + (1,) * (arrays[key].ndim - 2)
        arrays[key] = arrays[key] * masks[mask_key].reshape(shape)
    signal = (
        arrays["anchor/numeric"][:, 0]
        + 0.8 * arrays["commodity/numeric"][:, 0, 0]
        + 0.5 * arrays["room/text"][:, 0, 0]
        + 0.4 * arrays["video/x"][:, 0, 0]
    )
    target = 5.0 + signal + noise * rng.normal(size=n)
    return Padded(
        stream_id=np.array([f"s{i:04d}" for i in range(n)]),
        fold=(np.arange(n) % folds).astype(np.int8),
        target=target.astype(np.float32),
        folds=folds,
        arrays={k: v.astype(np.float32) for k, v in arrays.items()} | masks,
    )


def tiny_store(padded: Padded, path: Path, dtype: str = "float32") -> PaddedStore:
    """``padded`` written as a padded store at ``path``, opened."""
    write_padded(path, padded, dtype)
    return PaddedStore(path)


def tiny_fold(padded: Padded, path: Path, fold: int = 0, **options) -> FoldData:
    """Fold ``fold`` of ``padded`` written as a store at ``path``."""
    return fold_data(tiny_store(padded, path), fold, **options)


class Output(NamedTuple):
    pred: torch.Tensor  # [B]
    attention: torch.Tensor | None  # [B, E, E]


def _flat_mean(batch: dict[str, torch.Tensor], key: str) -> torch.Tensor:
    x = batch[key]
    if key.startswith("commodity/"):
        mask = batch["commodity/mask"].float()  # [B, M]
        x = x.flatten(2) * mask[:, :, None]
        return x.sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
    if key in ("video/x", "audio/x"):
        mask = batch[key.replace("/x", "/mask")].float()  # [B, C]
        return (x * mask[:, :, None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
    return x.flatten(1)


class TinyModel(nn.Module):
    """Masked-mean pooling per entity, an MLP with dropout, and a softmax 'attention' over the kept entities."""

    def __init__(self, dims: dict[str, tuple[int, ...]], width: int = 16, dropout: float = 0.1,
                 attention: bool = True, drop_entities: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.entities = [e for e in ENTITY_KEYS if e not in drop_entities]
        size = 0
        for entity in self.entities:
            for key in ENTITY_KEYS[entity]:
                shape = dims[key]
                per_object = key.startswith("commodity/") or key in ("video/x", "audio/x")
                size += int(np.prod(shape[1:])) if per_object else int(np.prod(shape))
        self.mlp = nn.Sequential(nn.Linear(size, width), nn.ReLU(), nn.Dropout(dropout), nn.Linear(width, 1))
        self.attend = nn.Linear(size, len(self.entities) ** 2) if attention else None
        self.attention_labels = tuple(self.entities) if attention else None

    def forward(self, batch: dict[str, torch.Tensor]) -> Output:
        x = torch.cat([_flat_mean(batch, k) for e in self.entities for k in ENTITY_KEYS[e]], dim=1)  # [B, F]
        attn = None
        if self.attend is not None:
            e = len(self.entities)
            attn = self.attend(x).view(-1, e, e).softmax(-1)  # [B, E, E]
        return Output(self.mlp(x).squeeze(-1), attn)


def tiny_builder(name: str, dims: dict[str, tuple[int, ...]], **options) -> nn.Module:
    """A ``build_model`` stand-in: ``tiny`` with attention, ``tiny_noattn`` without."""
    if name not in ("tiny", "tiny_noattn"):
        raise ValueError(f"unknown model '{name}'")
    return TinyModel(dims, attention=name == "tiny", **options)
