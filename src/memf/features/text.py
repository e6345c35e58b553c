"""Text: one vector per text field from a transformers encoder (BERT family, XLNet; paper section 4.1, Table 10).

The tokenizer and model load with ``AutoTokenizer``/``AutoModel.from_pretrained`` from a hub id or a local folder
(``HF_HUB_OFFLINE=1`` is honoured by transformers; remote code is never trusted). Texts are deduplicated, sorted by
token count and batched, so padding stays short; padding never changes a text's vector because padded tokens are
masked out of attention and out of the pooling.

Pooling (option ``pooling``):
- ``mean`` (default): mean of the last hidden states over the real tokens (attention mask = 1), special tokens included.
- ``cls``: the hidden state of the classification token: the first token for BERT-style models, the last for XLNet,
  whose tokenizer puts ``<cls>`` at the end and pads on the left.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
from tqdm import tqdm

from memf.features.base import Extractor, load_hf_model, register
from memf.features.spec import ExtractionSettings, ExtractorSpec


@register
class TransformersText(Extractor):
    kind: ClassVar[str] = "transformers-text"
    modality: ClassVar[str] = "text"
    defaults: ClassVar[dict[str, Any]] = {"pooling": "mean", "max_length": 128, "batch_size": None, "revision": None}

    def __init__(self, spec: ExtractorSpec, settings: ExtractionSettings, device: torch.device) -> None:
        super().__init__(spec, settings, device)
        from transformers import AutoModel, AutoTokenizer

        if self.options["pooling"] not in ("mean", "cls"):
            raise ValueError(f"extractor '{spec.name}': pooling is '{self.options['pooling']}', expected mean or cls")
        revision = self.options["revision"]
        self.model, self._weights_id = load_hf_model(AutoModel, spec, revision, device)
        self.tokenizer = AutoTokenizer.from_pretrained(spec.model, revision=revision, trust_remote_code=False)
        self._cls_last = self.model.config.model_type == "xlnet"

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size if hasattr(self.model.config, "hidden_size") else self.model.config.d_model)

    @property
    def weights_id(self) -> str:
        return self._weights_id

    def _forward(self, encoded: list[dict[str, list[int]]]) -> np.ndarray:
        enc = self.tokenizer.pad(encoded, padding=True, return_tensors="pt")
        mask = enc["attention_mask"].to(self.device)  # [B, T]
        with self.autocast():
            hidden = self.model(**{k: v.to(self.device) for k, v in enc.items()}).last_hidden_state  # [B, T, D]
        hidden = hidden.float()
        if self.options["pooling"] == "cls":
            pooled = hidden[:, -1] if self._cls_last else hidden[:, 0]  # [B, D]
        else:
            weights = mask.unsqueeze(-1).to(hidden.dtype)  # [B, T, 1]
            pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)  # [B, D]
        return pooled.cpu().numpy().astype(np.float32)

    @torch.inference_mode()
    def embed_texts(self, texts: list[str], desc: str | None = None) -> np.ndarray:
        """``[N, D]`` float32: one vector per text, each distinct text tokenised and embedded once."""
        unique = sorted(set(texts))
        if not unique:
            return np.zeros((0, self.dim), dtype=np.float32)
        tokens = self.tokenizer(unique, truncation=True, max_length=int(self.options["max_length"]))
        encoded = [{k: tokens[k][i] for k in tokens} for i in range(len(unique))]
        order = sorted(range(len(unique)), key=lambda i: (len(encoded[i]["input_ids"]), unique[i]))
        vectors = np.zeros((len(unique), self.dim), dtype=np.float32)
        size = self.batch_size
        for start in tqdm(range(0, len(order), size), desc=desc, disable=desc is None, unit="batch"):
            idx = order[start : start + size]
            vectors[idx] = self._forward([encoded[i] for i in idx])
        position = {text: i for i, text in enumerate(unique)}
        return vectors[[position[t] for t in texts]]
