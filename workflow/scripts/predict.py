"""Snakemake adapter: rule predict -> memf.predict.predictor.predict_features on the dataset's validated tables and
the shards the extraction rules made with the bundle's extractors."""

from pathlib import Path

import torch

from memf.core.gpu import claim_device
from memf.core.logs import job_log
from memf.predict.predictor import load_bundle, predict_features

sm = snakemake  # noqa: F821 (injected by Snakemake)
with job_log(sm.log[0]):
    torch.set_num_threads(sm.threads)
    # Placement comes from the config (changing it reruns nothing).
    with claim_device(sm.config["train"]["device"]) as device:
        predict_features(
            load_bundle(Path(sm.input.bundle).parent, device=device),
            Path(sm.input.tables[0]).parent,
            sm.params.shards,
            sm.params.out_dir,
            figure_streams=sm.params.figure_streams,
            batch_size=sm.config["train"]["eval_batch_size"],
            name=sm.wildcards.name,
        )
