"""Snakemake adapter: rule reference -> memf.training.references.run_reference."""

from memf.core.logs import job_log
from memf.training.references import run_reference

sm = snakemake  # noqa: F821 (injected by Snakemake)
with job_log(sm.log[0]):
    run_reference(
        sm.input.padded,
        sm.params.out_dir,
        experiment=sm.wildcards.experiment,
        model_name=sm.params.experiment["model"],
        options=sm.params.experiment["options"],
        feature_set=sm.params.experiment["feature_set"],
        seed=int(sm.wildcards.seed),
        ground_truth=sm.input.get("ground_truth"),
        threads=sm.threads,
    )
