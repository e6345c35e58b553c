"""Extractor configuration, identity and load-time checks, importable without torch (the workflow reads it at every
parse, also from an environment that holds only Snakemake).

``KINDS`` lists every extractor kind with its modality and the module defining it; the module registers the class
(:func:`memf.features.base.register`) and is imported on first use. ``KIND_OPTIONS`` is the one list of each kind's
options and defaults, and ``TORCHVISION_ARCHITECTURES`` the CNNs the image kind builds: the classes read both from
here so that :func:`check_extractors` can refuse a typo when the workflow loads instead of hours later in a job. An
extractor's :func:`identity` is everything its output depends on; the workflow puts it into each extraction rule's
``params:`` so that a change reruns exactly that extractor's shards and what depends on them.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from memf.core.version import modules_version

log = logging.getLogger(__name__)

#: Modalities a feature store holds: the field modalities, then the clip kinds.
FEATURE_MODALITIES: tuple[str, ...] = ("text", "image", "numeric", "video", "audio")
CLIP_MODALITIES: tuple[str, ...] = ("video", "audio")
RANDOM_INIT = "random-init"

#: Extractor kind -> (modality, the module under memf.features that defines and registers its class). The torch-free
#: catalog of the registry :data:`memf.features.base.EXTRACTORS` (tested equal).
KINDS: dict[str, tuple[str, str]] = {
    "transformers-text": ("text", "text"),
    "torchvision": ("image", "image"),
    "videomae": ("video", "video"),
    "wav2vec2": ("audio", "audio"),
    "log-standard": ("numeric", "numeric"),
}
#: Kinds whose model is a transformers checkpoint (hub id or local folder, ``from_pretrained``).
HF_KINDS: tuple[str, ...] = ("transformers-text", "videomae", "wav2vec2")
#: Kinds that read their input preprocessing from the checkpoint's processor config (``preprocessor_config.json``),
#: with the options that stand in for it in a folder that has none.
PROCESSOR_KINDS: dict[str, tuple[str, ...]] = {
    "videomae": ("resize", "crop", "mean", "std", "interpolation"),
    "wav2vec2": ("sample_rate", "normalize"),
}
TORCHVISION_ARCHITECTURES: tuple[str, ...] = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "densenet121")
#: Width of the pooled vector each architecture's image extractor writes (its classifier's input; tested against
#: torchvision): what the resource model plans with before any image is extracted (memf.resources).
TORCHVISION_DIMS: dict[str, int] = {"resnet18": 512, "resnet34": 512, "resnet50": 2048, "resnet101": 2048,
                                    "resnet152": 2048, "densenet121": 1024}
#: Tiny model kind -> size settings and their defaults (hidden width, depth, heads, ...): what config `tiny_models`
#: overrides (memf.features.tiny builds them; the resource model reads ``hidden``, the width they write).
TINY_SIZES: dict[str, dict[str, Any]] = {
    "bert": {"hidden": 32, "layers": 2, "heads": 2, "intermediate": 64, "vocab_size": 1000, "max_positions": 128},
    "xlnet": {"hidden": 32, "layers": 2, "heads": 2, "intermediate": 64, "vocab_size": 1000},
    "videomae": {"hidden": 32, "layers": 2, "heads": 2, "intermediate": 64, "image_size": 32, "patch_size": 8,
                 "num_frames": 4, "tubelet_size": 2},
    "wav2vec2": {"hidden": 32, "layers": 2, "heads": 2, "intermediate": 64, "conv_dim": 32, "conv_pos": 16,
                 "conv_pos_groups": 2},
}
#: Resampling filters an option may name (each is a torchvision ``InterpolationMode`` value and a PIL filter).
INTERPOLATIONS: tuple[str, ...] = ("nearest", "bilinear", "bicubic")

#: Extractor kind -> every option it accepts and its default; an option the kind does not list is refused. ``None``
#: for a preprocessing value means "as the checkpoint says" (torchvision weights preset, transformers processor
#: config); ``batch_size`` None means ``extraction.batch_size``.
KIND_OPTIONS: dict[str, dict[str, Any]] = {
    "transformers-text": {"pooling": "mean", "max_length": 128, "batch_size": None, "revision": None},
    "torchvision": {"weights": "none", "resize": None, "crop": None, "mean": None, "std": None, "interpolation": None,
                    "seed": 0, "batch_size": None},
    "videomae": {"resize": None, "crop": None, "mean": None, "std": None, "interpolation": None, "batch_size": None,
                 "revision": None},
    "wav2vec2": {"sample_rate": None, "normalize": None, "chunk_seconds": 10.0, "min_chunk_seconds": 1.0,
                 "batch_size": None, "revision": None},
    "log-standard": {},  # the transforms come from the config's `numeric` policy
}


def _is_int(v: Any, low: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= low


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_rgb(v: Any, positive: bool) -> bool:
    return isinstance(v, (list, tuple)) and len(v) == 3 and all(_is_number(x) and (x > 0 or not positive) for x in v)


#: Option -> (accepts a given value, what is expected). ``None`` (the option left at its default) is always accepted
#: where the default is None.
OPTION_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "pooling": (lambda v: v in ("mean", "cls"), "mean or cls"),
    "max_length": (lambda v: _is_int(v, 1), "an integer >= 1"),
    "batch_size": (lambda v: _is_int(v, 1), "an integer >= 1"),
    "revision": (lambda v: isinstance(v, str) and bool(v), "a branch, tag or commit of the hub repository"),
    "weights": (lambda v: isinstance(v, str) and bool(v), "none, a weights file or a torchvision weights name"),
    "resize": (lambda v: _is_int(v, 1), "an integer >= 1 (pixels of the shorter side)"),
    "crop": (lambda v: _is_int(v, 1), "an integer >= 1 (side of the centre crop)"),
    "mean": (lambda v: _is_rgb(v, positive=False), "three numbers (R, G, B)"),
    "std": (lambda v: _is_rgb(v, positive=True), "three numbers > 0 (R, G, B)"),
    "interpolation": (lambda v: v in INTERPOLATIONS, " or ".join(INTERPOLATIONS)),
    "seed": (lambda v: _is_int(v, 0), "an integer >= 0"),
    "sample_rate": (lambda v: _is_int(v, 1), "an integer >= 1 (Hz)"),
    "normalize": (lambda v: isinstance(v, bool), "true or false"),
    "chunk_seconds": (lambda v: _is_number(v) and v > 0, "a number > 0"),
    "min_chunk_seconds": (lambda v: _is_number(v) and v >= 0, "a number >= 0"),
}


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
    """One configured extractor: its name, registered kind, model reference and options.

    ``preprocessing`` is None in a spec read from the config; a built extractor replaces its spec by one holding the
    preprocessing it resolved from the checkpoint and the options, so that every shard's recorded identity says how
    its inputs were prepared.
    """

    name: str
    kind: str
    model: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    preprocessing: Mapping[str, Any] | None = None

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


def extractor_version(kind: str) -> str:
    """The code version of extractor ``kind``: the job driver (memf.features.extract), the kind's module and all they
    import (:func:`memf.core.version.modules_version`); editing any of them changes it."""
    kind_modality(kind)
    return modules_version(("memf.features.extract", f"memf.features.{KINDS[kind][1]}"))


def identity(spec: ExtractorSpec, settings: ExtractionSettings) -> dict[str, Any]:
    """Everything that determines an extractor's output: name, kind, model, options, code version, precision, and
    once the extractor is built, the preprocessing it resolved (``spec.preprocessing``)."""
    ident = {
        "name": spec.name,
        "kind": spec.kind,
        "modality": spec.modality,
        "model": spec.model,
        "options": dict(spec.options),
        "precision": settings.precision,
        "code_version": extractor_version(spec.kind),
    }
    if spec.preprocessing is not None:
        ident["preprocessing"] = dict(spec.preprocessing)
    return ident


def identity_json(name: str, extractors: Mapping[str, Any], extraction: Mapping[str, Any]) -> str:
    """:func:`identity` of a configured extractor as canonical JSON (for a rule's ``params:``)."""
    spec = ExtractorSpec.from_config(name, extractors)
    return json.dumps(identity(spec, ExtractionSettings.from_config(extraction)), sort_keys=True)


def option_problems(key: str, kind: str, options: Mapping[str, Any]) -> list[str]:
    """One line per unknown option or unacceptable option value of one extractor; ``key`` is its config key
    (``extractors.<name>``)."""
    accepted = KIND_OPTIONS[kind]
    problems = []
    for name, value in options.items():
        if name not in accepted:
            problems.append(f"{key}.options.{name}: unknown option (accepted: {', '.join(sorted(accepted)) or 'none'})")
        elif not (value is None and accepted[name] is None):
            ok, expected = OPTION_RULES[name]
            if not ok(value):
                problems.append(f"{key}.options.{name}: {value!r} is not accepted (expected {expected})")
    return problems


def check_extractors(extractors: Mapping[str, Any], *, built_models: set[str]) -> list[str]:
    """Every mistake in the config's ``extractors`` section that can be seen without loading a model, one line each.

    Checked: the kind; each option's name and value; the torchvision architecture and weights (``none``, an existing
    file, or a weights name of that architecture: torchvision is imported only when a config names one); each
    transformers model (an existing folder holding ``config.json`` and, for kinds that read a processor config,
    ``preprocessor_config.json`` or every option standing in for it, or a hub id; with ``HF_HUB_OFFLINE=1``, whether
    the hub id is in the local cache). Folders in ``built_models`` (what the workflow's ``tiny_model`` rule writes) are
    not checked: they do not exist before the run.

    Returns:
        Lines shaped ``extractors.<name>.<key>: <bad value> ... (accepted: ...)``; an empty list for a clean config.
    """
    built = {os.path.normpath(m) for m in built_models}
    problems: list[str] = []
    for name, entry in extractors.items():
        key = f"extractors.{name}"
        kind = entry.get("kind")
        if kind not in KINDS:
            problems.append(f"{key}.kind: {kind!r} is not an extractor kind (accepted: {', '.join(sorted(KINDS))})")
            continue
        options = dict(entry.get("options") or {})
        problems += option_problems(key, kind, options)
        model = entry.get("model")
        if kind == "torchvision":
            problems += _torchvision_problems(key, model, options.get("weights", KIND_OPTIONS[kind]["weights"]))
        elif kind in HF_KINDS:
            if not isinstance(model, str) or not model:
                problems.append(f"{key}.model: {model!r} is missing (expected a Hugging Face hub id or a local model folder)")
            elif os.path.normpath(model) not in built:
                problems += _hf_model_problems(key, kind, model, options)
        elif model is not None:
            problems.append(f"{key}.model: {model!r}, but kind {kind} uses no model (expected null)")
    return problems


_WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth")
#: A Hugging Face repository id: ``name`` or ``owner/name`` (huggingface_hub's validate_repo_id, without its length cap).
_HUB_ID = re.compile(r"(?:[\w.-]+/)?[\w.-]+")


def _torchvision_problems(key: str, arch: Any, weights: Any) -> list[str]:
    if arch not in TORCHVISION_ARCHITECTURES:
        return [f"{key}.model: {arch!r} is not a torchvision architecture memf builds "
                f"(accepted: {', '.join(TORCHVISION_ARCHITECTURES)})"]
    if not isinstance(weights, str) or weights == "none" or Path(weights).is_file():
        return []  # a non-string was reported by option_problems
    if "/" in weights or weights.endswith(_WEIGHT_SUFFIXES):
        return [f"{key}.options.weights: file {weights!r} does not exist (expected none, an existing .safetensors/.pt "
                "file or a torchvision weights name)"]
    try:
        from torchvision.models import get_model_weights
    except ImportError:
        log.warning("%s.options.weights: %r not checked at load (torchvision is not installed where Snakemake runs); "
                    "the extraction job checks it", key, weights)
        return []
    names = list(get_model_weights(arch).__members__)
    if weights in names:
        return []
    return [f"{key}.options.weights: {weights!r} is not a weights name of {arch} "
            f"(accepted: none, a weights file, {', '.join(names)})"]


def _hf_model_problems(key: str, kind: str, model: str, options: Mapping[str, Any]) -> list[str]:
    """A transformers model reference: an existing folder, or a hub id (in the cache when offline)."""
    stand_ins = PROCESSOR_KINDS.get(kind, ())
    lacking = [o for o in stand_ins if options.get(o) is None]
    folder = Path(model).expanduser()
    if folder.is_dir():
        problems = []
        if not (folder / "config.json").is_file():
            problems.append(f"{key}.model: folder {model!r} has no config.json (expected a model saved with save_pretrained)")
        if stand_ins and lacking and not (folder / "preprocessor_config.json").is_file():
            problems.append(f"{key}.model: folder {model!r} has no preprocessor_config.json; give options "
                            f"{', '.join(stand_ins)} instead (missing: {', '.join(lacking)})")
        return problems
    if folder.exists():
        return [f"{key}.model: {model!r} is a file (expected a hub id or a model folder)"]
    if model.startswith(("/", ".", "~")) or not _HUB_ID.fullmatch(model):
        return [f"{key}.model: folder {model!r} does not exist (expected a hub id or an existing model folder)"]
    if not _hub_offline():
        return []
    return _offline_cache_problems(key, model, options.get("revision"), ["config.json"] + (
        ["preprocessor_config.json"] if stand_ins and lacking else []))


def _hub_offline() -> bool:
    """HF_HUB_OFFLINE (or the older TRANSFORMERS_OFFLINE) set to a true value, read as huggingface_hub reads it."""
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.upper() in {"1", "ON", "YES", "TRUE"}


def _offline_cache_problems(key: str, repo_id: str, revision: str | None, files: list[str]) -> list[str]:
    try:
        from huggingface_hub import constants, try_to_load_from_cache
    except ImportError:
        log.warning("%s.model: %r not checked against the offline cache at load (huggingface_hub is not installed "
                    "where Snakemake runs); the extraction job loads it", key, repo_id)
        return []
    missing = [f for f in files if not isinstance(try_to_load_from_cache(repo_id, f, revision=revision), str)]
    if not missing:
        return []
    at = f" at revision {revision!r}" if revision else ""
    fetch = f"hf download {repo_id}" + (f" --revision {revision}" if revision else "")
    what = "is not" if "config.json" in missing else f"has no {', '.join(missing)}"
    return [f"{key}.model: {repo_id!r}{at} {what} in the offline Hugging Face cache {constants.HF_HUB_CACHE} "
            f"(HF_HUB_OFFLINE=1); fetch it with: {fetch}"]
