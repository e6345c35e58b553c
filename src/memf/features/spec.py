"""Extractor configuration and identity, importable without torch (the workflow reads it at every parse).

``KINDS`` lists every extractor kind with its modality and the module defining it; the module registers the class
(:func:`memf.features.base.register`) and is imported on first use. An extractor's :func:`identity` is everything its
output depends on; the workflow puts it into each extraction rule's ``params:`` so that a change reruns exactly
that extractor's shards and what depends on them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Modalities a feature store holds: the field modalities, then the clip kinds.
FEATURE_MODALITIES: tuple[str, ...] = ("text", "image", "numeric", "video", "audio")
CLIP_MODALITIES: tuple[str, ...] = ("video", "audio")
RANDOM_INIT = "random-init"

#: Extractor kind -> (modality, modules under memf.features whose source is part of its code version; the first
#: defines and registers the class).
KINDS: dict[str, tuple[str, tuple[str, ...]]] = {
    "transformers-text": ("text", ("text",)),
    "torchvision": ("image", ("image",)),
    "videomae": ("video", ("video", "image")),
    "wav2vec2": ("audio", ("audio",)),
    "log-standard": ("numeric", ("numeric",)),
}
#: Sources every kind's output depends on: the extractor base, the job driver, the store layout, the decoders.
SHARED_SOURCES: tuple[str, ...] = ("features/base.py", "features/extract.py", "features/store.py", "data/media.py")


def kind_modality(kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"unknown extractor kind '{kind}', expected one of {sorted(KINDS)}")
    return KINDS[kind][0]


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
        keys = ("device", "workers", "timeout_s", "batch_size", "precision")
        return cls(**{k: section[k] for k in keys if k in section})


@dataclass(frozen=True)
class ExtractorSpec:
    """One configured extractor: its name, registered kind, model reference and options."""

    name: str
    kind: str
    model: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def modality(self) -> str:
        return kind_modality(self.kind)

    @classmethod
    def from_config(cls, name: str, extractors: Mapping[str, Any]) -> ExtractorSpec:
        if name not in extractors:
            raise ValueError(f"config extractors: no extractor named '{name}' (have {sorted(extractors)})")
        entry = extractors[name]
        kind_modality(entry["kind"])
        return cls(name=name, kind=entry["kind"], model=entry.get("model"), options=dict(entry.get("options") or {}))


def code_version(kind: str) -> str:
    """sha256 (12 hex digits) of the sources ``kind``'s output depends on: editing any of them changes it."""
    kind_modality(kind)
    package = Path(__file__).parent.parent
    digest = hashlib.sha256()
    for rel in (*(f"features/{m}.py" for m in KINDS[kind][1]), *SHARED_SOURCES):
        digest.update(rel.encode() + b"\0" + (package / rel).read_bytes())
    return digest.hexdigest()[:12]


def identity(spec: ExtractorSpec, settings: ExtractionSettings) -> dict[str, Any]:
    """Everything that determines an extractor's output: name, kind, model, options, code version, precision."""
    return {
        "name": spec.name,
        "kind": spec.kind,
        "modality": spec.modality,
        "model": spec.model,
        "options": dict(spec.options),
        "precision": settings.precision,
        "code_version": code_version(spec.kind),
    }


def identity_json(name: str, extractors: Mapping[str, Any], extraction: Mapping[str, Any]) -> str:
    """:func:`identity` of a configured extractor as canonical JSON (for a rule's ``params:``)."""
    spec = ExtractorSpec.from_config(name, extractors)
    return json.dumps(identity(spec, ExtractionSettings.from_config(extraction)), sort_keys=True)
