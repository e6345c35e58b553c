"""The model bundle: everything a trained experiment needs to predict streams it has never seen, in one folder that
holds no pickle and names no file outside itself (docs/predict.md, "The bundle").

::

    bundle.json                         what the bundle is (below); written last: its presence marks a complete bundle
    metrics.json                        the interval's coverage on the member folds' test parts, their test metrics
    members/fold{k}/model.json          the run's model.json restricted to the bundle's seeds (options, dims, target
                                        scaling per seed, the numeric standardisation fitted on fold k's training part)
    members/fold{k}/weights.safetensors a trained model's selected weights of those seeds (keys ``seed{s}/...``)
    members/fold{k}/reference.skops     a reference model's fitted seeds (skops, the run's own file restricted to the
                                        bundle's seeds: pooling, scaler, reduction, estimator; loaded by
                                        memf.training.references.load_reference with its explicit trusted types)
    members/fold{k}/neutral.safetensors the neutral reference inputs of fold k (memf.predict.drivers)
    extractors/{name}/                  a local model folder the features were made with (tiny models: weights, config,
                                        tokenizer, processor config), copied; or a local weights file

The bundle ``best`` (memf.training.ensemble) is either the bundle of the single experiment that won on the
validation parts (recording the choice), or the ensemble's::

    bundle.json                         as above, with model ``ensemble``, ``components`` (experiment -> folder),
                                        ``weights`` (fold -> experiment -> weight) and ``choice`` (the validation
                                        errors)
    metrics.json                        the ensemble runs' interval coverage and test metrics
    extractors/{name}/                  the members' extractors' local files (all members read one feature set)
    components/{experiment}/            each member experiment's bundle, complete (checked when loaded)

``bundle.json`` holds the format version, the experiment, model and feature set, the members (fold and seeds), the
model's input dims and attention labels, the column mapping, the target transform, each numeric field's policy
transform and what validation accepts, the input bounds (``limits``), the padding caps and the stored precision of the
feature vectors (``dtype``: new data is padded the same way), each extractor (kind, model
reference, options, weights id, dimension, preprocessing, code version; the bundle's copy when it has one; for a
seeded random initialisation the digest of the weights it builds), the interval calibration, the neutral reference's
definition, the code versions of the stages a prediction depends on and the package versions.

:mod:`memf.predict.export` writes a bundle; :func:`load_bundle` reads one and refuses, with one line each, a missing
file, a bundle of another format (format 1 predates the ragged padded store) or code version, a copied model that
changed since export, and a random initialisation this machine's torch builds differently.
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from memf.core.io import DataError, read_json
from memf.core.version import code_version
from memf.data.contract import CLIP_KINDS
from memf.features.spec import extractor_version
from memf.predict.plan import BUNDLE_FILE, extractor_configs
from memf.training.matrix import ENSEMBLE, MODEL_JSON, REFERENCE_MODEL_FILE, REFERENCE_MODELS, WEIGHTS_FILE

log = logging.getLogger(__name__)

BUNDLE_METRICS = "metrics.json"
FORMAT = 2
NEUTRAL_FILE = "neutral.safetensors"
#: Stages whose code decides a bundle's predictions: a bundle made by other code is refused (memf.core.version).
CHECKED_STAGES: tuple[str, ...] = ("validate", "pad", "model")
#: The same for a reference model's bundle: its pooling, reduction and estimators are the reference fit's code.
REFERENCE_STAGES: tuple[str, ...] = ("validate", "pad", "reference_model")
#: The same for the ensemble's bundle (``best``): how new data is prepared; each member bundle checks its own model.
ENSEMBLE_STAGES: tuple[str, ...] = ("validate", "pad")
PACKAGES: tuple[str, ...] = ("torch", "torchvision", "torchaudio", "transformers", "tokenizers", "safetensors", "numpy",
                             "polars", "pyarrow", "h5py", "scikit-learn", "pillow", "decord", "av", "soundfile")
NEUTRAL_METHOD = ("the member fold's training part: mean field vectors and standardised numbers for anchor and room; "
                  "for commodities, video and audio the mean item or clip repeated the rounded mean count of times")


def package_versions() -> dict[str, str | None]:
    """Python's and each package's installed version (None where it is not installed)."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def is_reference(model: str) -> bool:
    """A reference model (scikit-learn, saved with skops) rather than a trained network (safetensors)."""
    return model in REFERENCE_MODELS


def checked_stages(model: str) -> tuple[str, ...]:
    """The stages whose code versions a bundle of ``model`` records and checks."""
    if model == ENSEMBLE:
        return ENSEMBLE_STAGES
    return REFERENCE_STAGES if is_reference(model) else CHECKED_STAGES


def member_files(model: str) -> tuple[str, ...]:
    """The files of each member folder of a bundle of ``model``."""
    return (MODEL_JSON, REFERENCE_MODEL_FILE if is_reference(model) else WEIGHTS_FILE, NEUTRAL_FILE)


def stage_versions(extractors: Mapping[str, Mapping[str, Any]], model: str) -> dict[str, Any]:
    """The code versions a bundle of ``model`` records and checks: the stages of :func:`checked_stages` and each
    extractor kind."""
    return {**{stage: code_version(stage) for stage in checked_stages(model)},
            "extractors": {e["name"]: extractor_version(e["kind"]) for e in extractors.values()}}


def random_init_digest(arch: str, seed: int) -> str:
    """sha256 of the weights torchvision builds for ``arch`` after ``torch.manual_seed(seed)``, as the image
    extractor does for ``weights: none``: another torch or torchvision may draw other weights from the same seed."""
    import torch
    import torchvision

    torch.manual_seed(seed)
    model = torchvision.models.get_model(arch, weights=None)
    digest = hashlib.sha256()
    for key, tensor in model.state_dict().items():
        digest.update(key.encode() + b"\0" + tensor.detach().cpu().contiguous().numpy().tobytes())
    return f"sha256:{digest.hexdigest()}"


# --- loading -------------------------------------------------------------------------------------------------------


@dataclass
class Member:
    """One member fold of a bundle: its seeds' models with their target scaling, its numeric standardisation and
    neutral reference."""

    fold: int
    models: dict[int, Any]  # seed -> torch module (eval mode), or a reference's fitted ReferenceModel
    scaling: dict[int, tuple[float, float]]  # seed -> (target mean, target sd); (0, 1) for a reference
    scaler: Any  # memf.training.prepare.NumericScaler
    neutral: dict[str, np.ndarray]
    attention_labels: list[str] | None


class Bundle:
    """A loaded model bundle (:func:`load_bundle`): its record, members and the settings new data is prepared with.
    :class:`memf.predict.predictor.Predictor` adds the prediction of raw datasets (``memf.load_bundle``)."""

    def __init__(self, path: Path, meta: dict[str, Any], members: list[Member], device: str = "cpu") -> None:
        self.path, self.meta, self.members, self.device = path, meta, members, device

    @property
    def label(self) -> str:
        folds = [m.fold for m in self.members]
        return f"{self.meta['experiment']} ({self.meta['model']}; folds {folds}, {self.n_models} models)"

    @property
    def n_models(self) -> int:
        return sum(len(m.models) for m in self.members)

    def member_summary(self) -> list[dict[str, Any]]:
        """What predicted, for ``metrics.json``: each member fold and its seeds."""
        return [{"fold": m.fold, "seeds": sorted(m.models)} for m in self.members]

    @property
    def columns(self) -> dict[str, dict[str, list[str]]]:
        return self.meta["columns"]

    @property
    def target_offset(self) -> float:
        return float(self.meta["target"]["offset"])

    def extractor_configs(self) -> dict[str, dict[str, Any]]:
        """The ``extractors`` section new data is extracted with: the bundle's extractors, their local files in the
        bundle (absolute paths)."""
        return extractor_configs(self.meta, self.path.resolve())

    def numeric_policy(self) -> dict[str, Any]:
        """An explicit numeric policy naming every numeric field's transform (the default is never used)."""
        return {"default": "log1p", "columns": self.meta["numeric"]["transforms"]}

    def model_axes(self) -> tuple[int, dict[str, int]]:
        """The models' item axis and clip axes (their training store's longest lists): new data is cut to them."""
        dims = self.meta["dims"]
        return int(dims["commodity/mask"][0]), {kind: int(dims[f"{kind}/mask"][0]) for kind in CLIP_KINDS}


class EnsembleBundle(Bundle):
    """The bundle ``best`` when the ensemble wins (memf.training.ensemble): each member experiment's bundle
    (``components/{experiment}``, loaded and checked as any bundle) and, per fold, the weights of their seed means."""

    def __init__(self, path: Path, meta: dict[str, Any], components: dict[str, Bundle], device: str = "cpu") -> None:
        super().__init__(path, meta, [], device)
        self.components = components
        self.weights = {int(k): {e: float(w) for e, w in ws.items()} for k, ws in meta["weights"].items()}

    @property
    def label(self) -> str:
        return (f"{self.meta['experiment']} (the ensemble of {', '.join(self.components)}; folds "
                f"{sorted(self.weights)})")

    @property
    def n_models(self) -> int:
        return sum(c.n_models for c in self.components.values())

    def member_summary(self) -> list[dict[str, Any]]:
        return [{"fold": k, "weights": w} for k, w in sorted(self.weights.items())]


def read_bundle_meta(path: str | os.PathLike[str]) -> dict[str, Any]:
    """``bundle.json`` of the bundle folder ``path``, checked for its format and every file it lists.

    Raises:
        DataError: not a bundle, another format, or a file missing.
    """
    path = Path(path)
    file = path / BUNDLE_FILE
    if not file.is_file():
        raise DataError(f"{path}: not a model bundle (no {BUNDLE_FILE}); export one with: snakemake --cores all "
                        "results/bundles/<experiment>/bundle.json")
    meta = read_json(file)
    if meta.get("format") != FORMAT:
        raise DataError(f"{file}: bundle format {meta.get('format')!r}, this memf reads format {FORMAT}; re-export it")
    if meta["model"] == ENSEMBLE:
        needed = [f"{folder}/{BUNDLE_FILE}" for folder in meta["components"].values()]
    else:
        needed = [f"{m['dir']}/{name}" for m in meta["members"] for name in member_files(meta["model"])]
    needed += [rec["copy"] for rec in meta["extractors"].values() if rec.get("copy")]
    for rel in needed:
        if not (path / rel).exists():
            raise DataError(f"{path}: bundle file {rel} is missing; the bundle is incomplete, export it again")
    return meta


def check_code_versions(meta: Mapping[str, Any], path: Path) -> None:
    """Refuse a bundle whose recorded code versions differ from this checkout's.

    Raises:
        DataError: one line naming the first stage or extractor that differs.
    """
    now = stage_versions(meta["extractors"], meta["model"])
    then = meta["code_versions"]
    for stage in checked_stages(meta["model"]):
        if then.get(stage) != now[stage]:
            raise DataError(f"{path}: the bundle was made by code version {then.get(stage)} of stage '{stage}', this "
                            f"checkout has {now[stage]}: its predictions could differ; re-export it with this code "
                            "or use the code it was made with")
    for name, version in now["extractors"].items():
        if then["extractors"].get(name) != version:
            raise DataError(f"{path}: extractor {name} was made by code version {then['extractors'].get(name)}, this "
                            f"checkout has {version}: its features could differ; re-export the bundle with this code")


def check_extractor_files(meta: Mapping[str, Any], path: Path) -> None:
    """Refuse copied model files that changed since export, and a random initialisation that this machine's torch
    and torchvision would draw differently from the same seed."""
    from memf.features.base import sha256_file, sha256_folder

    for rec in meta["extractors"].values():
        if rec.get("copy"):
            target = path / rec["copy"]
            digest = sha256_folder(target) if target.is_dir() else sha256_file(target)
            if f"sha256:{digest}" != rec["weights_id"]:
                raise DataError(f"{path}: bundle file {rec['copy']} (extractor {rec['name']}) changed since export "
                                f"(sha256:{digest[:12]}..., recorded {rec['weights_id'][:19]}...); export the bundle "
                                "again")
        if rec.get("init_digest"):
            digest = random_init_digest(rec["model"], int(rec["options"].get("seed", 0)))
            if digest != rec["init_digest"]:
                versions = meta["versions"]
                raise DataError(f"{path}: extractor {rec['name']} is a seeded random initialisation and this "
                                f"machine's torch/torchvision draw other weights from its seed (bundle made with "
                                f"torch {versions.get('torch')}, torchvision {versions.get('torchvision')}); install "
                                "those")


def _warn_versions(meta: Mapping[str, Any], path: Path) -> None:
    now = package_versions()
    changed = [f"{k} {v} -> {now.get(k)}" for k, v in meta["versions"].items() if k in now and now[k] != v]
    if changed:
        log.warning("bundle %s was made with other package versions: %s", path, ", ".join(changed))


def load_bundle(path: str | os.PathLike[str], device: str = "cpu", builder: Any = None) -> Bundle:
    """Load the bundle folder ``path``: check it (see the module docstring) and rebuild every member's models.

    Args:
        device: where the models run (``cpu``, ``cuda``, ``cuda:1``).
        builder: builds a model from (name, dims, **options); None means ``memf.models.build_model``.

    Raises:
        DataError: one line for a missing file, another format or code version, a changed model file.
    """
    path = Path(path)
    meta = read_bundle_meta(path)
    check_code_versions(meta, path)
    check_extractor_files(meta, path)
    _warn_versions(meta, path)
    if meta["model"] == ENSEMBLE:
        components = {name: load_bundle(path / folder, device, builder) for name, folder in meta["components"].items()}
        return EnsembleBundle(path, meta, components, device)
    members = [_load_member(path / rec["dir"], int(rec["fold"]), meta["model"], builder, device)
               for rec in meta["members"]]
    bundle = Bundle(path, meta, members, device)
    log.info("loaded bundle %s: %s", path, bundle.label)
    return bundle


def _load_member(folder: Path, fold: int, model: str, builder: Any, device: str) -> Member:
    """One member folder (laid out as a run folder): a trained model's networks or a reference's fitted models."""
    from safetensors.numpy import load_file as load_numpy

    from memf.training.prepare import NumericScaler

    if is_reference(model):
        from memf.training.references import load_reference

        model_meta = read_json(folder / MODEL_JSON)
        models: dict[int, Any] = dict(load_reference(folder))
        scaling = {seed: (0.0, 1.0) for seed in models}  # a reference predicts log(sales) itself
    else:
        from memf.training.members import load_models

        models, model_meta = load_models(folder, builder, device)
        scaling = {seed: (float(model_meta["per_seed"][str(seed)]["target_mean"]),
                          float(model_meta["per_seed"][str(seed)]["target_sd"])) for seed in models}
    neutral = {k: (v.reshape(()) if k.endswith("/count") else v)
               for k, v in load_numpy(str(folder / NEUTRAL_FILE)).items()}
    return Member(fold, models, scaling, NumericScaler.from_json(model_meta["numeric_scaler"]), neutral,
                  model_meta.get("attention_labels"))
