"""Snakemake adapter: rule probe_media -> memf.data.validate.probe_shard (decode one shard's media files once)."""

from memf.core.logs import job_log
from memf.data.validate import probe_shard

sm = snakemake  # noqa: F821 (injected by Snakemake)
with job_log(sm.log[0]):
    probe_shard(
        sm.params.root,
        sm.output[0],
        columns=sm.params.columns,
        shard=int(sm.wildcards.shard),
        shards=sm.params.shards,
        limits=sm.params.limits,
        probe_workers=sm.threads,
        probe_timeout_s=sm.config["validation"]["probe_timeout_s"],  # speed only: read from the config, not a param
    )
