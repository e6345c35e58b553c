"""Snakemake adapter: rule tables -> memf.report.tables.build_tables."""

from memf.core.logs import job_log
from memf.report.tables import build_tables
from memf.training.matrix import ensemble_experiment, experiments_from_config

sm = snakemake  # noqa: F821 (injected by Snakemake)
with job_log(sm.log[0]):
    evaluation = sm.params.evaluation
    build_tables(
        evaluation["tables"],
        {**experiments_from_config(sm.params.experiments, sm.params.seeds),
         **ensemble_experiment({"experiments": sm.params.experiments, "ensemble": sm.params.ensemble})},
        sm.params.out_dir,
        folds=sm.params.folds,
        compare_to=evaluation["compare_to"],
        n_boot=evaluation["bootstrap"]["n"],
        boot_seed=evaluation["bootstrap"]["seed"],
        level=evaluation["bootstrap"]["level"],
        ground_truth=sm.input.get("ground_truth"),
        ground_truth_json=sm.input.ground_truth_json[0] if sm.input.ground_truth_json else None,
        latent_ceiling=evaluation["ceilings"]["latent"] if sm.input.get("ground_truth") else (),
        importance_table=sm.params.importance_table,
        importance_key=evaluation["importance"]["truth"],
        tuning_records=list(sm.input.tuning),
        target_offset=sm.params.target_offset,
    )
