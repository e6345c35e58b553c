# Shared helpers: the config check, the path grammar, and the final targets of each stage.
import json
import os
import sys
from pathlib import Path

from memf.core.config import ConfigError, evaluation_plan, load_config
from memf.core.version import code_version
from memf.data.contract import numeric_accepts

# Every mistake the config can hold is caught here, one line each, before anything is planned (docs/configuration.md).
try:
    load_config(config, Path(workflow.current_basedir).parent / "schemas/config.schema.yaml", Path.cwd())
except ConfigError as _error:
    for _line in _error.problems:
        print(f"memf config error: {_line}", file=sys.stderr)
    sys.exit(1)
EVALUATION, _notes = evaluation_plan(config)
for _line in _notes:
    print(f"memf config note: {_line}", file=sys.stderr)

# Jobs write their progress bars into per-job log files: one update every 10 s keeps those readable.
os.environ.setdefault("TQDM_MININTERVAL", "10")

RAW = Path(config["dataset"]["root"])
DATA = Path("results/data")
RAW_TABLES = [str(RAW / f"{table}.parquet") for table in ("streams", "anchors", "items", "clips")]
CLEAN_TABLES = [str(DATA / f"{table}.parquet") for table in ("streams", "anchors", "items", "clips")]
SIMULATED = config["dataset"]["simulate"]


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
