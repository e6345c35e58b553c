# Data-stage helpers: the shards of the simulator's rendering and of the media probe, and the input functions of
# data.smk. Needs from common.smk: RAW, SIMULATED, get_raw_tables, predict_name.
from memf.data.layout import probe_record_path, render_record_path

RENDER_SHARDS = list(range(config["extraction"]["shards"]))
PROBE_SHARDS = list(range(config["validation"]["probe_shards"]))
SIMULATED_MEDIA = SIMULATED and config["simulator"]["media"]


def has_media(wildcards):
    """Whether the dataset a validate job reads has media: the simulated one only with simulator.media true."""
    return predict_name(wildcards.prefix) is not None or not SIMULATED or config["simulator"]["media"]


def get_render_records(wildcards):
    """The render records of the simulated media, for the jobs that decode them (the DAG orders them after)."""
    root = Path(get_raw_tables(wildcards)[0]).parent
    return [str(render_record_path(RAW, k)) for k in RENDER_SHARDS] if SIMULATED_MEDIA and root == RAW else []


def get_probe_records(wildcards):
    """Every probe shard's record of the dataset, when validation.probe_shards splits the decoding into jobs."""
    if not has_media(wildcards):
        return []
    return [str(probe_record_path(validated_dir(wildcards.prefix), k)) for k in PROBE_SHARDS]
