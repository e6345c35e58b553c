"""The model bundle: everything a trained experiment needs to predict streams it has never seen, in one folder that
holds no pickle and names no file outside itself (docs/predict.md, "The bundle").

::

    bundle.json                         what the bundle is (below); written last, so its presence marks a complete bundle
    metrics.json                        the interval's coverage on the member folds' test parts, their test metrics
    members/fold{k}/model.json          the run's model.json restricted to the bundle's seeds (options, dims, target
                                        scaling per seed, the numeric standardisation fitted on fold k's training part)
    members/fold{k}/weights.safetensors the selected weights of those seeds (keys ``seed{s}/...``)
    members/fold{k}/neutral.safetensors the neutral reference inputs of fold k (memf.predict.drivers)
    extractors/{name}/                  a local model folder the features were made with (tiny models: weights, config,
                                        tokenizer, processor config), copied; or a local weights file

``bundle.json`` holds the format version, the experiment, model and feature set, the members (fold and seeds), the
model's input dims and attention labels, the column mapping, the target transform, each numeric field's policy
transform and what validation accepts, the input bounds (``limits``), the padding caps, each extractor (kind, model
reference, options, weights id, dimension, preprocessing, code version; the bundle's copy when it has one; for a
seeded random initialisation the digest of the weights it builds), the interval calibration, the neutral reference's
definition, the code versions of the stages a prediction depends on and the package versions.

:func:`load_bundle` refuses, with one line each, a missing file, a bundle of another format or code version, a
copied model that changed since export, and a random initialisation this machine's torch builds differently.
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import shutil
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from memf.core.io import DataError, read_json, write_json
from memf.core.version import VERSION, code_version
from memf.data.contract import CLIP_KINDS
from memf.features.spec import RANDOM_INIT
from memf.features.spec import code_version as extractor_code_version
from memf.predict.plan import BUNDLE_FILE, FOLDER_KINDS, extractor_configs, is_weights_file
from memf.training.matrix import MODEL_JSON, PREDICTIONS_FILE, REFERENCE_MODELS, WEIGHTS_FILE

log = logging.getLogger(__name__)

BUNDLE_METRICS = "metrics.json"
FORMAT = 1
NEUTRAL_FILE = "neutral.safetensors"
#: Stages whose code decides a bundle's predictions: a bundle made by other code is refused (memf.core.version).
CHECKED_STAGES: tuple[str, ...] = ("validate", "pad", "model")
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


def stage_versions(extractors: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The code versions a bundle records and checks: the stages of :data:`CHECKED_STAGES` and each extractor kind."""
    return {**{stage: code_version(stage) for stage in CHECKED_STAGES},
            "extractors": {e["name"]: extractor_code_version(e["kind"]) for e in extractors.values()}}


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


# --- export --------------------------------------------------------------------------------------------------------


def _copy_extractor(entry: Mapping[str, Any], tmp: Path) -> dict[str, Any]:
    """The bundle's record of one extractor (from the padded file's ``extractors`` attribute), copying what it loads
    from local files into ``extractors/{name}``."""
    from memf.features.base import sha256_file, sha256_folder

    name = entry["name"]
    rec = {k: entry[k] for k in ("name", "kind", "modality", "model", "options", "precision", "code_version")}
    rec.update(weights_id=entry["weights"], dim=int(entry["dim"]), preprocessing=entry.get("preprocessing"), copy=None)
    rec["options"] = dict(rec["options"] or {})
    model = entry.get("model")
    if entry["kind"] in FOLDER_KINDS and isinstance(model, str) and Path(model).is_dir():
        rel = f"extractors/{name}"
        shutil.copytree(model, tmp / rel)
        if f"sha256:{sha256_folder(tmp / rel)}" != entry["weights"]:
            raise DataError(f"extractor {name}: the model folder {model} changed since its features were made "
                            f"(recorded {entry['weights']}); rerun its extraction before exporting")
        rec.update(model=rel, copy=rel)
    weights = rec["options"].get("weights")
    if entry["kind"] == "torchvision" and is_weights_file(weights):
        rel = f"extractors/{name}/{Path(weights).name}"
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(weights, tmp / rel)
        if f"sha256:{sha256_file(tmp / rel)}" != entry["weights"]:
            raise DataError(f"extractor {name}: the weights file {weights} changed since its features were made")
        rec["options"]["weights"] = rel
        rec["copy"] = rel
    if entry["kind"] == "torchvision" and entry["weights"] == RANDOM_INIT:
        rec["init_digest"] = random_init_digest(str(model), int(rec["options"].get("seed", 0)))
    return rec


def _numeric_transforms(features_dir: Path, numeric: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    """entity -> numeric column -> policy transform, as the numeric extractor's shard 0 recorded it."""
    from memf.features.store import read_field_shard

    shard = features_dir / "numeric" / numeric["name"] / "shard-0.parquet"
    _, meta = read_field_shard(shard)
    out: dict[str, dict[str, str]] = {}
    for key, transform in (meta.get("transforms") or {}).items():
        entity, column = key.split(".", 1)
        out.setdefault(entity, {})[column] = transform
    return out


def _write_member(tmp: Path, fold: int, run_dir: Path, seeds: Sequence[int] | None, padded: Any) -> dict[str, Any]:
    from safetensors.numpy import save_file as save_numpy
    from safetensors.torch import load_file, save_file

    from memf.predict.neutral import neutral_reference
    from memf.training.prepare import NumericScaler

    meta = read_json(run_dir / MODEL_JSON)
    if meta["model"] in REFERENCE_MODELS:
        raise DataError(f"{run_dir}: a reference model ({meta['model']}) has no weights to bundle; export a trained one")
    have = [int(s) for s in meta["seeds"]]
    chosen = have if seeds is None else [int(s) for s in seeds]
    missing = sorted(set(chosen) - set(have))
    if missing:
        raise DataError(f"{run_dir}: no seeds {missing} (the run has seeds {have})")
    if {k: tuple(v) for k, v in meta["dims"].items()} != padded.dims():
        raise DataError(f"{run_dir}: model dims differ from the padded feature set's; rerun the experiment")
    tensors = load_file(str(run_dir / WEIGHTS_FILE))
    kept = {k: v for k, v in tensors.items() if int(k.split("/", 1)[0][len("seed"):]) in chosen}
    folder = tmp / "members" / f"fold{fold}"
    folder.mkdir(parents=True)
    member_meta = {**meta, "seeds": chosen, "per_seed": {str(s): meta["per_seed"][str(s)] for s in chosen}}
    save_file(kept, str(folder / WEIGHTS_FILE))
    write_json(folder / MODEL_JSON, member_meta)
    scaled = NumericScaler.from_json(meta["numeric_scaler"]).apply(padded.arrays)
    neutral = neutral_reference(scaled, padded.index("train", fold))
    save_numpy({k: np.ascontiguousarray(v.reshape(v.shape or (1,))) for k, v in neutral.items()},
               str(folder / NEUTRAL_FILE))
    return {"fold": fold, "seeds": chosen, "dir": f"members/fold{fold}", "options": meta["options"],
            "params": meta.get("params", {})}


def export_bundle(
    *,
    experiment: str,
    run_dirs: Mapping[int, str | os.PathLike[str]],
    padded_path: str | os.PathLike[str],
    data_dir: str | os.PathLike[str],
    features_dir: str | os.PathLike[str],
    out: str | os.PathLike[str],
    seeds: Sequence[int] | None = None,
    level: float = 0.9,
    extraction_shards: int = 2,
) -> dict[str, Any]:
    """Write the bundle of ``experiment``'s runs ``run_dirs`` (fold -> ``results/runs/{experiment}/fold{k}``) to ``out``.

    Args:
        padded_path: the feature set's padded file the runs trained on (attributes: extractors, fields, caps; the
            arrays give the neutral reference).
        data_dir: the validated training dataset (``dataset.json``: column mapping, target, limits).
        features_dir: the training feature store (the numeric shards record each field's transform).
        out: the bundle folder; replaced whole (the new folder is built beside it, then renamed onto it).
        seeds: the seeds to keep (None: every seed of each run).
        level: nominal coverage of the prediction interval.
        extraction_shards: the shard count the features were extracted with (the default for new data).

    Returns:
        The bundle's ``bundle.json`` content.
    """
    from memf.predict.intervals import calibrate, seed_mean
    from memf.padding.padded import read_padded
    from memf.core.metrics import regression_metrics

    out = Path(out)
    if not run_dirs:
        raise ValueError(f"export {experiment}: no runs to bundle")
    padded = read_padded(padded_path)
    extractors = padded.attrs.get("extractors", {})
    if set(extractors) != {"text", "image", "numeric", "video", "audio"}:
        raise DataError(f"{padded_path}: feature set '{padded.attrs.get('feature_set')}' was not made by extractors "
                        "(the latent feature set cannot predict new data)")
    dataset = read_json(Path(data_dir) / "dataset.json")
    lacking = [k for k in ("columns", "target", "target_offset", "numeric_accepts", "limits") if k not in dataset]
    if lacking:
        raise DataError(f"{Path(data_dir) / 'dataset.json'}: no {', '.join(lacking)}; the validated data was written by "
                        "an older memf: run the workflow again (its validate rule rewrites it)")
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    try:
        members = [_write_member(tmp, int(k), Path(d), seeds, padded) for k, d in sorted(run_dirs.items())]
        metas = {m["fold"]: read_json(tmp / m["dir"] / MODEL_JSON) for m in members}
        first = metas[members[0]["fold"]]
        for k, meta in metas.items():
            if (meta["model"], meta["feature_set"], meta["experiment"]) != (first["model"], first["feature_set"], experiment):
                raise DataError(f"fold {k}: run of {meta['experiment']} ({meta['model']} on {meta['feature_set']}), "
                                f"expected {experiment} ({first['model']} on {first['feature_set']})")
        records = {m: _copy_extractor(e, tmp) for m, e in extractors.items()}
        predictions = {m["fold"]: pl.read_parquet(Path(run_dirs[m["fold"]]) / PREDICTIONS_FILE) for m in members}
        calibration = calibrate(predictions, {m["fold"]: m["seeds"] for m in members}, level)
        tests = pl.concat([seed_mean(predictions[m["fold"]], m["seeds"]).filter(pl.col("split") == "test")
                           for m in members])
        transforms = _numeric_transforms(Path(features_dir), extractors["numeric"])
        bundle = {
            "format": FORMAT,
            "experiment": experiment,
            "model": first["model"],
            "feature_set": padded.attrs["feature_set"],
            "members": members,
            "folds": int(padded.folds),
            "dims": first["dims"],
            "attention_labels": first.get("attention_labels"),
            "fields": padded.attrs["fields"],
            "caps": padded.attrs["caps"],
            "columns": dataset["columns"],
            "target": {"offset": float(dataset["target_offset"]), "transform": dataset["target"]},
            "numeric": {"transforms": transforms, "accepts": dataset["numeric_accepts"]},
            "limits": dataset["limits"],
            "extractors": records,
            "extraction": {"shards": int(extraction_shards), "precision": records["text"]["precision"]},
            "intervals": calibration.to_json(),
            "neutral": NEUTRAL_METHOD,
            "code_versions": stage_versions(records),
            "versions": {"memf": VERSION, **package_versions()},
            "training": {"dataset": dataset["root"], "streams": dataset["streams_kept"], "padded": str(padded_path)},
        }
        write_json(tmp / BUNDLE_METRICS, {
            "experiment": experiment, "interval": calibration.to_json(),
            "test": regression_metrics(tests["y_true"].to_numpy(), tests["y_pred"].to_numpy()),
            "test_streams": tests.height,
            "note": "test metrics of each member fold's seed ensemble on its own test part, pooled over folds",
        })
        write_json(tmp / BUNDLE_FILE, bundle)
        _swap_into(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    log.info("bundle %s: %s folds %s, interval +-%.3f (log) at %.0f%%, test coverage %.3f", out, experiment,
             [m["fold"] for m in members], calibration.q, 100 * level, calibration.test_coverage)
    return bundle


def _swap_into(tmp: Path, out: Path) -> None:
    """Rename the complete folder ``tmp`` onto ``out``; an old ``out`` is moved aside first and removed after."""
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old)


# --- loading -------------------------------------------------------------------------------------------------------


@dataclass
class Member:
    """One member fold of a bundle: its seeds' models with their target scaling, its numeric standardisation and
    neutral reference."""

    fold: int
    models: dict[int, Any]  # seed -> torch module (eval mode)
    scaling: dict[int, tuple[float, float]]  # seed -> (target mean, target sd)
    scaler: Any  # memf.training.prepare.NumericScaler
    neutral: dict[str, np.ndarray]
    attention_labels: list[str] | None


class Bundle:
    """A loaded model bundle (:func:`load_bundle`): its record, members and the settings new data is prepared with."""

    def __init__(self, path: Path, meta: dict[str, Any], members: list[Member], device: str = "cpu") -> None:
        self.path, self.meta, self.members, self.device = path, meta, members, device

    @property
    def label(self) -> str:
        folds = [m.fold for m in self.members]
        return f"{self.meta['experiment']} ({self.meta['model']}; folds {folds}, {self.n_models} models)"

    @property
    def n_models(self) -> int:
        return sum(len(m.models) for m in self.members)

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
        """The models' item axis and clip axes: new data is cut to them, and padded up to them."""
        dims = self.meta["dims"]
        return int(dims["commodity/mask"][0]), {kind: int(dims[f"{kind}/mask"][0]) for kind in CLIP_KINDS}

    def predict(self, dataset_root: str | os.PathLike[str], out: str | os.PathLike[str] | None = None,
                **options: Any) -> pl.DataFrame:
        """Predict every stream of the raw dataset at ``dataset_root`` (docs/data-format.md; ``sales`` optional).

        Runs what the workflow's predict chain runs, in this process: validation with the bundle's contract,
        extraction with the bundle's extractors, padding, the members, the interval and the drivers. With ``out``,
        every file the workflow writes to ``results/predict/{name}/`` is written there. Options: see
        :func:`memf.predict.predictor.predict_dataset`.

        Returns:
            One row per predicted stream (the columns of ``predictions.parquet``).
        """
        from memf.predict.predictor import predict_dataset

        return predict_dataset(self, dataset_root, out, **options)


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
    needed = [f"{m['dir']}/{name}" for m in meta["members"] for name in (MODEL_JSON, WEIGHTS_FILE, NEUTRAL_FILE)]
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
    now = stage_versions(meta["extractors"])
    then = meta["code_versions"]
    for stage in CHECKED_STAGES:
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
                                f"(sha256:{digest[:12]}..., recorded {rec['weights_id'][:19]}...); export the bundle again")
        if rec.get("init_digest"):
            digest = random_init_digest(rec["model"], int(rec["options"].get("seed", 0)))
            if digest != rec["init_digest"]:
                versions = meta["versions"]
                raise DataError(f"{path}: extractor {rec['name']} is a seeded random initialisation and this "
                                f"machine's torch/torchvision draw other weights from its seed (bundle made with "
                                f"torch {versions.get('torch')}, torchvision {versions.get('torchvision')}); install those")


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
    from safetensors.numpy import load_file as load_numpy

    from memf.training.runs import load_models
    from memf.training.prepare import NumericScaler

    path = Path(path)
    meta = read_bundle_meta(path)
    check_code_versions(meta, path)
    check_extractor_files(meta, path)
    _warn_versions(meta, path)
    members = []
    for rec in meta["members"]:
        folder = path / rec["dir"]
        models, model_meta = load_models(folder, builder, device)  # a member folder is laid out as a run folder
        scaling = {seed: (float(model_meta["per_seed"][str(seed)]["target_mean"]),
                          float(model_meta["per_seed"][str(seed)]["target_sd"])) for seed in models}
        neutral = {k: (v.reshape(()) if k.endswith("/count") else v) for k, v in load_numpy(str(folder / NEUTRAL_FILE)).items()}
        members.append(Member(int(rec["fold"]), models, scaling, NumericScaler.from_json(model_meta["numeric_scaler"]),
                              neutral, model_meta.get("attention_labels")))
    bundle = Bundle(path, meta, members, device)
    log.info("loaded bundle %s: %s", path, bundle.label)
    return bundle
