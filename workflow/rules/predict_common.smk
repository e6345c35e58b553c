# Prediction helpers for predict.smk (docs/predict.md): which experiments can be exported, the bundle's inputs, each
# dataset to predict's feature store and ground truth, and the final targets of the predict chain.
# Needs from common.smk: PLAN, PREDICT_DATASETS, predict_data_inputs; from features_common.smk and stage2_common.smk
# the store's and the runs' paths.


from memf.predict.plan import (
    BUNDLE_FILE,
    BUNDLE_OUTPUTS,
    PREDICT_FILES,
    TRUTH_FILES,
    WHATIF_FILES,
    bundle_dir,
    why_not_exportable,
)
from memf.training.matrix import BEST, ENSEMBLE


include: "features_common.smk"
include: "stage2_common.smk"


#: Experiments a bundle can be made of (memf.predict.plan.why_not_exportable: every one on extracted features), and
#: with them `best` when the config has the ensemble (rule export_best).
EXPORTABLE = [name for name in EXPERIMENTS if why_not_exportable(config, name) is None]
BUNDLES = EXPORTABLE + ([BEST] if why_not_exportable(config, BEST) is None else [])
EXPORT_FOLDS = [config["predict"]["fold"]] if config["predict"]["fold"] is not None else FOLDS


def get_export_inputs(wildcards):
    """The runs of every exported fold, the padded feature set they trained on, the validated data's record, the
    numeric shards (their transforms) and the local models of the feature set's extractors (copied into the bundle)."""
    exp = EXPERIMENTS[wildcards.experiment]
    chosen = config["feature_sets"][exp.feature_set]
    files = ("model.json", "reference.skops" if exp.is_reference else "weights.safetensors", "predictions.parquet")
    return {
        "runs": [f for k in EXPORT_FOLDS for f in run_files(wildcards.experiment, k, files)],
        "padded": padded_path(exp.feature_set),
        "tables": DATA_INPUTS,
        "numeric": shard_files("numeric", chosen["numeric"]),
        "models": sorted({path for name in chosen.values() for path in model_inputs_of(name)}),
    }


def get_best_inputs(wildcards):
    """The ensemble's run folders (its weights and the validation errors the choice is made on), and every
    candidate's export inputs: the choice is made in the job, so each candidate may become a member."""
    exp = ROWS[ENSEMBLE]
    chosen = config["feature_sets"][exp.feature_set]
    files = ("model.json", "predictions.parquet")
    runs = [f for k in FOLDS for f in run_files(ENSEMBLE, k, files)]
    for name in ENSEMBLE_CANDIDATES:
        model = "reference.skops" if EXPERIMENTS[name].is_reference else "weights.safetensors"
        runs += [f for k in FOLDS for f in run_files(name, k, (*files, model))]
    return {
        "runs": runs,
        "padded": padded_path(exp.feature_set),
        "tables": DATA_INPUTS,
        "numeric": shard_files("numeric", chosen["numeric"]),
        "models": sorted({path for name in chosen.values() for path in model_inputs_of(name)}),
    }


def get_export_refusal(wildcards):
    """The input of the refuse_export rule. Asked for a bundle the config cannot make, the workflow stops with one
    line saying why (before any job runs, dry runs too)."""
    why = why_not_exportable(config, wildcards.experiment)
    print(f"memf error: cannot make {bundle_dir(wildcards.experiment)}: {why} (bundles this config can make: "
          f"{', '.join(BUNDLES) or 'none'})", file=sys.stderr)
    sys.exit(1)


def predict_shards(name):
    """Modality -> every shard of the bundle's extractor for it in the dataset's own feature store."""
    return {m: shard_files(m, PLAN.extractors[m]["name"], predict_prefix(name)) for m in FEATURE_MODALITIES}


def get_predict_inputs(wildcards):
    return {
        "tables": predict_data_inputs(wildcards.name),
        "shards": sum(predict_shards(wildcards.name).values(), []),
        "bundle": str(PLAN.bundle_dir / BUNDLE_FILE),
    }


def truth_of(name):
    """The simulator's ground truth of a dataset to predict ({} for data without it): the configured simulated
    dataset's (written by rule simulate), or ground_truth.parquet/.json found in the dataset's folder."""
    root = PREDICT_DATASETS[name]
    if SIMULATED and root == config["dataset"]["root"]:
        return {"ground_truth": GROUND_TRUTH, "ground_truth_json": GROUND_TRUTH_JSON}
    folder = Path(root)
    if not (folder / "ground_truth.parquet").is_file():
        return {}
    out = {"ground_truth": str(folder / "ground_truth.parquet")}
    if (folder / "ground_truth.json").is_file():
        out["ground_truth_json"] = str(folder / "ground_truth.json")
    return out


TRUTH_DATASETS = [name for name in PREDICT_DATASETS if truth_of(name)]


#: Dataset to predict -> its what-if variants file (config predict.whatif).
WHATIF = dict(config["predict"]["whatif"]) if PLAN is not None else {}


def get_whatif_inputs(wildcards):
    """The bundle, the dataset's predictions (its padded store and validated data are in the same folder) and the
    variants file."""
    folder = predict_dir(wildcards.name)
    return {"bundle": str(PLAN.bundle_dir / BUNDLE_FILE), "predictions": str(folder / PREDICT_FILES["predictions"]),
            "variants": WHATIF[wildcards.name]}


def get_truth_inputs(wildcards):
    return {**truth_of(wildcards.name), "drivers": str(predict_dir(wildcards.name) / PREDICT_FILES["drivers"])}


def predict_targets():
    """The bundle the workflow exports, and for each dataset to predict its files and its feature store's shards
    (targets themselves, so a shard deleted by hand is replanned)."""
    if PLAN is None:
        return []
    targets = [str(PLAN.bundle_dir / name) for name in BUNDLE_OUTPUTS] if PLAN.experiment else []
    for name in PREDICT_DATASETS:
        prefix = predict_prefix(name)
        targets += [str(predict_dir(name) / file) for file in PREDICT_FILES.values()]
        targets += [validated_file(file, prefix) for file in ("summary.md", "excluded.csv")]
        for m in FEATURE_MODALITIES:
            extractor = PLAN.extractors[m]["name"]
            targets += shard_files(m, extractor, prefix) + failure_files(m, extractor, prefix)
        if name in TRUTH_DATASETS:
            targets += [str(predict_dir(name) / file) for file in TRUTH_FILES.values()]
        if name in WHATIF:
            targets += [str(predict_dir(name) / file) for file in WHATIF_FILES.values()]
    return targets
