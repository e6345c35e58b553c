"""Job body of tests/slurm/Snakefile: write what this job was given as JSON to its output."""

import logging
import os
import time

from memf.core.gpu import claim_device
from memf.core.io import write_json

snakemake = globals()["snakemake"]  # injected by Snakemake's script directive
logging.basicConfig(level=logging.INFO)
with claim_device("auto") as device:
    record = {
        "rule": snakemake.rule,
        "threads": snakemake.threads,
        "resources": {k: v for k, v in snakemake.resources.items() if k not in ("_cores", "_nodes", "tmpdir")},
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "device": device,
        "pid": os.getpid(),
        "start": time.time(),
    }
    time.sleep(float(snakemake.config.get("hold_s", 0)))
    record["end"] = time.time()
write_json(snakemake.output[0], record)
