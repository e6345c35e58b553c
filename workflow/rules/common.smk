# Shared helpers: config validation, path grammar, and the final targets of each stage.
import json
import os
from pathlib import Path

from snakemake.utils import validate

from memf.data.contract import numeric_accepts


validate(config, schema="../schemas/config.schema.yaml")

# Jobs write their progress bars into per-job log files: one update every 10 s keeps those readable.
os.environ.setdefault("TQDM_MININTERVAL", "10")

RAW = Path(config["dataset"]["root"])
DATA = Path("results/data")
RAW_TABLES = [str(RAW / f"{table}.parquet") for table in ("streams", "anchors", "items", "clips")]
CLEAN_TABLES = [str(DATA / f"{table}.parquet") for table in ("streams", "anchors", "items", "clips")]


def identity(section):
    """A config section as canonical JSON: put it in `params:` so a change reruns the rule and its downstream."""
    return json.dumps(section, sort_keys=True)


def data_targets():
    return [str(DATA / "summary.md"), str(DATA / "excluded.csv")]


def get_final_outputs(wildcards):
    """Everything `snakemake` builds by default: each stage contributes its targets."""
    targets = data_targets()
    for stage in ("features_targets", "report_targets"):
        if stage in globals():
            targets += globals()[stage]()
    return targets
