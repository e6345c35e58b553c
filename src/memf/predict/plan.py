"""What the workflow's predict chain needs to plan its jobs, read when the workflow loads (no torch, no models).

``predict.bundle`` names either an experiment of the matrix, whose bundle the ``export`` rule writes to
``results/bundles/{experiment}``, or an existing bundle folder. Either way the rules that prepare new data
(``validate`` and ``extract_{modality}`` on ``results/predict/{name}/``) take the bundle's contract and extractors as
their ``params``: from the config for an experiment (what its bundle will record, since the bundle is made from the
artefacts of this very config), from ``bundle.json`` for a folder. The predict job checks the features it is given
against the bundle itself (:func:`memf.predict.predictor.check_features`), so a plan that disagreed with the bundle
would be refused there, not predicted. Standard library only: the workflow reads this at every load, also from an
environment that holds only Snakemake.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from memf.data.contract import numeric_accepts, numeric_transforms
from memf.data.layout import RESULTS
from memf.features.layout import model_dir
from memf.features.spec import HF_KINDS
from memf.training.matrix import BEST, LATENT_FEATURE_SET, ensemble_candidates

BUNDLES_DIR = Path(RESULTS) / "bundles"
PREDICT_DIR = Path(RESULTS) / "predict"
BUNDLE_FILE = "bundle.json"
#: A bundle's files that mark it complete (bundle.json is written last) and its record of test metrics.
BUNDLE_OUTPUTS: tuple[str, ...] = (BUNDLE_FILE, "metrics.json")
#: Files a prediction writes into a dataset to predict's folder (memf.predict.predictor), by role.
PREDICT_FILES: dict[str, str] = {
    "predictions": "predictions.parquet", "drivers": "drivers.parquet", "metrics": "metrics.json",
    "unpredicted": "unpredicted.csv", "padded": "padded.h5", "truncated": "padded.truncated.parquet",
    "figure": "drivers.png",
}
#: Files a what-if writes beside the predict chain's (memf.whatif), by role.
WHATIF_FILES: dict[str, str] = {"table": "whatif.parquet", "csv": "whatif.csv", "summary": "whatif.json"}
#: Files of the drivers' comparison with the simulator's truth (simulated datasets only), by role.
TRUTH_FILES: dict[str, str] = {"json": "drivers_vs_truth.json", "md": "drivers_vs_truth.md", "figure": "drivers_vs_truth.png"}
#: Extractor kinds whose local model folder a bundle copies (their weights, config, tokenizer, processor config): the
#: transformers checkpoints.
FOLDER_KINDS: tuple[str, ...] = HF_KINDS


@dataclass(frozen=True)
class PredictPlan:
    """The bundle new data is predicted with, as the planning rules see it."""

    bundle_dir: Path
    experiment: str | None  # the matrix experiment the workflow exports, or None for an existing bundle folder
    bundle_experiment: str  # the experiment the bundle holds (for titles)
    feature_set: str
    extractors: dict[str, dict[str, Any]]  # modality -> {name, kind, model, options} as the extraction jobs load them
    columns: dict[str, dict[str, list[str]]]
    target_offset: float
    numeric: dict[str, Any]  # an explicit numeric policy (every numeric field named)
    accepts: dict[str, dict[str, str]]
    limits: dict[str, Any]
    precision: str
    shards: int  # the shard count of the bundle's training features (recorded; not used to plan)

    def extractor_config(self, name: str) -> dict[str, Any]:
        entry = next(e for e in self.extractors.values() if e["name"] == name)
        return {"kind": entry["kind"], "model": entry["model"], "options": dict(entry["options"])}


def is_weights_file(value: Any) -> bool:
    """A torchvision ``weights`` option naming a file (not ``none`` or an enum name)."""
    return isinstance(value, str) and ("/" in value or value.endswith((".safetensors", ".pt", ".pth")))


def extractor_signature(entry: Mapping[str, Any]) -> dict[str, Any]:
    """What must be equal between the bundle's record of an extractor and the shards it makes on new data: kind,
    options (a weights file by its hash only), precision, code version, weights id, dimension and preprocessing
    values and sources (not the file names they were read from, which move with the bundle)."""
    options = dict(entry.get("options") or {})
    if is_weights_file(options.get("weights")):
        options["weights"] = "file"
    pre = entry.get("preprocessing")
    return {
        "kind": entry["kind"], "options": options, "precision": entry["precision"],
        "code_version": entry["code_version"], "weights_id": entry.get("weights_id", entry.get("weights")),
        "dim": entry["dim"], "preprocessing": None if pre is None else {"values": pre["values"], "from": pre["from"]},
    }


def extractor_configs(meta: Mapping[str, Any], path: Path) -> dict[str, dict[str, Any]]:
    """Extractor name -> ``{kind, model, options}`` as new data is extracted with a bundle's extractors (record
    ``meta["extractors"]`` of ``bundle.json``): the files the bundle copied are read from its folder ``path``."""
    out = {}
    for rec in meta["extractors"].values():
        options = dict(rec["options"])
        model = rec["model"]
        if rec.get("copy") and rec["kind"] != "torchvision":
            model = str(path / rec["copy"])
        if rec["kind"] == "torchvision" and is_weights_file(options.get("weights")):
            options["weights"] = str(path / options["weights"])
        out[rec["name"]] = {"kind": rec["kind"], "model": model, "options": options}
    return out


def why_not_exportable(config: Mapping[str, Any], name: str) -> str | None:
    """Why ``name`` cannot be made into a bundle with the checked config ``config`` (an experiment of its matrix, or
    ``best``: the ensemble or single experiment that wins on the validation parts, memf.training.ensemble), as a
    sentence saying what to name instead; None when it can. The one place that decides what the ``export`` rules
    make and what ``predict.bundle`` may name."""
    experiments = config["experiments"]
    if name == BEST:
        feature_set = config["ensemble"]["feature_set"]
        if feature_set == LATENT_FEATURE_SET:
            return (f"'{BEST}' chooses among experiments on the simulator's latent factors (ensemble.feature_set), "
                    "which new data does not have; set ensemble.feature_set to a feature set of extractors")
        if config["split"]["mode"] == "fixed":
            return (f"'{BEST}' chooses between the ensemble and its candidates, and the fixed protocol (split.mode: "
                    "fixed, learning curves) fits no ensemble; name an experiment")
        if len(ensemble_candidates(config)) < 2:
            return (f"'{BEST}' chooses among the ensemble's candidates and the config has fewer than two (experiments "
                    f"on ensemble.feature_set '{feature_set}'); name an experiment")
        return None
    entry = experiments.get(name)
    if entry is None:
        return (f"'{name}' is not an experiment of the config (known: {', '.join(sorted(experiments)) or 'none'}); "
                f"name an experiment or {BEST}")
    if entry.get("feature_set") == LATENT_FEATURE_SET:
        return (f"'{name}' reads the simulator's latent factors, which new data does not have; name an experiment on "
                "extracted features")
    return None


def bundle_dir(experiment: str) -> Path:
    """``results/bundles/{experiment}``: the bundle the workflow exports of a trained experiment."""
    return BUNDLES_DIR / experiment


def predict_dir(name: str) -> Path:
    """``results/predict/{name}``: everything about a dataset to predict (its validated data, features, outputs)."""
    return PREDICT_DIR / name


def predict_prefix(name: str) -> str:
    """The path prefix of a dataset to predict (``predict/{name}/``): its validated data is
    ``results/{prefix}data`` and its features ``results/{prefix}features``, as the training data's with no prefix."""
    return f"{predict_dir(name).relative_to(RESULTS).as_posix()}/"


def bundle_dir_of(config: Mapping[str, Any]) -> Path | None:
    """The bundle folder ``predict.bundle`` means (None when prediction is off)."""
    ref = config["predict"]["bundle"]
    if ref is None:
        return None
    return bundle_dir(ref) if ref in config["experiments"] or ref == BEST else Path(ref)


def _bundle_copy(entry: Mapping[str, Any], name: str, bundle_dir: Path, built: set[str]) -> dict[str, Any]:
    """An extractor of the config as the bundle's copy of it loads: a local model folder (or one the workflow
    builds) and a local weights file are read from the bundle."""
    model, options = entry.get("model"), dict(entry.get("options") or {})
    local = isinstance(model, str) and (Path(model).is_dir() or str(Path(model)) in built)
    if entry["kind"] in FOLDER_KINDS and local:
        model = str(bundle_dir / "extractors" / name)
    weights = options.get("weights")
    if entry["kind"] == "torchvision" and is_weights_file(weights):
        options["weights"] = str(bundle_dir / "extractors" / name / Path(weights).name)
    return {"name": name, "kind": entry["kind"], "model": model, "options": options}


def predict_plan(config: Mapping[str, Any]) -> PredictPlan | None:
    """The plan of a checked config (:func:`memf.config.load_config`), or None when ``predict.bundle`` is null."""
    bundle_dir = bundle_dir_of(config)
    if bundle_dir is None:
        return None
    ref = config["predict"]["bundle"]
    if ref in config["experiments"] or ref == BEST:
        feature_set = config["ensemble"]["feature_set"] if ref == BEST else config["experiments"][ref]["feature_set"]
        built = {str(Path(model_dir(n))) for n in config["tiny_models"]}
        chosen = config["feature_sets"][feature_set]
        extractors = {m: _bundle_copy(config["extractors"][name], name, bundle_dir, built) for m, name in chosen.items()}
        transforms = numeric_transforms(config["numeric"], config["columns"])
        return PredictPlan(bundle_dir, ref, ref, feature_set, extractors, config["columns"], float(config["target"]["offset"]),
                           {"default": "log1p", "columns": transforms}, numeric_accepts(config["numeric"], config["columns"]),
                           dict(config["limits"]), config["extraction"]["precision"], int(config["extraction"]["shards"]))
    meta = json.loads((bundle_dir / BUNDLE_FILE).read_text(encoding="utf-8"))
    loads = extractor_configs(meta, bundle_dir)
    extractors = {m: {"name": rec["name"], **loads[rec["name"]]} for m, rec in meta["extractors"].items()}
    return PredictPlan(bundle_dir, None, meta["experiment"], meta["feature_set"], extractors, meta["columns"],
                       float(meta["target"]["offset"]),
                       {"default": "log1p", "columns": meta["numeric"]["transforms"]}, meta["numeric"]["accepts"],
                       dict(meta["limits"]), meta["extraction"]["precision"], int(meta["extraction"]["shards"]))
