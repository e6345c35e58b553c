"""Snakemake adapter: rule validate -> memf.data.validate.validate_dataset."""

from memf.core.logs import job_log
from memf.data.folds import FoldPlan
from memf.data.validate import validate_dataset

sm = snakemake  # noqa: F821 (injected by Snakemake)
with job_log(sm.log[0]):
    validate_dataset(
        sm.params.root,
        sm.params.out_dir,
        columns=sm.params.columns,
        target_offset=sm.params.target["offset"],
        max_drop_fraction=sm.params.max_drop_fraction,
        split_seed=sm.params.split["seed"],
        folds=sm.params.split.get("folds", 0),
        fixed=FoldPlan.from_config(sm.params.split) if sm.params.split.get("mode") == "fixed" else None,
        group_by=sm.params.split["group_by"],
        probe_workers=sm.threads,
        probe_timeout_s=sm.config["validation"]["probe_timeout_s"],  # speed only: read from the config, not a param
        numeric_accepts=sm.params.numeric_accepts,
        limits=sm.params.limits,
        media=sm.params.media,
        probes=list(sm.input.probes) or None,  # the probe jobs' records (validation.probe_shards), else decode here
    )
