"""Snakemake adapter: rule simulate_render -> memf.simulate.render_shard (the media of one shard's streams)."""

from pathlib import Path

from memf.core.logs import job_log
from memf.simulate import render_shard

sm = snakemake  # noqa: F821 (injected by Snakemake)
with job_log(sm.log[0]):
    render_shard(Path(sm.params.root), sm.params.simulator, sm.params.columns, int(sm.wildcards.shard),
                 sm.params.shards)
