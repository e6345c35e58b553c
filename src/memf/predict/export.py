"""Writing a model bundle (docs/predict.md, "The bundle"): the runs of an experiment (a trained network's weights or a
reference's fitted scikit-learn models, saved with skops), the padded feature set
they trained on and the validated data's record, made into one self-contained folder (layout and checks in
:mod:`memf.predict.bundle`). The folder is built beside its destination and renamed onto it, so a bundle is complete
or absent.
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from memf.core.io import DataError, read_json, write_json
from memf.core.release import VERSION
from memf.features.layout import shard_path
from memf.features.spec import RANDOM_INIT
from memf.predict.bundle import (
    BUNDLE_METRICS,
    FORMAT,
    NEUTRAL_FILE,
    NEUTRAL_METHOD,
    is_reference,
    package_versions,
    random_init_digest,
    stage_versions,
)
from memf.predict.plan import BUNDLE_FILE, FOLDER_KINDS, is_weights_file
from memf.training.matrix import ENSEMBLE, MODEL_JSON, PREDICTIONS_FILE, REFERENCE_MODEL_FILE, WEIGHTS_FILE

log = logging.getLogger(__name__)


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

    shard = shard_path(features_dir, "numeric", numeric["name"], 0)
    _, meta = read_field_shard(shard)
    out: dict[str, dict[str, str]] = {}
    for key, transform in (meta.get("transforms") or {}).items():
        entity, column = key.split(".", 1)
        out.setdefault(entity, {})[column] = transform
    return out


def _write_member(tmp: Path, fold: int, run_dir: Path, seeds: Sequence[int] | None, store: Any) -> dict[str, Any]:
    """Member folder ``members/fold{fold}`` of the run ``run_dir``: its model.json and models restricted to the
    chosen seeds, and the neutral reference of the fold's training part."""
    from safetensors.numpy import save_file as save_numpy

    from memf.padding.batches import BLOCK_ROWS, BatchReader
    from memf.predict.neutral import neutral_reference
    from memf.training.prepare import NumericScaler

    meta = read_json(run_dir / MODEL_JSON)
    have = [int(s) for s in meta["seeds"]]
    chosen = have if seeds is None else [int(s) for s in seeds]
    missing = sorted(set(chosen) - set(have))
    if missing:
        raise DataError(f"{run_dir}: no seeds {missing} (the run has seeds {have})")
    if {k: tuple(v) for k, v in meta["dims"].items()} != store.dims():
        raise DataError(f"{run_dir}: model dims differ from the padded feature set's; rerun the experiment")
    folder = tmp / "members" / f"fold{fold}"
    folder.mkdir(parents=True)
    if is_reference(meta["model"]):
        _copy_reference(run_dir, folder, chosen)
    else:
        _copy_weights(run_dir, folder, chosen)
    member_meta = {**meta, "seeds": chosen, "per_seed": {str(s): meta["per_seed"][str(s)] for s in chosen}}
    write_json(folder / MODEL_JSON, member_meta)
    scaler = NumericScaler.from_json(meta["numeric_scaler"])
    train = BatchReader(store, store.index("train", fold), block_rows=BLOCK_ROWS, transform=scaler.apply)
    neutral = neutral_reference(arrays for _, arrays in train.batches(BLOCK_ROWS))
    save_numpy({k: np.ascontiguousarray(v.reshape(v.shape or (1,))) for k, v in neutral.items()},
               str(folder / NEUTRAL_FILE))
    return {"fold": fold, "seeds": chosen, "dir": f"members/fold{fold}", "options": meta["options"],
            "params": meta.get("params", {})}


def _copy_weights(run_dir: Path, folder: Path, seeds: Sequence[int]) -> None:
    """A trained run's weights of ``seeds`` (safetensors keys ``seed{s}/...``)."""
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(run_dir / WEIGHTS_FILE))
    save_file({k: v for k, v in tensors.items() if int(k.split("/", 1)[0][len("seed"):]) in seeds},
              str(folder / WEIGHTS_FILE))


def _copy_reference(run_dir: Path, folder: Path, seeds: Sequence[int]) -> None:
    """A reference run's fitted models of ``seeds``: its skops file, read with the trusted types only and written
    again with the chosen seeds (nothing is refitted)."""
    from memf.training.references import load_reference, save_reference

    models = load_reference(run_dir)
    save_reference(folder / REFERENCE_MODEL_FILE, {seed: models[seed] for seed in seeds})


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
    choice: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Write the bundle of ``experiment``'s runs ``run_dirs`` (fold -> ``results/runs/{experiment}/fold{k}``) to
    ``out``.

    Args:
        padded_path: the feature set's padded store the runs trained on (attributes: extractors, fields, caps,
            dtype; its training parts give the neutral references, read a block at a time).
        data_dir: the validated training dataset (``dataset.json``: column mapping, target, limits).
        features_dir: the training feature store (the numeric shards record each field's transform).
        out: the bundle folder; replaced whole (the new folder is built beside it, then renamed onto it).
        seeds: the seeds to keep (None: every seed of each run).
        level: nominal coverage of the prediction interval.
        extraction_shards: the shard count the features were extracted with (the default for new data).
        choice: recorded as ``choice`` in bundle.json: why this experiment is the bundle ``best``
            (:func:`memf.training.ensemble.choose_best`).

    Returns:
        The bundle's ``bundle.json`` content.
    """
    from memf.padding.store import PaddedStore

    if not run_dirs:
        raise ValueError(f"export {experiment}: no runs to bundle")
    with PaddedStore(padded_path) as store:
        extractors = store.attrs.get("extractors", {})
        if set(extractors) != {"text", "image", "numeric", "video", "audio"}:
            raise DataError(f"{padded_path}: feature set '{store.attrs.get('feature_set')}' was not made by "
                            "extractors (the latent feature set cannot predict new data)")
        bundle = _export(experiment, run_dirs, store, Path(data_dir), Path(features_dir), Path(out), seeds, level,
                         extraction_shards, choice)
    return bundle


def _export(experiment: str, run_dirs: Mapping[int, str | os.PathLike[str]], store: Any, data_dir: Path,
            features_dir: Path, out: Path, seeds: Sequence[int] | None, level: float, extraction_shards: int,
            choice: Mapping[str, Any] | None) -> dict[str, Any]:
    """:func:`export_bundle` on the open store."""
    from memf.core.metrics import regression_metrics
    from memf.predict.intervals import calibrate, seed_mean

    extractors = store.attrs["extractors"]
    dataset = read_json(data_dir / "dataset.json")
    lacking = [k for k in ("columns", "target", "target_offset", "numeric_accepts", "limits") if k not in dataset]
    if lacking:
        raise DataError(f"{data_dir / 'dataset.json'}: no {', '.join(lacking)}; the validated data was written by "
                        "an older memf: run the workflow again (its validate rule rewrites it)")
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    try:
        members = [_write_member(tmp, int(k), Path(d), seeds, store) for k, d in sorted(run_dirs.items())]
        first = _same_experiment({m["fold"]: read_json(tmp / m["dir"] / MODEL_JSON) for m in members}, experiment)
        records = {m: _copy_extractor(e, tmp) for m, e in extractors.items()}
        predictions = {m["fold"]: pl.read_parquet(Path(run_dirs[m["fold"]]) / PREDICTIONS_FILE) for m in members}
        calibration = calibrate(predictions, {m["fold"]: m["seeds"] for m in members}, level)
        tests = pl.concat([seed_mean(predictions[m["fold"]], m["seeds"]).filter(pl.col("split") == "test")
                           for m in members])
        bundle = {
            "format": FORMAT, "experiment": experiment, "model": first["model"],
            "feature_set": store.attrs["feature_set"], "members": members, "folds": int(store.folds),
            "dims": first["dims"], "attention_labels": first.get("attention_labels"),
            "fields": store.attrs["fields"], "caps": store.attrs["caps"], "dtype": store.dtype,
            "columns": dataset["columns"],
            "target": {"offset": float(dataset["target_offset"]), "transform": dataset["target"]},
            "numeric": {"transforms": _numeric_transforms(features_dir, extractors["numeric"]),
                        "accepts": dataset["numeric_accepts"]},
            "limits": dataset["limits"], "extractors": records,
            "extraction": {"shards": int(extraction_shards), "precision": records["text"]["precision"]},
            "intervals": calibration.to_json(), "neutral": NEUTRAL_METHOD,
            "code_versions": stage_versions(records, first["model"]),
            "versions": {"memf": VERSION, **package_versions()},
            "training": {"dataset": dataset["root"], "streams": dataset["streams_kept"], "padded": str(store.path)},
        }
        if choice is not None:
            bundle["choice"] = dict(choice)
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


#: What the ensemble's bundle.json takes from its first member bundle: how new data is prepared and padded.
SHARED_KEYS: tuple[str, ...] = ("feature_set", "folds", "dims", "fields", "caps", "dtype", "columns", "target",
                                "numeric", "limits", "extraction", "versions", "training")


def export_best(
    *,
    ensemble_dirs: Mapping[int, str | os.PathLike[str]],
    candidate_dirs: Mapping[str, Mapping[int, str | os.PathLike[str]]],
    padded_path: str | os.PathLike[str],
    data_dir: str | os.PathLike[str],
    features_dir: str | os.PathLike[str],
    out: str | os.PathLike[str],
    level: float = 0.9,
    extraction_shards: int = 2,
) -> dict[str, Any]:
    """Write the bundle ``best`` to ``out``: the model :func:`memf.training.ensemble.choose_best` picks on the
    validation parts of the ensemble runs ``ensemble_dirs`` (fold -> ``results/runs/ensemble/fold{k}``). A single
    experiment is exported as :func:`export_bundle` does (with the choice recorded); the ensemble holds each member
    experiment's bundle (every fold and seed of ``candidate_dirs[experiment]``) and the weights per fold. Other
    arguments as :func:`export_bundle`. Returns the bundle's ``bundle.json`` content."""
    from memf.training.ensemble import choose_best, members_of

    best = choose_best(ensemble_dirs)
    common = {"padded_path": padded_path, "data_dir": data_dir, "features_dir": features_dir, "level": level,
              "extraction_shards": extraction_shards}
    record = {"choice": best["choice"], "val_mse": best["val_mse"], "rule": CHOICE_RULE}
    if best["choice"] != ENSEMBLE:
        return export_bundle(experiment=best["choice"], run_dirs=candidate_dirs[best["choice"]], out=out,
                             choice=record, **common)
    out = Path(out)
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    try:
        members = list(members_of(best))
        for name in members:
            export_bundle(experiment=name, run_dirs=candidate_dirs[name], out=tmp / "components" / name, **common)
        bundle = _ensemble_meta(tmp, members, best, record, ensemble_dirs, level)
        write_json(tmp / BUNDLE_FILE, bundle)
        _swap_into(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    log.info("bundle %s: the ensemble of %s, interval +-%.3f (log)", out, ", ".join(members), bundle["intervals"]["q"])
    return bundle


#: How ``best`` is chosen, as bundle.json records it.
CHOICE_RULE = ("the lowest validation MSE pooled over folds: each experiment's seed mean, and the ensemble's "
               "cross-fitted on halves of each validation part; a single experiment wins a tie")


def _ensemble_meta(tmp: Path, members: Sequence[str], best: Mapping[str, Any], record: Mapping[str, Any],
                   ensemble_dirs: Mapping[int, str | os.PathLike[str]], level: float) -> dict[str, Any]:
    """bundle.json and metrics.json of the ensemble's bundle in ``tmp`` (its member bundles written): the members'
    way of preparing data (the first member's extractors, their local files copied to ``extractors/`` as in any
    bundle), the weights, and the interval calibrated on the ensemble runs' validation parts."""
    from memf.core.metrics import regression_metrics
    from memf.predict.intervals import calibrate

    first = read_json(tmp / "components" / members[0] / BUNDLE_FILE)
    copies = tmp / "components" / members[0] / "extractors"
    if copies.is_dir():  # the extractors' local files, where any bundle has them (the workflow plans new data so)
        shutil.copytree(copies, tmp / "extractors")
    extractors = first["extractors"]
    predictions = {int(k): pl.read_parquet(Path(d) / PREDICTIONS_FILE) for k, d in ensemble_dirs.items()}
    calibration = calibrate(predictions, {k: [0] for k in predictions}, level)
    tests = pl.concat([p.filter(pl.col("split") == "test") for p in predictions.values()])
    write_json(tmp / BUNDLE_METRICS, {
        "experiment": "best", "interval": calibration.to_json(),
        "test": regression_metrics(tests["y_true"].to_numpy(), tests["y_pred"].to_numpy()),
        "test_streams": tests.height, "note": "test metrics of the ensemble runs on their own test parts, pooled",
    })
    return {
        "format": FORMAT, "experiment": "best", "model": ENSEMBLE, **{k: first[k] for k in SHARED_KEYS},
        "components": {name: f"components/{name}" for name in members},
        "weights": {str(k): {e: w for e, w in ws.items() if e in members} for k, ws in best["weights"].items()},
        "choice": dict(record), "attention_labels": None, "extractors": extractors,
        "intervals": calibration.to_json(), "neutral": NEUTRAL_METHOD,
        "code_versions": stage_versions(extractors, ENSEMBLE),
    }


def _same_experiment(metas: Mapping[int, Mapping[str, Any]], experiment: str) -> Mapping[str, Any]:
    """The first member's model.json, once every member is a run of ``experiment``'s model on its feature set."""
    first = next(iter(metas.values()))
    for k, meta in metas.items():
        if (meta["model"], meta["feature_set"], meta["experiment"]) != (first["model"], first["feature_set"],
                                                                         experiment):
            raise DataError(f"fold {k}: run of {meta['experiment']} ({meta['model']} on {meta['feature_set']}), "
                            f"expected {experiment} ({first['model']} on {first['feature_set']})")
    return first


def _swap_into(tmp: Path, out: Path) -> None:
    """Rename the complete folder ``tmp`` onto ``out``; an old ``out`` is moved aside first and removed after."""
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old)
