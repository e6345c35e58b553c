# Stage 1 helpers: paths of the feature store and the input functions of features.smk.
import json
import re

from memf.data.contract import MODALITY_LIMITS
from memf.features.spec import CLIP_MODALITIES, FEATURE_MODALITIES, identity_json, kind_modality
from memf.training.matrix import LATENT_FEATURE_SET

FEATURES = Path("results/features")
MODELS = Path("results/models")
PADDED = Path("results/padded")
SHARDS = list(range(config["extraction"]["shards"]))
DATA_INPUTS = CLEAN_TABLES + [str(DATA / "dataset.json")]


def _one_of(names):
    """A wildcard constraint matching exactly these names (never matching when there are none)."""
    return "|".join(re.escape(n) for n in sorted(names)) or "(?!)"


def shard_suffix(modality):
    return "h5" if modality in CLIP_MODALITIES else "parquet"


def extractors_of(modality):
    """Names of the configured extractors of one modality."""
    return [name for name, e in config["extractors"].items() if kind_modality(e["kind"]) == modality]


def shard_files(modality, extractor):
    """Every shard of one extractor (what the gather and pad rules read)."""
    return [str(FEATURES / modality / extractor / f"shard-{k}.{shard_suffix(modality)}") for k in SHARDS]


def failure_files(modality, extractor):
    return [str(FEATURES / modality / extractor / f"shard-{k}.failures.parquet") for k in SHARDS]


def manifest_file(modality, extractor):
    return str(FEATURES / modality / extractor / "manifest.json")


def columns_of(modality):
    """The config's column mapping restricted to one modality (so other modalities' columns are not a param)."""
    return {entity: {modality: cols.get(modality, [])} for entity, cols in config["columns"].items()}


def limits_of(modality):
    """The bounds of config `limits` that one modality's extraction depends on."""
    return {key: config["limits"][key] for key in MODALITY_LIMITS[modality]}


def get_model_input(wildcards):
    """The tiny model folder (or local weight file) an extractor loads, when the workflow builds it."""
    entry = config["extractors"][wildcards.extractor]
    refs = [entry.get("model"), (entry.get("options") or {}).get("weights")]
    return [r for r in refs if isinstance(r, str) and Path(r).parts[: len(MODELS.parts)] == MODELS.parts]


def feature_set_shards(feature_set):
    """Modality -> shard files of the extractor that ``feature_sets[feature_set]`` names for it."""
    chosen = config["feature_sets"][feature_set]
    return {m: shard_files(m, chosen[m]) for m in FEATURE_MODALITIES}


def used_feature_sets():
    """Extractor-made feature sets named by experiments (the latent one is the simulator's, not stage 1's)."""
    return sorted({e["feature_set"] for e in config["experiments"].values()} - {LATENT_FEATURE_SET})


def padded_file(feature_set):
    return str(PADDED / f"{feature_set}.h5")


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
