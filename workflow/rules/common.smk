# Shared helpers: the config check, the path grammar, and the final targets of each stage.
import json
import os
import re
import sys
from pathlib import Path

from memf.config import ConfigError, evaluation_plan, load_config, note_line, run_fold_count, schema_defaults
from memf.core.progress import ProgressHandler, config_sizes, job_costs
from memf.core.version import code_version
from memf.data.contract import TABLES as TABLE_NAMES, numeric_accepts
from memf.data.layout import RESULTS, validated_dir, validated_file
from memf.predict.plan import predict_dir, predict_plan, predict_prefix
from memf.resources import ResourcePlan
from memf.training.matrix import REFERENCE_MODELS
from snakemake.exceptions import WorkflowError
from snakemake.logging import logger as snakemake_logger

# Every mistake the config can hold is caught here, one line each, before anything is planned (docs/configuration.md).
SCHEMA = Path(workflow.current_basedir).parent / "schemas/config.schema.yaml"
try:
    load_config(config, SCHEMA, Path.cwd())
except ConfigError as _error:
    for _line in _error.problems:
        print(f"memf config error: {_line}", file=sys.stderr)
    sys.exit(1)
# The evaluation keeps what the matrix has; one line notes what that changes of the evaluation the user set (an
# evaluation left at the shipped defaults changes nothing the user asked for).
EVALUATION, _notes = evaluation_plan(config, schema_defaults(SCHEMA))
if note_line(_notes):
    print(note_line(_notes), file=sys.stderr)
# Every rule's memory and runtime follow the data: streams, bytes per stream, trials, seeds (docs/cluster.md).
RESOURCES = ResourcePlan(config)
for _line in RESOURCES.notes:
    print(f"memf config note: {_line}", file=sys.stderr)

# Jobs write their progress bars into per-job log files: one update every 10 s keeps those readable.
os.environ.setdefault("TQDM_MININTERVAL", "10")


def time_costs():
    """Rule -> estimated CPU-seconds per job for this config (memf.core.progress), or why there is no estimate yet:
    the jobs' sizes follow the number of streams, the simulator's or, once validated, the dataset's kept streams."""
    if config["dataset"]["simulate"]:
        streams = config["simulator"]["n_streams"]
    else:
        record = Path(validated_file("dataset.json"))
        if not record.is_file():
            return "your dataset's size is known once rule validate has run"
        streams = json.loads(record.read_text(encoding="utf-8")).get("streams_kept")
        if streams is None:
            return f"{record} does not record how many streams were kept"
    return job_costs(config_sizes(config, streams, REFERENCE_MODELS))


def run_cores():
    try:
        return workflow.cores
    except WorkflowError:  # a dry run given no --cores: the estimate is in CPU time
        return None


# The estimated time of the run when the plan is known, then after finished jobs the time left: one `memf time:` line
# each, from Snakemake's own log records (memf.core.progress.ProgressHandler). Attached once per workflow load.
for _handler in [h for h in snakemake_logger.handlers if isinstance(h, ProgressHandler)]:
    snakemake_logger.removeHandler(_handler)
snakemake_logger.addHandler(ProgressHandler(time_costs, run_cores()))

RAW = Path(config["dataset"]["root"])
RAW_TABLES = [str(RAW / f"{table}.parquet") for table in TABLE_NAMES]
CLEAN_TABLES = [validated_file(f"{table}.parquet") for table in TABLE_NAMES]
SIMULATED = config["dataset"]["simulate"]

# Prediction (docs/predict.md): the bundle's contract and extractors, and the datasets to predict. A dataset to
# predict goes through the same validate and extract rules as the training data, into results/predict/{name}/: their
# paths are results/{prefix}data/... and results/{prefix}features/..., the prefix empty for the training data.
PLAN = predict_plan(config)
PREDICT_DATASETS = dict(config["predict"]["datasets"]) if PLAN is not None else {}
PREFIX_OF = {predict_prefix(name): name for name in PREDICT_DATASETS}
PREFIX_REGEX = "(?:" + "|".join(re.escape(p) for p in ["", *PREFIX_OF]) + ")"  # "(?:)" when only the training data


def log_of(output, job=None):
    """A job's log: its output's path under logs/ instead of results/, the file's suffix replaced by .log (or, for a
    job writing a folder, ``job``.log inside the mirrored folder)."""
    rel = Path(output).relative_to(RESULTS).as_posix()
    return f"logs/{rel}/{job}.log" if job else f"logs/{os.path.splitext(rel)[0]}.log"


def names_regex(names):
    """A wildcard constraint matching exactly these names (never matching when there are none)."""
    return "|".join(re.escape(n) for n in sorted(names)) or "(?!)"


def predict_name(prefix):
    """The dataset a path prefix stands for (None: the training data)."""
    return PREFIX_OF[prefix] if prefix else None


def predict_raw_tables(name):
    root = Path(PREDICT_DATASETS[name])
    return [str(root / f"{table}.parquet") for table in TABLE_NAMES]


def predict_data_inputs(name):
    prefix = predict_prefix(name)
    return [validated_file(f"{table}.parquet", prefix) for table in TABLE_NAMES] + [validated_file("dataset.json", prefix)]


def get_raw_tables(wildcards):
    """The raw tables validate reads: the configured dataset's, or (prefix predict/{name}/) a dataset to predict."""
    name = predict_name(wildcards.prefix)
    return RAW_TABLES if name is None else predict_raw_tables(name)


def validate_params(wildcards):
    """The contract a dataset is validated with: the config's for the training data; for a dataset to predict the
    bundle's (its columns, target, numeric policy, limits), with no folds (folds 0: sales optional)."""
    if not wildcards.prefix:
        return {
            "columns": config["columns"], "target": config["target"],
            "split": {k: config["split"][k] for k in (("seed", "folds", "group_by") if config["split"]["mode"] == "kfold"
                      else ("seed", "mode", "validation", "test", "train_sizes", "replicates", "group_by"))},
            "numeric_accepts": numeric_accepts(config["numeric"], config["columns"]), "limits": config["limits"],
        }
    return {
        "columns": PLAN.columns, "target": {"offset": PLAN.target_offset},
        "split": {"seed": 0, "folds": 0, "group_by": None}, "numeric_accepts": PLAN.accepts, "limits": PLAN.limits,
    }


def data_targets():
    return [validated_file("summary.md"), validated_file("excluded.csv")]


def get_final_outputs(wildcards):
    """Everything `snakemake` builds by default: each stage contributes its targets."""
    targets = data_targets()
    for stage in ("features_targets", "report_targets", "predict_targets"):
        if stage in globals():
            targets += globals()[stage]()
    return targets
