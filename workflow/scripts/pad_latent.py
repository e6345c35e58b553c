"""Snakemake adapter: rule pad_latent -> memf.padding.pad.pad_latents (the latent ceiling's feature set)."""

from memf.core.logs import job_log
from memf.padding.pad import pad_latents

sm = snakemake  # noqa: F821 (injected by Snakemake)
with job_log(sm.log[0]):
    pad_latents(
        data_dir=sm.params.data_dir,
        latents=sm.input.latents,
        max_items=sm.params.padding["max_items"],
        max_clips=sm.params.padding["max_clips"],
        out=sm.output.padded,
        ground_truth_json=sm.input.truth,
        dtype=sm.params.padding["dtype"],
    )
