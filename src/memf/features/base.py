"""The extractor interface, its registry, and what every extractor shares (settings, identity, device, weight hashes).

An extractor is chosen in the config by name: ``extractors: {name: {kind, model, options}}``. The ``kind`` picks a
registered class, which fixes the modality. Classes of the media modalities (image, video, audio) split their work in
two: :meth:`MediaExtractor.prepare` decodes one file into a uint8 or float32 array (it runs in a forked worker of
:func:`memf.isolate.isolated_map`, so a crash or hang costs one file), and :meth:`MediaExtractor.embed` turns a list of
prepared arrays into one vector each. Text extractors embed strings; the numeric "extractor" transforms scalars.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

#: Modalities a feature store holds. Field modalities come from ``memf.contract``; video and audio are clip kinds.
FEATURE_MODALITIES: tuple[str, ...] = ("text", "image", "numeric", "video", "audio")
RANDOM_INIT = "random-init"


@dataclass(frozen=True)
class ExtractionSettings:
    """Job-level settings shared by every extractor (config section ``extraction``)."""

    device: str = "auto"  # auto | cpu | cuda
    workers: int = 2  # decoding worker processes per job
    timeout_s: float = 60.0  # longest decode of one file before it is recorded as a failure
    batch_size: int = 16  # inputs per model call unless the extractor's options say otherwise
    precision: str = "bf16"  # autocast dtype on CUDA: bf16 | fp32 (CPU always runs fp32)

    def __post_init__(self) -> None:
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"extraction.device is '{self.device}', expected auto, cpu or cuda")
        if self.precision not in ("bf16", "fp32"):
            raise ValueError(f"extraction.precision is '{self.precision}', expected bf16 or fp32")
        if self.workers < 1 or self.batch_size < 1:
            raise ValueError(f"extraction.workers={self.workers}, batch_size={self.batch_size}: both must be >= 1")

    @classmethod
    def from_config(cls, section: Mapping[str, Any]) -> ExtractionSettings:
        return cls(**{k: section[k] for k in ("device", "workers", "timeout_s", "batch_size", "precision") if k in section})


@dataclass(frozen=True)
class ExtractorSpec:
    """One configured extractor: its name, registered kind, model reference and options."""

    name: str
    kind: str
    model: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def modality(self) -> str:
        return extractor_class(self.kind).modality

    @classmethod
    def from_config(cls, name: str, extractors: Mapping[str, Any]) -> ExtractorSpec:
        if name not in extractors:
            raise ValueError(f"config extractors: no extractor named '{name}' (have {sorted(extractors)})")
        entry = extractors[name]
        return cls(name=name, kind=entry["kind"], model=entry.get("model"), options=dict(entry.get("options") or {}))


def resolve_device(preference: str) -> torch.device:
    """``auto`` -> the first CUDA device if there is one, else the CPU; ``cuda`` without a GPU is an error."""
    if preference == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if preference == "cuda" and not torch.cuda.is_available():
        raise ValueError("extraction.device is 'cuda' but torch sees no CUDA device")
    return torch.device(preference)


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
    """Class decorator adding an extractor kind to the registry; a kind may be registered once."""
    if cls.kind in _REGISTRY:
        raise ValueError(f"extractor kind '{cls.kind}' is already registered by {_REGISTRY[cls.kind].__qualname__}")
    if cls.modality not in FEATURE_MODALITIES:
        raise ValueError(f"extractor kind '{cls.kind}': modality '{cls.modality}', expected one of {FEATURE_MODALITIES}")
    _REGISTRY[cls.kind] = cls
    return cls


def extractor_class(kind: str) -> type[Extractor]:
    if kind not in _REGISTRY:
        raise ValueError(f"unknown extractor kind '{kind}', expected one of {sorted(_REGISTRY)}")
    return _REGISTRY[kind]


def registered_kinds() -> dict[str, str]:
    """Kind -> modality of every registered extractor."""
    return {kind: cls.modality for kind, cls in sorted(_REGISTRY.items())}


def code_version(kind: str) -> str:
    """sha256 (12 hex digits) of the source of the module defining ``kind``: editing the extractor changes it."""
    source = inspect.getsource(inspect.getmodule(extractor_class(kind)))
    return hashlib.sha256(source.encode("utf-8")).hexdigest()[:12]


def identity(spec: ExtractorSpec, settings: ExtractionSettings) -> dict[str, Any]:
    """Everything that determines an extractor's output: name, kind, model, options, code version, precision.

    The workflow puts this (as JSON) into each extraction rule's ``params:``, so a change reruns that extractor only.
    """
    return {
        "name": spec.name,
        "kind": spec.kind,
        "modality": spec.modality,
        "model": spec.model,
        "options": dict(spec.options),
        "precision": settings.precision,
        "code_version": code_version(spec.kind),
    }


def identity_json(spec: ExtractorSpec, settings: ExtractionSettings) -> str:
    return json.dumps(identity(spec, settings), sort_keys=True)


def build_extractor(spec: ExtractorSpec, settings: ExtractionSettings, device: torch.device) -> Extractor:
    """Instantiate (and load the model of) a configured extractor."""
    return extractor_class(spec.kind)(spec, settings, device)

