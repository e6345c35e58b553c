"""Snakemake adapter: rule simulate -> memf.simulate.write_tables (the tables, truth, latents and defect records; the
media are rendered by rule simulate_render, one job per shard)."""

from pathlib import Path

from memf.core.logs import job_log
from memf.simulate import write_tables

sm = snakemake  # noqa: F821 (injected by Snakemake)
with job_log(sm.log[0]):
    write_tables(Path(sm.params.root), sm.params.simulator, sm.params.columns)
