"""Snakemake adapter: rule tables -> memf.report.tables.build_tables."""

from memf.core.logs import job_log
from memf.training.matrix import experiments_from_config
from memf.report.tables import build_tables

sm = snakemake  # noqa: F821 (injected by Snakemake)
with job_log(sm.log[0]):
    build_tables(
        sm.params.tables,
        experiments_from_config(sm.params.experiments, sm.params.seeds),
        sm.params.out_dir,
        compare_to=sm.params.compare_to,
        n_boot=sm.params.bootstrap["n"],
        boot_seed=sm.params.bootstrap["seed"],
        level=sm.params.bootstrap["level"],
        ground_truth=sm.input.get("ground_truth"),
        ground_truth_json=sm.input.ground_truth_json[0] if sm.input.ground_truth_json else None,
        importance_table=sm.params.importance_table,
        importance_key=sm.params.importance_truth,
    )
