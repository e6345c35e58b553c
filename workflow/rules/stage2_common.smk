# Stage 2 helpers shared by train.smk and report.smk (included by both; Snakemake includes a file once):
# the experiment matrix, the run folders, and the final tables and figures (docs/training.md).
import re

from memf.training.matrix import experiments_from_config, run_dir

EXPERIMENTS = experiments_from_config(config["experiments"], config["seeds"])
NEURAL = [name for name, exp in EXPERIMENTS.items() if not exp.is_reference]
REFERENCES = [name for name, exp in EXPERIMENTS.items() if exp.is_reference]
SIMULATED = config["dataset"]["simulate"]
GROUND_TRUTH = str(RAW / "ground_truth.parquet")
GROUND_TRUTH_JSON = str(RAW / "ground_truth.json")

EVALUATION = config["evaluation"]
TABLES = list(EVALUATION["tables"])
TABLES_DIR = "results/tables"
FIGURES_DIR = "results/figures"
FIGURE_RUN = EVALUATION["figures"]
IMPORTANCE_TABLE = EVALUATION["importance"]["table"] if SIMULATED else None
#: Bar-chart figure -> the table whose CSV it draws (only tables present in the config).
BAR_FIGURES = {fig: table for fig, table in (("fig5_fusion_order", "fig5"), ("table9_methods", "table9")) if table in TABLES}
RUN_FIGURES = ["fig3_training_curves", "fig4_scatter_density", "fig6_attention"] if FIGURE_RUN["experiment"] else []
RUN_FIGURE_INPUTS = ("metrics.json", "predictions.parquet", "history.parquet", "attention.parquet")

for _table, _spec in EVALUATION["tables"].items():
    for _row in _spec["rows"]:
        if _row not in EXPERIMENTS:
            raise ValueError(f"evaluation.tables.{_table}.rows: '{_row}' is not an experiment (see config `experiments`)")
for _fs, _name in EVALUATION["compare_to"].items():
    if _name not in EXPERIMENTS:
        raise ValueError(f"evaluation.compare_to.{_fs}: '{_name}' is not an experiment (see config `experiments`)")
if FIGURE_RUN["experiment"] and FIGURE_RUN["experiment"] not in NEURAL:
    raise ValueError(f"evaluation.figures.experiment: '{FIGURE_RUN['experiment']}' is not a neural experiment")
if IMPORTANCE_TABLE and IMPORTANCE_TABLE not in TABLES:
    raise ValueError(f"evaluation.importance.table: '{IMPORTANCE_TABLE}' is not in evaluation.tables")


def names_regex(names):
    """A wildcard constraint matching exactly these experiment names (nothing when the list is empty)."""
    return "|".join(re.escape(n) for n in names) if names else "(?!)"


def get_ground_truth(wildcards=None):
    """The simulator's ground truth when the dataset is simulated (adds the oracle R^2), else nothing."""
    return {"ground_truth": GROUND_TRUTH} if SIMULATED else {}


def get_padded(wildcards):
    return f"results/padded/{EXPERIMENTS[wildcards.experiment].feature_set}.h5"


def get_experiment(wildcards):
    """The run's model, feature set and model options (config `model` overridden by the experiment's `options`)."""
    exp = EXPERIMENTS[wildcards.experiment]
    options = dict(exp.options) if exp.is_reference else {**config["model"], **exp.options}
    return {"model": exp.model, "feature_set": exp.feature_set, "options": options}


def run_files(experiment, seed, files):
    return [str(run_dir(experiment, seed) / name) for name in files]


def runs_targets():
    """Every run folder's files, for all experiments and their seeds."""
    return [f for name, exp in EXPERIMENTS.items() for seed in exp.seeds for f in run_files(name, seed, exp.files)]


def get_table_runs(wildcards=None):
    """predictions.parquet of every seed of every experiment a table row or a comparison needs."""
    names = {row for spec in EVALUATION["tables"].values() for row in spec["rows"]}
    fs = {EXPERIMENTS[n].feature_set for n in names}
    names |= {EVALUATION["compare_to"][f] for f in fs if f in EVALUATION["compare_to"]}
    return [f for n in sorted(names) for seed in EXPERIMENTS[n].seeds for f in run_files(n, seed, ("predictions.parquet",))]


def get_figure_run(wildcards=None):
    return run_files(FIGURE_RUN["experiment"], FIGURE_RUN["seed"], RUN_FIGURE_INPUTS) if RUN_FIGURES else []


def table_outputs():
    out = [f"{TABLES_DIR}/{name}.{ext}" for name in TABLES for ext in ("csv", "md")]
    if IMPORTANCE_TABLE:
        out += [f"{TABLES_DIR}/entity_importance.{ext}" for ext in ("csv", "md", "json")]
    return out


def figure_outputs():
    return [f"{FIGURES_DIR}/{name}.png" for name in RUN_FIGURES + list(BAR_FIGURES)]


def report_targets():
    """Stage 2's share of the `all` rule: every run of the matrix (also those in no table), the tables, the figures."""
    return runs_targets() + table_outputs() + figure_outputs()
