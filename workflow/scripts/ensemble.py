"""Snakemake adapter: rule ensemble -> memf.training.ensemble.fit_ensemble for one fold."""

from pathlib import Path

from memf.core.logs import job_log
from memf.training.ensemble import fit_ensemble

sm = snakemake  # noqa: F821 (injected by Snakemake)
with job_log(sm.log[0]):
    runs = {name: str(Path(path).parent) for name, path in zip(sm.params.candidates, sm.input.runs)}
    fit_ensemble(runs, int(sm.wildcards.fold), sm.params.out_dir, sm.params.feature_set)
