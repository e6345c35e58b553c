"""Snakemake adapter: rule predict_truth -> memf.predict.predictor.truth_report (simulated datasets only)."""

from memf.core.logs import job_log
from memf.predict.predictor import truth_report

sm = snakemake  # noqa: F821 (injected by Snakemake)
with job_log(sm.log[0]):
    truth_report(sm.params.out_dir, sm.input.ground_truth, sm.input.get("ground_truth_json"), sm.wildcards.name,
                 sm.params.experiment)
