"""Snakemake adapter: rule simulate -> memf.simulate.simulate."""

from pathlib import Path

from memf.core.logs import job_log
from memf.simulate import simulate

sm = snakemake  # noqa: F821 (injected by Snakemake)
with job_log(sm.log[0]):
    simulate(Path(sm.params.root), sm.params.simulator, sm.params.columns)
