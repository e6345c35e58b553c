"""The extractor interface and its registry, plus what every extractor shares (device, weight hashes, batching).

An extractor is chosen in the config by name: ``extractors: {name: {kind, model, options}}``. The ``kind`` picks a
registered class, which fixes the modality (:data:`memf.features.spec.KINDS`). Classes of the media modalities (image,
video, audio) split their work in two: :meth:`MediaExtractor.prepare` decodes one file into a uint8 or float32 array
(it runs in a forked worker of :func:`memf.core.isolate.isolated_map`, so a crash or hang costs one file), and
:meth:`MediaExtractor.embed` turns a list of prepared arrays into one vector each. Text extractors embed strings; the
numeric "extractor" transforms scalars.
"""

from __future__ import annotations

import hashlib
import importlib
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from memf.features.spec import KINDS, ExtractionSettings, ExtractorSpec


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_folder(folder: Path) -> str:
    """One hash over every file of a model folder (names and contents), independent of listing order."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(f"{path.relative_to(folder).as_posix()}\0{sha256_file(path)}\n".encode())
    return digest.hexdigest()


def hf_weights_id(ref: str, model: torch.nn.Module, revision: str | None) -> str:
    """What identifies transformers weights: the local folder's hash, or the hub revision that was resolved."""
    path = Path(ref)
    if path.is_dir():
        return f"sha256:{sha256_folder(path)}"
    commit = getattr(getattr(model, "config", None), "_commit_hash", None)
    return f"revision:{commit or revision or 'main'}"


def load_hf_model(
    model_cls: Any, spec: ExtractorSpec, revision: str | None, device: torch.device
) -> tuple[torch.nn.Module, str]:
    """Load a transformers model from the spec's hub id or local folder (never remote code), in eval mode on
    ``device``; returns the model and its weights id (:func:`hf_weights_id`)."""
    if not spec.model:
        raise ValueError(f"extractor '{spec.name}': 'model' (hub id or local folder) is required")
    model = model_cls.from_pretrained(spec.model, revision=revision, trust_remote_code=False).eval().to(device)
    return model, hf_weights_id(spec.model, model, revision)


class Extractor(ABC):
    """Base of every extractor. Subclasses set ``kind`` and ``modality`` and are added with :func:`register`."""

    kind: ClassVar[str]
    modality: ClassVar[str]
    #: Option name -> default; options not listed here are refused, so a typo cannot be silently ignored.
    defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, spec: ExtractorSpec, settings: ExtractionSettings, device: torch.device) -> None:
        unknown = sorted(set(spec.options) - set(self.defaults))
        if unknown:
            raise ValueError(f"extractor '{spec.name}' ({self.kind}): unknown options {unknown}, expected {sorted(self.defaults)}")
        self.spec = spec
        self.settings = settings
        self.device = device
        self.options: dict[str, Any] = {**self.defaults, **spec.options}

    @property
    @abstractmethod
    def dim(self) -> int:
        """Length of one output vector."""

    @property
    @abstractmethod
    def weights_id(self) -> str:
        """sha256 of the local weights, the hub revision, or ``random-init``."""

    @property
    def batch_size(self) -> int:
        return int(self.options.get("batch_size") or self.settings.batch_size)

    def autocast(self) -> torch.autocast:
        """bf16 autocast on CUDA when ``extraction.precision`` is bf16; a disabled context otherwise."""
        enabled = self.device.type == "cuda" and self.settings.precision == "bf16"
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=enabled)

    def to_device(self, array: np.ndarray) -> torch.Tensor:
        """A host array on the extractor's device (through pinned memory on CUDA)."""
        tensor = torch.from_numpy(np.ascontiguousarray(array))
        if self.device.type == "cuda":
            return tensor.pin_memory().to(self.device, non_blocking=True)
        return tensor


class MediaExtractor(Extractor):
    """An extractor whose inputs are files, decoded in isolated workers and embedded in batches."""

    @abstractmethod
    def prepare(self, path: str) -> np.ndarray:
        """Decode one file into the model's input array (runs in a forked worker; raises on a bad file)."""

    @abstractmethod
    def embed(self, inputs: list[np.ndarray]) -> np.ndarray:
        """``[B, D]`` float32 vectors for ``B`` prepared inputs."""


_REGISTRY: dict[str, type[Extractor]] = {}


def register(cls: type[Extractor]) -> type[Extractor]:
    """Class decorator adding an extractor kind to the registry; a kind may be registered once, as listed in KINDS."""
    if cls.kind in _REGISTRY:
        raise ValueError(f"extractor kind '{cls.kind}' is already registered by {_REGISTRY[cls.kind].__qualname__}")
    if KINDS.get(cls.kind, (None,))[0] != cls.modality:
        raise ValueError(f"extractor kind '{cls.kind}' ({cls.modality}) is not listed with that modality in memf.features.spec.KINDS")
    _REGISTRY[cls.kind] = cls
    return cls


def extractor_class(kind: str) -> type[Extractor]:
    """The class registered for ``kind``, importing its module on first use."""
    if kind not in KINDS:
        raise ValueError(f"unknown extractor kind '{kind}', expected one of {sorted(KINDS)}")
    if kind not in _REGISTRY:
        importlib.import_module(f"memf.features.{KINDS[kind][1][0]}")
    return _REGISTRY[kind]


def build_extractor(spec: ExtractorSpec, settings: ExtractionSettings, device: torch.device) -> Extractor:
    """Instantiate (and load the model of) a configured extractor."""
    return extractor_class(spec.kind)(spec, settings, device)

