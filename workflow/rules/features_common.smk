# Stage 1 helpers: paths of the feature store and the input functions of features.smk.
import json

from memf.data.contract import MODALITY_LIMITS
from memf.predict.plan import BUNDLE_FILE
from memf.features.layout import MODELS_DIR, failures_path, manifest_path, model_dir, shard_path, store_dir
from memf.features.spec import (
    FEATURE_MODALITIES,
    ExtractionSettings,
    ExtractorSpec,
    identity,
    identity_json,
    kind_modality,
)
from memf.training.matrix import LATENT_FEATURE_SET

SHARDS = list(range(config["extraction"]["shards"]))
DATA_INPUTS = CLEAN_TABLES + [validated_file("dataset.json")]


def extractors_of(modality):
    """Names of the configured extractors of one modality."""
    return [name for name, e in config["extractors"].items() if kind_modality(e["kind"]) == modality]


def shard_files(modality, extractor, prefix=""):
    """Every shard of one extractor in the training store (or a dataset to predict's): what pad and predict read."""
    return [shard_path(store_dir(prefix), modality, extractor, k) for k in SHARDS]


def failure_files(modality, extractor, prefix=""):
    return [failures_path(store_dir(prefix), modality, extractor, k) for k in SHARDS]


def manifest_file(modality, extractor):
    return manifest_path(store_dir(), modality, extractor)


def columns_of(modality, columns=None):
    """The column mapping (the config's by default) restricted to one modality (so other modalities' columns are not
    a param)."""
    return {entity: {modality: cols.get(modality, [])} for entity, cols in (columns or config["columns"]).items()}


def limits_of(modality, limits=None):
    """The bounds of config `limits` (or a bundle's) that one modality's extraction depends on."""
    return {key: (limits or config["limits"])[key] for key in MODALITY_LIMITS[modality]}


def predict_extractor_names(modality):
    """The bundle's extractor of one modality, when datasets are predicted."""
    return [PLAN.extractors[modality]["name"]] if PREDICT_DATASETS else []


def extract_params(modality):
    """The params of the extraction rules (one per modality): for the training store (empty prefix) from the config, for the store of
    a dataset to predict from the bundle (its extractor, loading the bundle's copies of local models; its columns,
    numeric policy and limits). The same keys either way, so a training job's params are what they always were."""

    def predicting(wildcards):
        return bool(wildcards.prefix)

    def extractor(wildcards):
        if predicting(wildcards):
            return PLAN.extractor_config(wildcards.extractor)
        return config["extractors"][wildcards.extractor]

    def ident(wildcards):
        if not predicting(wildcards):
            return identity_json(wildcards.extractor, config["extractors"], config["extraction"])
        spec = ExtractorSpec.from_config(wildcards.extractor, {wildcards.extractor: extractor(wildcards)})
        settings = ExtractionSettings.from_config({**config["extraction"], "precision": PLAN.precision})
        return json.dumps(identity(spec, settings), sort_keys=True)

    def numeric(wildcards):
        if modality != "numeric":
            return None
        return PLAN.numeric if predicting(wildcards) else config["numeric"]

    return {
        "identity": ident,
        "data_dir": lambda wildcards, input: str(Path(input.tables[0]).parent),
        "extractors": lambda wildcards: {wildcards.extractor: extractor(wildcards)},
        "shards": config["extraction"]["shards"],
        "columns": lambda wildcards: columns_of(modality, PLAN.columns if predicting(wildcards) else None),
        # Only what this modality depends on: a numeric policy change reruns the numeric shards alone.
        "numeric": numeric,
        "limits": lambda wildcards: limits_of(modality, PLAN.limits if predicting(wildcards) else None),
    }


def get_extract_inputs(wildcards):
    """The validated tables an extraction job reads, and the model files it loads: for the training data the tiny
    model folder a rule builds; for a dataset to predict its validated tables and the bundle (the copied models).

    A bundle the workflow exports is rewritten whenever its experiment is retrained, while its extractors change only
    with their config (the params) or the models it copies: so its bundle.json is an `ancient` input (it orders the
    jobs without rerunning them) beside the models the bundle copies. A bundle folder of the user's reruns them when
    it is replaced.
    """
    name = predict_name(wildcards.prefix)
    if name is None:
        return {"tables": DATA_INPUTS, "model": get_model_input(wildcards)}
    bundle = str(PLAN.bundle_dir / BUNDLE_FILE)
    if PLAN.experiment is None:
        return {"tables": predict_data_inputs(name), "model": [bundle]}
    return {"tables": predict_data_inputs(name), "model": [ancient(bundle), *model_inputs_of(wildcards.extractor)]}


def model_inputs_of(extractor):
    """The tiny model folder (or local weight file) an extractor of the config loads, when the workflow builds it."""
    entry = config["extractors"][extractor]
    refs = [entry.get("model"), (entry.get("options") or {}).get("weights")]
    return [r for r in refs if isinstance(r, str) and Path(r).parts[: len(Path(MODELS_DIR).parts)] == Path(MODELS_DIR).parts]


def get_model_input(wildcards):
    return model_inputs_of(wildcards.extractor)


def feature_set_shards(feature_set):
    """Modality -> shard files of the extractor that ``feature_sets[feature_set]`` names for it."""
    chosen = config["feature_sets"][feature_set]
    return {m: shard_files(m, chosen[m]) for m in FEATURE_MODALITIES}


def used_feature_sets():
    """Extractor-made feature sets named by experiments (the latent one is the simulator's, not stage 1's)."""
    return sorted({e["feature_set"] for e in config["experiments"].values()} - {LATENT_FEATURE_SET})


def features_targets():
    """The manifests and shards of the extractors every used feature set names (stage 2 asks for the padded files).

    The shards are targets themselves: Snakemake does not rebuild a missing input of an output that is up to date, so
    without them a shard deleted by hand would stay missing.
    """
    targets = []
    for fs in used_feature_sets():
        for m in FEATURE_MODALITIES:
            name = config["feature_sets"][fs][m]
            targets += [manifest_file(m, name), *shard_files(m, name), *failure_files(m, name)]
    return sorted(set(targets))
