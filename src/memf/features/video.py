"""Video clips: one VideoMAE vector per clip (paper section 4.1).

Frames are sampled as the model expects: ``config.num_frames`` frames at the centres of equal segments of the clip
(:func:`memf.data.media.read_video`, decoded once per clip in an isolated worker). Preprocessing is the checkpoint's
``VideoMAEImageProcessor`` (its ``preprocessor_config.json``: ``size``, ``crop_size``, ``resample``,
``rescale_factor``, ``image_mean``, ``image_std`` and the ``do_*`` switches), applied with the processor's own
resize and centre crop on the uint8 frames in the worker and its fused rescale-and-normalise on the device, so the
model sees exactly what ``processor(frames)`` returns. Options ``resize`` (shorter side), ``crop``, ``mean``, ``std``
and ``interpolation`` override single values; a local folder without a processor config needs all five. The clip
vector is the mean of the last hidden state over all tubelet tokens: the tokens are never cached (1,568 x 768 floats
per clip for VideoMAE-base).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import torch

from memf.data.media import read_video
from memf.features.base import MediaExtractor, Preprocessing, load_hf_model, load_processor_config, register
from memf.features.spec import PROCESSOR_KINDS, ExtractionSettings, ExtractorSpec

#: Resolved values: ``resize`` and ``crop`` are the processor's size dicts (None when its ``do_resize`` or
#: ``do_center_crop`` is off), ``rescale_factor``, ``mean`` and ``std`` None when rescaling or normalising is off.
VIDEO_VALUES: tuple[str, ...] = ("resize", "crop", "interpolation", "rescale_factor", "mean", "std")


def processor_values(processor: Any) -> dict[str, Any]:
    """What a ``VideoMAEImageProcessor`` does, in :data:`VIDEO_VALUES` terms."""
    from transformers.image_utils import PILImageResampling

    return {
        "resize": dict(processor.size) if processor.do_resize else None,
        "crop": dict(processor.crop_size) if processor.do_center_crop else None,
        "interpolation": PILImageResampling(processor.resample).name.lower(),
        "rescale_factor": float(processor.rescale_factor) if processor.do_rescale else None,
        "mean": tuple(processor.image_mean) if processor.do_normalize else None,
        "std": tuple(processor.image_std) if processor.do_normalize else None,
    }


def option_values(options: Mapping[str, Any]) -> dict[str, Any]:
    """The extractor's options in the processor's terms (``resize: 36`` is ``{"shortest_edge": 36}``)."""
    resize, crop, mean, std = (options.get(k) for k in ("resize", "crop", "mean", "std"))
    return {
        "resize": {"shortest_edge": int(resize)} if resize is not None else None,
        "crop": {"height": int(crop), "width": int(crop)} if crop is not None else None,
        "interpolation": options.get("interpolation"),
        "mean": tuple(mean) if mean is not None else None,
        "std": tuple(std) if std is not None else None,
    }


def frame_size(pre: Preprocessing) -> tuple[int, int] | None:
    """(height, width) of every prepared frame, or None when it depends on the clip (aspect-keeping resize, no crop)."""
    if pre["crop"] is not None:
        return int(pre["crop"]["height"]), int(pre["crop"]["width"])
    resize = pre["resize"] or {}
    if set(resize) == {"height", "width"}:
        return int(resize["height"]), int(resize["width"])
    return None


@register
class VideoMAE(MediaExtractor):
    kind: ClassVar[str] = "videomae"
    modality: ClassVar[str] = "video"

    def __init__(self, spec: ExtractorSpec, settings: ExtractionSettings, device: torch.device) -> None:
        super().__init__(spec, settings, device)
        from transformers import VideoMAEImageProcessor, VideoMAEModel

        revision = self.options["revision"]
        self.model, self._weights_id = load_hf_model(VideoMAEModel, spec, revision, device)
        self.num_frames = int(self.model.config.num_frames)
        processor, reference = load_processor_config(VideoMAEImageProcessor, spec, revision, PROCESSOR_KINDS[self.kind],
                                                     self.options)
        if processor is None:  # options stand in for the processor config; uint8 is scaled to [0, 1]
            read, origin, processor = {"rescale_factor": 1 / 255}, "default", VideoMAEImageProcessor()
        else:
            read, origin = processor_values(processor), "checkpoint"
        self.preprocessing = Preprocessing.resolve(read, origin, reference, option_values(self.options), VIDEO_VALUES)
        resize = self.preprocessing["resize"]
        if resize is not None and set(resize) not in ({"shortest_edge"}, {"height", "width"}):
            raise ValueError(f"extractor '{spec.name}': processor size {resize} ({reference}), expected shortest_edge "
                             "or height and width")
        if (self.preprocessing["mean"] is None) != (self.preprocessing["std"] is None):
            raise ValueError(f"extractor '{spec.name}': mean and std normalise together, got {self.preprocessing.record()}")
        size, side = frame_size(self.preprocessing), int(self.model.config.image_size)
        if size != (side, side):
            raise ValueError(f"extractor '{spec.name}': preprocessing gives frames of {size or 'varying size'} "
                             f"({self.preprocessing.record()}), the model expects {side} x {side} (config.image_size)")
        self.record_preprocessing(self.preprocessing)
        # The processor's own resize, crop and rescale-and-normalise, called with the resolved values.
        self._processor = processor

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def weights_id(self) -> str:
        return self._weights_id

    def prepare(self, path: str) -> np.ndarray:
        from transformers.image_utils import PILImageResampling, SizeDict

        pre = self.preprocessing
        frames = torch.from_numpy(read_video(path, self.num_frames)).permute(0, 3, 1, 2).contiguous()  # [T, 3, H, W]
        if pre["resize"] is not None:
            frames = self._processor.resize(frames, SizeDict(**pre["resize"]), PILImageResampling[pre["interpolation"].upper()])
        if pre["crop"] is not None:
            frames = self._processor.center_crop(frames, SizeDict(**pre["crop"]))
        return np.ascontiguousarray(frames.numpy())  # [T, 3, S, S] uint8

    def model_inputs(self, inputs: list[np.ndarray]) -> torch.Tensor:
        """``pixel_values`` ``[B, T, 3, S, S]`` float on the device, from prepared uint8 clips."""
        pre = self.preprocessing
        clips = self.to_device(np.stack(inputs))  # [B, T, 3, S, S] uint8
        return self._processor.rescale_and_normalize(
            clips, pre["rescale_factor"] is not None, pre["rescale_factor"], pre["mean"] is not None, pre["mean"], pre["std"]
        ).float()

    @torch.inference_mode()
    def embed(self, inputs: list[np.ndarray]) -> np.ndarray:
        pixel_values = self.model_inputs(inputs)
        with self.autocast():
            hidden = self.model(pixel_values=pixel_values).last_hidden_state  # [B, tokens, D]
        return hidden.float().mean(dim=1).cpu().numpy()  # [B, D]
