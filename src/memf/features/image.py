"""Images: pooled penultimate features of a torchvision CNN (paper section 4.1: ResNet50).

Preprocessing is torchvision's standard evaluation transform: resize the shorter side to ``resize`` (bilinear,
antialiased), centre-crop ``crop`` x ``crop``, scale to [0, 1] and normalise with the ImageNet mean and sd. Decoding,
resizing and cropping run in the worker (Pillow); the uint8 crop is moved to the device and normalised there.

Weights (option ``weights``): a torchvision weight enum name (``IMAGENET1K_V2``), a local state-dict file
(``.safetensors``, or ``.pt``/``.pth`` loaded with ``weights_only=True``), or ``none`` for a seeded random
initialisation, labelled ``random-init`` in every output. The classifier head is replaced by the identity, so the
vector is the global-average-pooled last feature map (ResNet: 512 or 2048; DenseNet121: 1024).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from memf.features.base import MediaExtractor, register, sha256_file
from memf.features.spec import RANDOM_INIT, ExtractionSettings, ExtractorSpec
from memf.data.media import read_image

ARCHITECTURES: tuple[str, ...] = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "densenet121")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def resize_crop(rgb: np.ndarray, resize: int, crop: int) -> np.ndarray:
    """Shorter side to ``resize`` then a centre ``crop`` x ``crop``: uint8 ``[H, W, 3]`` -> uint8 ``[crop, crop, 3]``."""
    from PIL import Image

    img = Image.fromarray(rgb)
    w, h = img.size
    scale = resize / min(w, h)
    img = img.resize((max(crop, round(w * scale)), max(crop, round(h * scale))), Image.Resampling.BILINEAR)
    w, h = img.size
    left, top = (w - crop) // 2, (h - crop) // 2
    return np.asarray(img.crop((left, top, left + crop, top + crop)), dtype=np.uint8)


def normalise(frames: torch.Tensor) -> torch.Tensor:
    """uint8 ``[..., 3, H, W]`` -> float ImageNet-normalised, on the tensor's own device."""
    mean = torch.tensor(IMAGENET_MEAN, device=frames.device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=frames.device).view(3, 1, 1)
    return (frames.float() / 255.0 - mean) / std


@register
class TorchvisionImage(MediaExtractor):
    kind: ClassVar[str] = "torchvision"
    modality: ClassVar[str] = "image"
    defaults: ClassVar[dict[str, Any]] = {"weights": "none", "resize": 256, "crop": 224, "seed": 0, "batch_size": None}

    def __init__(self, spec: ExtractorSpec, settings: ExtractionSettings, device: torch.device) -> None:
        super().__init__(spec, settings, device)
        import torchvision

        arch = spec.model
        if arch not in ARCHITECTURES:
            raise ValueError(f"extractor '{spec.name}': model '{arch}', expected one of {ARCHITECTURES}")
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
        return resize_crop(read_image(path), int(self.options["resize"]), int(self.options["crop"]))

    @torch.inference_mode()
    def embed(self, inputs: list[np.ndarray]) -> np.ndarray:
        batch = self.to_device(np.stack(inputs)).permute(0, 3, 1, 2)  # [B, 3, H, W] uint8
        x = normalise(batch).contiguous(memory_format=torch.channels_last)
        with self.autocast():
            out = self.model(x)  # [B, D]
        return out.float().cpu().numpy()


def _load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(path)
    return torch.load(path, map_location="cpu", weights_only=True)
