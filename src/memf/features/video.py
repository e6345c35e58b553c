"""Video clips: one VideoMAE vector per clip (paper section 4.1).

Frames are sampled as the model expects: ``config.num_frames`` frames at the centres of equal segments of the clip
(:func:`memf.data.media.read_video`, decoded once per clip in an isolated worker), each resized on its shorter side to
``config.image_size`` and centre-cropped (as ``VideoMAEImageProcessor`` does), then normalised with the ImageNet mean
and sd on the device. The clip vector is the mean of the last hidden state over all tubelet tokens: the tokens are
never cached (1,568 x 768 floats per clip for VideoMAE-base).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch

from memf.features.base import MediaExtractor, load_hf_model, register
from memf.features.spec import ExtractionSettings, ExtractorSpec
from memf.features.image import normalise, resize_crop
from memf.data.media import read_video


@register
class VideoMAE(MediaExtractor):
    kind: ClassVar[str] = "videomae"
    modality: ClassVar[str] = "video"
    defaults: ClassVar[dict[str, Any]] = {"batch_size": None, "revision": None}

    def __init__(self, spec: ExtractorSpec, settings: ExtractionSettings, device: torch.device) -> None:
        super().__init__(spec, settings, device)
        from transformers import VideoMAEModel

        self.model, self._weights_id = load_hf_model(VideoMAEModel, spec, self.options["revision"], device)
        self.num_frames = int(self.model.config.num_frames)
        self.image_size = int(self.model.config.image_size)

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def weights_id(self) -> str:
        return self._weights_id

    def prepare(self, path: str) -> np.ndarray:
        frames = read_video(path, self.num_frames)  # [T, H, W, 3] uint8
        return np.stack([resize_crop(f, self.image_size, self.image_size) for f in frames])  # [T, S, S, 3]

    @torch.inference_mode()
    def embed(self, inputs: list[np.ndarray]) -> np.ndarray:
        clips = self.to_device(np.stack(inputs)).permute(0, 1, 4, 2, 3)  # [B, T, 3, S, S] uint8
        with self.autocast():
            hidden = self.model(pixel_values=normalise(clips)).last_hidden_state  # [B, tokens, D]
        return hidden.float().mean(dim=1).cpu().numpy()  # [B, D]
