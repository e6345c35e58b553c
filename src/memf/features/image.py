"""Images: pooled penultimate features of a torchvision CNN (paper section 4.1: ResNet50).

Preprocessing is the weights' own evaluation preset, ``weights.transforms()`` (torchvision's ``ImageClassification``):
shorter side to ``resize`` with its interpolation and antialiasing, centre crop ``crop``, scale to [0, 1], normalise
with its ``mean`` and ``std``. Weights without a preset (``none``, a file) take the preset of the architecture's
DEFAULT weights (ResNet50: resize 232, ResNet18: 256). Options ``resize``, ``crop``, ``mean``, ``std`` and
``interpolation`` override single values; every value and its source is recorded in the extractor's identity.
Decoding, resizing and cropping run in the worker (Pillow, through the preset's own ``functional.resize`` and
``center_crop``, so a PIL image gets exactly what ``weights.transforms()(image)`` does); the uint8 crop is moved to
the device and scaled and normalised there.

Weights (option ``weights``): a torchvision weight enum name (``IMAGENET1K_V2``), a local state-dict file
(``.safetensors``, or ``.pt``/``.pth`` loaded with ``weights_only=True``), or ``none`` for a seeded random
initialisation, labelled ``random-init`` in every output. The classifier head is replaced by the identity, so the
vector is the global-average-pooled last feature map (ResNet: 512 or 2048; DenseNet121: 1024).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from memf.data.media import read_image
from memf.features.base import MediaExtractor, Preprocessing, register, sha256_file
from memf.features.spec import RANDOM_INIT, TORCHVISION_ARCHITECTURES, ExtractionSettings, ExtractorSpec

PRESET_VALUES: tuple[str, ...] = ("resize", "crop", "mean", "std", "interpolation", "antialias")


def torchvision_preprocessing(arch: str, weights: str, options: Mapping[str, Any]) -> Preprocessing:
    """The preprocessing of ``arch`` with ``weights``: its enum's ``transforms()`` preset (``checkpoint``), or for
    ``none`` and weight files the DEFAULT weights' preset (``default``), each value overridden by an option.

    Only the preset object is built: no weights are downloaded.
    """
    from torchvision.models import get_model_weights

    enum = get_model_weights(arch)
    preset_of, origin = (enum[weights], "checkpoint") if weights in enum.__members__ else (enum.DEFAULT, "default")
    preset = preset_of.transforms()
    read = {
        "resize": int(preset.resize_size[0]),
        "crop": int(preset.crop_size[0]),
        "mean": tuple(float(m) for m in preset.mean),
        "std": tuple(float(s) for s in preset.std),
        "interpolation": preset.interpolation.value,
        "antialias": preset.antialias,
    }
    reference = f"{type(preset_of).__name__}.{preset_of.name}.transforms()"
    return Preprocessing.resolve(read, origin, reference, options, PRESET_VALUES)


def resize_crop(rgb: np.ndarray, pre: Preprocessing) -> np.ndarray:
    """uint8 ``[H, W, 3]`` -> uint8 ``[crop, crop, 3]``: the resize and centre crop of torchvision's preset on a PIL
    image (the first two steps of ``ImageClassification.forward``)."""
    from PIL import Image
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as F

    img = F.resize(Image.fromarray(rgb), [int(pre["resize"])], interpolation=InterpolationMode(pre["interpolation"]),
                   antialias=pre["antialias"])
    return np.asarray(F.center_crop(img, [int(pre["crop"])]), dtype=np.uint8)


def normalise(frames: torch.Tensor, pre: Preprocessing) -> torch.Tensor:
    """uint8 ``[..., 3, H, W]`` -> float ``(x / 255 - mean) / std`` on the tensor's own device (as the preset's
    ``convert_image_dtype`` and ``normalize``)."""
    mean = torch.tensor(pre["mean"], device=frames.device).view(3, 1, 1)
    std = torch.tensor(pre["std"], device=frames.device).view(3, 1, 1)
    return (frames.float() / 255.0 - mean) / std


@register
class TorchvisionImage(MediaExtractor):
    kind: ClassVar[str] = "torchvision"
    modality: ClassVar[str] = "image"

    def __init__(self, spec: ExtractorSpec, settings: ExtractionSettings, device: torch.device) -> None:
        super().__init__(spec, settings, device)
        import torchvision

        arch = spec.model
        if arch not in TORCHVISION_ARCHITECTURES:
            raise ValueError(f"extractor '{spec.name}': model '{arch}', expected one of {TORCHVISION_ARCHITECTURES}")
        weights = str(self.options["weights"])
        if weights == "none":
            torch.manual_seed(int(self.options["seed"]))
            model = torchvision.models.get_model(arch, weights=None)
            self._weights_id = RANDOM_INIT
        elif Path(weights).is_file():
            model = torchvision.models.get_model(arch, weights=None)
            model.load_state_dict(_load_state_dict(Path(weights)))
            self._weights_id = f"sha256:{sha256_file(Path(weights))}"
        else:
            enum = torchvision.models.get_model_weights(arch)
            if weights not in enum.__members__:
                raise ValueError(
                    f"extractor '{spec.name}': weights '{weights}' is neither 'none', a file, nor one of {list(enum.__members__)}"
                )
            model = torchvision.models.get_model(arch, weights=enum[weights])
            self._weights_id = f"torchvision:{enum[weights].url}"
        self.preprocessing = torchvision_preprocessing(arch, weights, self.options)
        self.record_preprocessing(self.preprocessing)
        if arch.startswith("resnet"):
            self._dim = model.fc.in_features
            model.fc = torch.nn.Identity()
        else:
            self._dim = model.classifier.in_features
            model.classifier = torch.nn.Identity()
        self.model = model.eval().to(device, memory_format=torch.channels_last)

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def weights_id(self) -> str:
        return self._weights_id

    def prepare(self, path: str) -> np.ndarray:
        return resize_crop(read_image(path), self.preprocessing)

    def model_inputs(self, inputs: list[np.ndarray]) -> torch.Tensor:
        """Normalised ``[B, 3, crop, crop]`` float input on the device, from prepared uint8 crops."""
        batch = self.to_device(np.stack(inputs)).permute(0, 3, 1, 2)  # [B, 3, H, W] uint8
        return normalise(batch, self.preprocessing)

    @torch.inference_mode()
    def embed(self, inputs: list[np.ndarray]) -> np.ndarray:
        x = self.model_inputs(inputs).contiguous(memory_format=torch.channels_last)
        with self.autocast():
            out = self.model(x)  # [B, D]
        return out.float().cpu().numpy()


def _load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(path)
    return torch.load(path, map_location="cpu", weights_only=True)
