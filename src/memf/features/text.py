"""Text: one vector per text field from a transformers encoder (BERT family, XLNet; paper section 4.1, Table 10).

The tokenizer and model load with ``AutoTokenizer``/``AutoModel.from_pretrained`` from a hub id or a local folder
(``HF_HUB_OFFLINE=1`` is honoured by transformers; remote code is never trusted). Texts are deduplicated, sorted by
length and batched (so padding stays short); each batch is tokenised by the fast tokenizer's Rust backend in a
background thread while the model runs on the one before. Padding never changes a text's vector because padded
tokens are masked out of attention and out of the pooling.

Pooling (option ``pooling``):
- ``mean`` (default): mean of the last hidden states over the real tokens (attention mask = 1), special tokens included.
- ``cls``: the hidden state of the classification token: the first token for BERT-style models, the last for XLNet,
  whose tokenizer puts ``<cls>`` at the end and pads on the left.

A text longer than ``max_chars`` characters (the job's ``limits.max_text_chars``) is cut to that before it is
tokenised, so that one giant field costs no more than the bound: the tokenizer would otherwise encode it whole before
truncating to ``max_length`` tokens.
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar

import numpy as np
import torch
from tokenizers import Tokenizer
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
        if not self.tokenizer.is_fast:
            raise ValueError(f"extractor '{spec.name}': the tokenizer of {spec.model} is not a fast (Rust) tokenizer; "
                             "memf needs its tokenizer.json")
        # The Rust tokenizer itself, truncating like tokenizer(..., truncation=True, max_length=...): the texts are
        # tokenised once, in one call, and padded per batch (transformers' per-text Python conversion is skipped).
        self._backend = Tokenizer.from_str(self.tokenizer.backend_tokenizer.to_str())
        self._backend.no_padding()
        self._backend.enable_truncation(int(self.options["max_length"]), direction=self.tokenizer.truncation_side)
        self._cls_last = self.model.config.model_type == "xlnet"

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size if hasattr(self.model.config, "hidden_size") else self.model.config.d_model)

    @property
    def weights_id(self) -> str:
        return self._weights_id

    def encode(self, texts: list[str]) -> list[Any]:
        """``tokenizers.Encoding`` of each text, truncated to ``max_length``, not padded (Rust backend, one call)."""
        return self._backend.encode_batch(texts)

    def collate(self, encodings: list[Any]) -> dict[str, torch.Tensor]:
        """Pad one batch of encodings to its longest, on the tokenizer's side: the tensors ``[B, T]`` that
        ``tokenizer(texts, padding=True, truncation=True, max_length=...)`` returns (tested)."""
        tok = self.tokenizer
        width = max(len(e.ids) for e in encodings)
        pad = {"direction": tok.padding_side, "pad_id": tok.pad_token_id, "pad_type_id": tok.pad_token_type_id,
               "pad_token": tok.pad_token}
        for e in encodings:
            e.pad(width, **pad)
        fields = {"input_ids": "ids", "attention_mask": "attention_mask", "token_type_ids": "type_ids"}
        return {name: torch.tensor([getattr(e, fields[name]) for e in encodings]) for name in tok.model_input_names}

    def forward(self, enc: dict[str, torch.Tensor]) -> np.ndarray:
        """Pooled ``[B, D]`` float32 vectors of one encoded batch."""
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
    def embed_texts(self, texts: list[str], desc: str | None = None, max_chars: int | None = None) -> np.ndarray:
        """``[N, D]`` float32: one vector per text, each distinct text (its first ``max_chars`` characters, if set)
        tokenised and embedded once."""
        if max_chars is not None:
            texts = [t[:max_chars] for t in texts]
        unique = sorted(set(texts))
        if not unique:
            return np.zeros((0, self.dim), dtype=np.float32)
        # Batches of similar length (characters, a proxy known before tokenising), each tokenised in a background
        # thread while the model runs on the one before (the Rust tokenizer releases the GIL).
        order = sorted(range(len(unique)), key=lambda i: (len(unique[i]), unique[i]))
        batches = [order[start : start + self.batch_size] for start in range(0, len(order), self.batch_size)]
        vectors = np.zeros((len(unique), self.dim), dtype=np.float32)

        def tokenise(idx: list[int]) -> dict[str, torch.Tensor]:
            return self.collate(self.encode([unique[i] for i in idx]))

        with ThreadPoolExecutor(max_workers=1) as pool:
            ahead = deque(pool.submit(tokenise, idx) for idx in batches[:2])
            for k, idx in enumerate(tqdm(batches, desc=desc, disable=desc is None, unit="batch")):
                enc = ahead.popleft().result()
                if k + 2 < len(batches):
                    ahead.append(pool.submit(tokenise, batches[k + 2]))
                vectors[idx] = self.forward(enc)
        position = {text: i for i, text in enumerate(unique)}
        return vectors[[position[t] for t in texts]]
