"""Snakemake adapter: rule pad -> memf.padding.pad.pad_feature_set."""

from memf.core.logs import job_log
from memf.padding.pad import pad_feature_set

sm = snakemake  # noqa: F821 (injected by Snakemake)
with job_log(sm.log[0]):
    pad_feature_set(
        data_dir=sm.params.data_dir,
        feature_set=sm.wildcards.feature_set,
        shards=sm.params.shards,
        columns=sm.params.columns,
        max_items=sm.params.padding["max_items"],
        max_clips=sm.params.padding["max_clips"],
        out=sm.output.padded,
        truncated_out=sm.output.truncated,
        dtype=sm.params.padding["dtype"],
    )
