"""The extractor interface and its registry, plus what every extractor shares (device, weight hashes, batching).

An extractor is chosen in the config by name: ``extractors: {name: {kind, model, options}}``. The ``kind`` picks a
registered class, which fixes the modality (:data:`memf.features.spec.KINDS`). Classes of the media modalities (image,
video, audio) split their work in two: :meth:`MediaExtractor.prepare` decodes one file into a uint8 or float32 array
(it runs in a forked worker of :func:`memf.core.isolate.isolated_map`, so a crash or hang costs one file), and
:meth:`MediaExtractor.embed` turns a list of prepared arrays into one vector each. Text extractors embed strings; the
numeric "extractor" transforms scalars.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from memf.core.registry import Registry
from memf.features.spec import KIND_OPTIONS, KINDS, ExtractionSettings, ExtractorSpec, option_problems


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


def load_processor_config(processor_cls: Any, spec: ExtractorSpec, revision: str | None, stand_ins: Sequence[str],
                          options: Mapping[str, Any]) -> tuple[Any | None, str]:
    """The checkpoint's own processor (``processor_cls.from_pretrained``: ``preprocessor_config.json``) and where it
    was read from; ``(None, reason)`` for a local folder without one whose options give every value in ``stand_ins``.

    A hub id must carry a processor config (every VideoMAE and wav2vec2 checkpoint on the hub does): a failed load
    is raised, never replaced by options, so that a network error cannot silently change the inputs.
    """
    folder = Path(str(spec.model))
    if folder.is_dir() and not (folder / "preprocessor_config.json").is_file():
        missing = [o for o in stand_ins if options.get(o) is None]
        if missing:
            raise ValueError(f"extractor '{spec.name}': {folder} has no preprocessor_config.json, so its preprocessing "
                             f"must come from options {', '.join(stand_ins)} (missing: {', '.join(missing)})")
        return None, f"options (no preprocessor_config.json in {folder})"
    processor = processor_cls.from_pretrained(spec.model, revision=revision)
    where = folder / "preprocessor_config.json" if folder.is_dir() else f"{spec.model}@{revision or 'main'}"
    return processor, f"{type(processor).__name__} from {where}"


@dataclass(frozen=True)
class Preprocessing:
    """How an extractor prepares its inputs: each value and where it came from.

    ``sources[name]`` is ``checkpoint`` (the loaded weights' torchvision preset or the transformers processor config),
    ``default`` (for torchvision weights without a preset, ``weights: none`` or a file: the architecture's DEFAULT
    weights' preset) or ``option`` (given in the config; it overrides the others). ``reference`` names the object
    the checkpoint or default values were read from. :meth:`record` goes into the extractor's identity, so every
    shard, manifest and padded file says how its inputs were made.
    """

    values: Mapping[str, Any]
    sources: Mapping[str, str]
    reference: str

    @classmethod
    def resolve(cls, read: Mapping[str, Any] | None, origin: str, reference: str, options: Mapping[str, Any],
                names: Sequence[str]) -> Preprocessing:
        """Each of ``names`` from the options when given there, else from ``read`` (labelled ``origin``)."""
        values: dict[str, Any] = {}
        sources: dict[str, str] = {}
        for name in names:
            if options.get(name) is not None:
                values[name], sources[name] = options[name], "option"
            else:
                assert read is not None and name in read, f"preprocessing value {name} has no source"
                values[name], sources[name] = read[name], origin
        return cls(values, sources, reference)

    def __getitem__(self, name: str) -> Any:
        return self.values[name]

    def record(self) -> dict[str, Any]:
        """JSON-ready ``{"values", "from", "reference"}`` (tuples become lists)."""
        values = {k: list(v) if isinstance(v, tuple) else v for k, v in self.values.items()}
        return {"values": values, "from": dict(self.sources), "reference": self.reference}


class Extractor(ABC):
    """Base of every extractor. Subclasses set ``kind`` and ``modality`` and are added with :func:`register`."""

    kind: ClassVar[str]
    modality: ClassVar[str]
    #: Option name -> default, set by :func:`register` from :data:`memf.features.spec.KIND_OPTIONS` (the one list the
    #: load-time check also reads); options not listed are refused, so a typo cannot be silently ignored.
    defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, spec: ExtractorSpec, settings: ExtractionSettings, device: torch.device) -> None:
        problems = option_problems(f"extractors.{spec.name}", self.kind, spec.options)
        if problems:
            raise ValueError("\n".join(problems))
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

    def record_preprocessing(self, preprocessing: Preprocessing) -> None:
        """Put the resolved preprocessing into the spec, hence into the identity every shard records."""
        self.spec = dataclasses.replace(self.spec, preprocessing=preprocessing.record())

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


def _import_kind(kind: str) -> None:
    """Import the module that registers extractor ``kind`` (kinds are imported on first use: torchvision, transformers
    and decord load only where an extractor of theirs is built)."""
    if kind not in KINDS:
        raise ValueError(f"unknown extractor kind '{kind}', expected one of {sorted(KINDS)}")
    importlib.import_module(f"memf.features.{KINDS[kind][1]}")


#: Extractor kind -> class; the torch-free catalog :data:`memf.features.spec.KINDS` lists the same kinds (tested).
EXTRACTORS: Registry[type[Extractor]] = Registry("extractor kind", load=_import_kind)


def register(cls: type[Extractor]) -> type[Extractor]:
    """Class decorator adding an extractor kind to :data:`EXTRACTORS`; the kind must be listed in KINDS with the
    class's modality.

    The class's options are :data:`memf.features.spec.KIND_OPTIONS` of its kind; a class that declares its own
    ``defaults`` must declare exactly those, so the load-time check and the class never disagree.
    """
    if KINDS.get(cls.kind, (None,))[0] != cls.modality:
        raise ValueError(f"extractor kind '{cls.kind}' ({cls.modality}) is not listed with that modality in "
                         "memf.features.spec.KINDS")
    declared = cls.__dict__.get("defaults")
    if declared is not None and dict(declared) != KIND_OPTIONS[cls.kind]:
        raise ValueError(f"extractor kind '{cls.kind}': {cls.__qualname__}.defaults {declared} differ from "
                         f"memf.features.spec.KIND_OPTIONS {KIND_OPTIONS[cls.kind]}")
    cls.defaults = KIND_OPTIONS[cls.kind]
    return EXTRACTORS.register(cls.kind)(cls)


def extractor_class(kind: str) -> type[Extractor]:
    """The class registered for ``kind``, importing its module on first use."""
    return EXTRACTORS.lookup(kind)


def build_extractor(spec: ExtractorSpec, settings: ExtractionSettings, device: torch.device) -> Extractor:
    """Instantiate (and load the model of) a configured extractor."""
    return extractor_class(spec.kind)(spec, settings, device)

