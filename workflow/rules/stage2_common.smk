# Stage 2 helpers shared by train.smk and report.smk (included by both; Snakemake includes a file once): the
# experiment matrix, its folds, the run and tuning folders, and the final tables and figures (docs/training.md).
from memf.data.folds import FoldPlan
from memf.padding.layout import padded_path
from memf.report.curves import PROBES, probed
from memf.training.matrix import (
    BEST_FILE,
    ENSEMBLE,
    LATENT_FEATURE_SET,
    TRIALS_FILE,
    ensemble_candidates,
    ensemble_experiment,
    experiments_from_config,
    run_dir,
    tuning_dir,
)
from memf.training.settings import PLACEMENT_KEYS, parse_space, space_json

EXPERIMENTS = experiments_from_config(config["experiments"], config["seeds"])
NEURAL = [name for name, exp in EXPERIMENTS.items() if not exp.is_reference]
REFERENCES = [name for name, exp in EXPERIMENTS.items() if exp.is_reference]
#: The ensemble (rule ensemble; memf.training.ensemble) when it has at least two candidates, and every table row.
ENSEMBLE_EXPERIMENT = ensemble_experiment(config)
ENSEMBLE_CANDIDATES = ensemble_candidates(config) if ENSEMBLE_EXPERIMENT else []
ROWS = {**EXPERIMENTS, **ENSEMBLE_EXPERIMENT}
FOLDS = list(config["split"]["run_folds"] or range(run_fold_count(config)))
#: The fixed protocol (split.mode: fixed) writes learning curves (memf.report.curves) instead of pooled tables.
FIXED = FoldPlan.from_config(config["split"]).fixed
SPACES = {name: parse_space(name, spec) for name, spec in config["search_spaces"].items()}
GROUND_TRUTH = str(RAW / "ground_truth.parquet")
GROUND_TRUTH_JSON = str(RAW / "ground_truth.json")
LATENTS = str(RAW / "latents.parquet")
from memf.report.layout import FIGURES_DIR, TABLES_DIR

TABLES = list(EVALUATION["tables"])
FIGURE_RUN = EVALUATION["figures"]
IMPORTANCE_TABLE = EVALUATION["importance"]["table"] if SIMULATED and not FIXED else None
#: The experiment whose entity vectors the curves probe (the fixed protocol on simulated data), or None.
PROBED = probed(EVALUATION["tables"], EXPERIMENTS, EVALUATION["compare_to"]) if SIMULATED and FIXED else None
#: Bar-chart figure -> the table whose CSV it draws (only tables that are written).
BAR_FIGURES = {fig: table for fig, table in (("fig5_fusion_order", "fig5"), ("table9_methods", "table9")) if table in TABLES}
RUN_FIGURES = ["fig3_training_curves", "fig4_scatter_density", "fig6_attention"] if FIGURE_RUN["experiment"] else []
TUNED = [name for name, exp in EXPERIMENTS.items() if exp.search]


def get_ground_truth(wildcards=None):
    """The simulator's ground truth when the dataset is simulated (adds the oracle R^2), else nothing."""
    return {"ground_truth": GROUND_TRUTH} if SIMULATED else {}


def get_fit_inputs(wildcards):
    """The padded feature set, the ground truth on simulated data, and the tuned choice an experiment reuses."""
    exp = EXPERIMENTS[wildcards.experiment]
    inputs = {"padded": padded_path(exp.feature_set), **get_ground_truth()}
    if exp.tuned_as:
        inputs["tuned"] = str(tuning_dir(exp.tuned_as, int(wildcards.fold)) / BEST_FILE)
    return inputs


def get_job_spec(wildcards):
    """Everything that decides one (experiment, fold) job's result, as JSON-able data (a param: a change reruns it)."""
    exp = EXPERIMENTS[wildcards.experiment]
    options = dict(exp.options) if exp.is_reference else {**config["model"], **exp.options}
    return {
        "model": exp.model, "feature_set": exp.feature_set, "options": options, "seeds": list(exp.seeds),
        "space": space_json(SPACES[exp.search]) if exp.search else None, "search": exp.search,
        "tuned_as": exp.tuned_as,
    }


def train_identity():
    """The `train` settings that change a result (the placement keys are read from the config by the script)."""
    return {k: v for k, v in config["train"].items() if k not in PLACEMENT_KEYS}


def run_files(experiment, fold, files=None):
    exp = ROWS[experiment]
    return [str(run_dir(experiment, fold) / name) for name in (files or exp.files)]


def tuning_files(experiment, fold):
    return [str(tuning_dir(experiment, fold) / name) for name in (TRIALS_FILE, BEST_FILE)]


def runs_targets():
    """Every run and tuning folder's files, for all experiments and folds."""
    runs = [f for name in EXPERIMENTS for fold in FOLDS for f in run_files(name, fold) + tuning_files(name, fold)]
    return runs + [f for name in ENSEMBLE_EXPERIMENT for fold in FOLDS for f in run_files(name, fold)]


def table_experiments():
    """Experiments a table row, a comparison or a ceiling needs."""
    names = {row for spec in EVALUATION["tables"].values() for row in spec["rows"]}
    names |= {EVALUATION["compare_to"][ROWS[n].feature_set] for n in list(names)
              if ROWS[n].feature_set in EVALUATION["compare_to"]}
    names |= set(EVALUATION["ceilings"]["latent"]) if SIMULATED else set()
    return sorted(names)


def get_table_runs(wildcards=None):
    """predictions.parquet of every fold of every experiment the tables need (with the ensemble: its model.json, the
    weights, and its candidates, the best single model being one of them)."""
    names = sorted(set(table_experiments()) | set(ENSEMBLE_CANDIDATES) | set(ENSEMBLE_EXPERIMENT))
    files = [f for n in names for fold in FOLDS for f in run_files(n, fold, ("predictions.parquet",))]
    return files + [f for n in ENSEMBLE_EXPERIMENT for fold in FOLDS for f in run_files(n, fold, ("model.json",))]


def get_probe_inputs(wildcards=None):
    """The fixed protocol's probe of MEMF's entity vectors: its store and its runs at the largest size that runs."""
    if not PROBED:
        return []
    plan = FoldPlan.from_config(config["split"])
    largest = max(plan.runs[fold][0] for fold in FOLDS)
    return [padded_path(EXPERIMENTS[PROBED].feature_set)] + [
        f for fold in FOLDS if plan.runs[fold][0] == largest for f in run_files(PROBED, fold, ("weights.safetensors",))]


def get_tuning_records(wildcards=None):
    """trials.parquet of every fold of every tuned experiment (the budget figure and table)."""
    return [str(tuning_dir(n, fold) / TRIALS_FILE) for n in TUNED for fold in FOLDS]


def get_figure_run(wildcards=None):
    if not RUN_FIGURES:
        return []
    return run_files(FIGURE_RUN["experiment"], FIGURE_RUN["fold"],
                     ("metrics.json", "predictions.parquet", "history.parquet", "attention.parquet"))


def table_outputs():
    names = TABLES + (["tuning"] if TUNED else []) + (["entity_importance"] if IMPORTANCE_TABLE else [])
    names += [PROBES] if PROBED else []
    names += [ENSEMBLE] if ENSEMBLE_EXPERIMENT else []
    out = [f"{TABLES_DIR}/{name}.{ext}" for name in names for ext in ("csv", "md", "html")]
    out += [f"{TABLES_DIR}/{ENSEMBLE}.json"] if ENSEMBLE_EXPERIMENT else []
    return out + ([f"{TABLES_DIR}/entity_importance.json"] if IMPORTANCE_TABLE else [])


def report_table(path):
    """A table's HTML page goes into the report (shown inline, with its caption); the CSV and Markdown do not."""
    if not path.endswith(".html"):
        return path
    name = Path(path).stem
    kind = name if name in ("tuning", "entity_importance") else "table"
    return report(path, category="Tables", caption=f"../report/{kind}.rst", labels={"table": name})


def figure_outputs():
    out = [f"{FIGURES_DIR}/{name}.png" for name in RUN_FIGURES + list(BAR_FIGURES)]
    if TUNED:
        out.append(f"{FIGURES_DIR}/tuning_budget.png")
    return out


def report_targets():
    """Stage 2's share of the `all` rule: every run of the matrix (also those in no table), the tables, the figures."""
    return runs_targets() + table_outputs() + figure_outputs()
