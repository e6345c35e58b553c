"""Audio clips: one wav2vec 2.0 vector per clip (paper section 4.1).

Preprocessing is the checkpoint's ``Wav2Vec2FeatureExtractor`` (its ``preprocessor_config.json``): ``sampling_rate``
and ``do_normalize``, overridden by options ``sample_rate`` and ``normalize`` (a local folder without a processor
config needs both). Each clip is decoded in an isolated worker to mono float32 and resampled to that rate by
:func:`memf.data.media.read_audio`. Long clips are cut into chunks of ``chunk_seconds``; a tail shorter than
``min_chunk_seconds`` joins the chunk before it. With ``do_normalize`` each chunk is normalised to zero mean and unit
variance on the device, as the feature extractor does to each input; its vector is the mean of the last hidden state
over time, and the clip vector is the mean of its chunk vectors weighted by chunk length. Chunks are batched only with
chunks of exactly the same length, so no padding (which group-normalised feature encoders are not invariant to) is
ever added.
"""

from __future__ import annotations

from collections import defaultdict
from typing import ClassVar

import numpy as np
import torch

from memf.data.media import MediaError, read_audio
from memf.features.base import MediaExtractor, Preprocessing, load_hf_model, load_processor_config, register
from memf.features.spec import PROCESSOR_KINDS, ExtractionSettings, ExtractorSpec

AUDIO_VALUES: tuple[str, ...] = ("sample_rate", "normalize")


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

    def __init__(self, spec: ExtractorSpec, settings: ExtractionSettings, device: torch.device) -> None:
        super().__init__(spec, settings, device)
        from transformers import Wav2Vec2FeatureExtractor, Wav2Vec2Model

        revision = self.options["revision"]
        self.model, self._weights_id = load_hf_model(Wav2Vec2Model, spec, revision, device)
        extractor, reference = load_processor_config(Wav2Vec2FeatureExtractor, spec, revision, PROCESSOR_KINDS[self.kind],
                                                     self.options)
        read = None if extractor is None else {"sample_rate": int(extractor.sampling_rate),
                                               "normalize": bool(extractor.do_normalize)}
        self.preprocessing = Preprocessing.resolve(read, "checkpoint", reference, self.options, AUDIO_VALUES)
        self.record_preprocessing(self.preprocessing)
        rate = int(self.preprocessing["sample_rate"])
        self.chunk = int(round(float(self.options["chunk_seconds"]) * rate))
        self.min_chunk = int(round(float(self.options["min_chunk_seconds"]) * rate))
        # Shortest input giving one output frame: the feature encoder's receptive field.
        self.min_samples = 1
        while int(self.model._get_feat_extract_output_lengths(torch.tensor(self.min_samples))) < 1:
            self.min_samples += 1
        if self.chunk < self.min_samples:
            raise ValueError(f"extractor '{spec.name}': chunk_seconds gives {self.chunk} samples, below the model's "
                             f"{self.min_samples}")

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def weights_id(self) -> str:
        return self._weights_id

    def prepare(self, path: str) -> np.ndarray:
        wave = read_audio(path, sample_rate=int(self.preprocessing["sample_rate"]))  # [N] float32
        if wave.size < self.min_samples:
            raise MediaError(f"{path}: audio has {wave.size} samples, the model needs at least {self.min_samples}")
        return wave

    def model_inputs(self, chunks: list[np.ndarray]) -> torch.Tensor:
        """``input_values`` ``[B, length]`` on the device for equal-length chunks: with ``normalize``, each chunk to
        zero mean and unit variance (``Wav2Vec2FeatureExtractor.zero_mean_unit_var_norm``, variance + 1e-7)."""
        x = self.to_device(np.stack(chunks))  # [B, length] float32
        if self.preprocessing["normalize"]:
            x = (x - x.mean(dim=1, keepdim=True)) / torch.sqrt(x.var(dim=1, keepdim=True, unbiased=False) + 1e-7)
        return x

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
                x = self.model_inputs([w for _, w in part])  # [B, length] float32
                with self.autocast():
                    hidden = self.model(input_values=x).last_hidden_state  # [B, frames, D]
                vectors = hidden.float().mean(dim=1).cpu().numpy()  # [B, D]
                for (clip, _), vec in zip(part, vectors, strict=True):
                    sums[clip] += vec * length
                    weights[clip] += length
        return (sums / weights[:, None]).astype(np.float32)
