"""Snakemake adapter: rules extract_{modality} -> memf.features.extract.extract_shard on a claimed device."""

import json

from memf.core.gpu import claim_device
from memf.core.logs import job_log
from memf.features.extract import extract_shard

sm = snakemake  # noqa: F821 (injected by Snakemake)
# Speed and placement settings come from the config (changing them reruns nothing); the shard count is a param, and
# the precision is the identity's (a bundle's extractor keeps the precision it was trained with).
extraction = {**sm.config["extraction"], "shards": sm.params.shards,
              "precision": json.loads(sm.params.identity)["precision"]}
with job_log(sm.log[0]), claim_device(extraction["device"]) as device:
    extract_shard(
        data_dir=sm.params.data_dir,
        extractors=sm.params.extractors,
        name=sm.wildcards.extractor,
        columns=sm.params.columns,
        extraction=extraction,
        shard=int(sm.wildcards.shard),
        out=sm.output.shard,
        failures_out=sm.output.failures,
        device=device,
        threads=sm.threads,
        numeric=sm.params.numeric,
        limits=sm.params.limits,
    )
