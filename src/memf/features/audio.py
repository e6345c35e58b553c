"""Audio clips: one wav2vec 2.0 vector per clip (paper section 4.1).

Each clip is decoded in an isolated worker to mono float32 and resampled to ``sample_rate`` (16 kHz, what wav2vec 2.0
was trained on) by :func:`memf.data.media.read_audio`. Long clips are cut into chunks of ``chunk_seconds``; a tail shorter
than ``min_chunk_seconds`` joins the chunk before it. Each chunk is normalised to zero mean and unit variance
(``normalize``, as ``Wav2Vec2FeatureExtractor`` does for wav2vec2-base), its vector is the mean of the last hidden state
over time, and the clip vector is the mean of its chunk vectors weighted by chunk length. Chunks are batched only with
chunks of exactly the same length, so no padding (which group-normalised feature encoders are not invariant to) is
ever added.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, ClassVar

import numpy as np
import torch

from memf.features.base import MediaExtractor, load_hf_model, register
from memf.features.spec import ExtractionSettings, ExtractorSpec
from memf.data.media import MediaError, read_audio


def chunk_bounds(n_samples: int, chunk: int, min_chunk: int) -> list[tuple[int, int]]:
    """``[start, stop)`` of each chunk of a clip of ``n_samples``; a tail under ``min_chunk`` joins the chunk before."""
    bounds = [(start, min(start + chunk, n_samples)) for start in range(0, n_samples, chunk)]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] < min_chunk:
        bounds[-2:] = [(bounds[-2][0], n_samples)]
    return bounds


@register
class Wav2Vec2(MediaExtractor):
    kind: ClassVar[str] = "wav2vec2"
    modality: ClassVar[str] = "audio"
    defaults: ClassVar[dict[str, Any]] = {
        "sample_rate": 16000,
        "chunk_seconds": 10.0,
        "min_chunk_seconds": 1.0,
        "normalize": True,
        "batch_size": None,
        "revision": None,
    }

    def __init__(self, spec: ExtractorSpec, settings: ExtractionSettings, device: torch.device) -> None:
        super().__init__(spec, settings, device)
        from transformers import Wav2Vec2Model

        self.model, self._weights_id = load_hf_model(Wav2Vec2Model, spec, self.options["revision"], device)
        rate = int(self.options["sample_rate"])
        self.chunk = int(round(float(self.options["chunk_seconds"]) * rate))
        self.min_chunk = int(round(float(self.options["min_chunk_seconds"]) * rate))
        # Shortest input giving one output frame: the feature encoder's receptive field.
        self.min_samples = 1
        while int(self.model._get_feat_extract_output_lengths(torch.tensor(self.min_samples))) < 1:
            self.min_samples += 1
        if self.chunk < self.min_samples:
            raise ValueError(f"extractor '{spec.name}': chunk_seconds gives {self.chunk} samples, below the model's {self.min_samples}")

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def weights_id(self) -> str:
        return self._weights_id

    def prepare(self, path: str) -> np.ndarray:
        wave = read_audio(path, sample_rate=int(self.options["sample_rate"]))  # [N] float32
        if wave.size < self.min_samples:
            raise MediaError(f"{path}: audio has {wave.size} samples, the model needs at least {self.min_samples}")
        return wave

    @torch.inference_mode()
    def embed(self, inputs: list[np.ndarray]) -> np.ndarray:
        # (clip, weight) of every chunk, grouped by chunk length so that batches need no padding.
        groups: dict[int, list[tuple[int, np.ndarray]]] = defaultdict(list)
        for clip, wave in enumerate(inputs):
            for start, stop in chunk_bounds(wave.size, self.chunk, self.min_chunk):
                groups[stop - start].append((clip, wave[start:stop]))
        sums = np.zeros((len(inputs), self.dim), dtype=np.float64)
        weights = np.zeros(len(inputs), dtype=np.float64)
        for length in sorted(groups):
            members = groups[length]
            for start in range(0, len(members), self.batch_size):
                part = members[start : start + self.batch_size]
                x = self.to_device(np.stack([w for _, w in part]))  # [B, length] float32
                if self.options["normalize"]:
                    x = (x - x.mean(dim=1, keepdim=True)) / torch.sqrt(x.var(dim=1, keepdim=True, unbiased=False) + 1e-7)
                with self.autocast():
                    hidden = self.model(input_values=x).last_hidden_state  # [B, frames, D]
                vectors = hidden.float().mean(dim=1).cpu().numpy()  # [B, D]
                for (clip, _), vec in zip(part, vectors, strict=True):
                    sums[clip] += vec * length
                    weights[clip] += length
        return (sums / weights[:, None]).astype(np.float32)
