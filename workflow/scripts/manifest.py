"""Snakemake adapter: rule features_manifest -> memf.features.store.write_manifest."""

from memf.core.logs import job_log
from memf.features.store import write_manifest

sm = snakemake  # noqa: F821 (injected by Snakemake)
with job_log(sm.log[0]):
    write_manifest(list(sm.input.shards), list(sm.input.failures), sm.output[0])
