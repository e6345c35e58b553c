"""Snakemake adapter: rule tables -> memf.report.tables.build_tables (K-fold), or memf.report.curves.build_curves (the
fixed protocol: learning curves)."""

from pathlib import Path

from memf.core.logs import job_log
from memf.data.folds import FoldPlan
from memf.report.curves import Curves, build_curves
from memf.report.tables import build_tables, write_tuning
from memf.training.matrix import ensemble_experiment, experiments_from_config

sm = snakemake  # noqa: F821 (injected by Snakemake)
with job_log(sm.log[0]):
    evaluation = sm.params.evaluation
    experiments = {**experiments_from_config(sm.params.experiments, sm.params.seeds),
                   **ensemble_experiment({"experiments": sm.params.experiments, "ensemble": sm.params.ensemble,
                                          "split": sm.params.split})}
    boot = evaluation["bootstrap"]
    plan = FoldPlan.from_config(sm.params.split)
    if plan.fixed:
        curves = Curves(experiments, plan, sm.params.folds, evaluation["compare_to"], Path(sm.input.ground_truth),
                        Path(sm.input.ground_truth_json[0]), sm.params.epochs, list(sm.input.tuning), boot["n"],
                        boot["seed"], boot["level"])
        build_curves(evaluation["tables"], curves, sm.params.out_dir, sm.params.padded)
        if sm.input.tuning:
            write_tuning(sm.params.out_dir, list(sm.input.tuning), experiments)
    else:
        build_tables(
            evaluation["tables"],
            experiments,
            sm.params.out_dir,
            folds=sm.params.folds,
            compare_to=evaluation["compare_to"],
            n_boot=boot["n"],
            boot_seed=boot["seed"],
            level=boot["level"],
            ground_truth=sm.input.get("ground_truth"),
            ground_truth_json=sm.input.ground_truth_json[0] if sm.input.ground_truth_json else None,
            latent_ceiling=evaluation["ceilings"]["latent"] if sm.input.get("ground_truth") else (),
            importance_table=sm.params.importance_table,
            importance_key=evaluation["importance"]["truth"],
            tuning_records=list(sm.input.tuning),
            target_offset=sm.params.target_offset,
        )
