"""Snakemake adapter: rule train -> memf.training.train.run_training."""

import torch

from memf.core.logs import job_log
from memf.training.train import run_training

sm = snakemake  # noqa: F821 (injected by Snakemake)
with job_log(sm.log[0]):
    torch.set_num_threads(sm.threads)
    run_training(
        sm.input.padded,
        sm.params.out_dir,
        experiment=sm.wildcards.experiment,
        model_name=sm.params.experiment["model"],
        options=sm.params.experiment["options"],
        feature_set=sm.params.experiment["feature_set"],
        seed=int(sm.wildcards.seed),
        train_cfg=dict(sm.params.train),
        ground_truth=sm.input.get("ground_truth"),
    )
