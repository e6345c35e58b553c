"""Snakemake adapter: rule tiny_model -> memf.features.tiny.tiny_model_from_config."""

import json

from memf.core.logs import job_log
from memf.features.tiny import tiny_model_from_config

sm = snakemake  # noqa: F821 (injected by Snakemake)
with job_log(sm.log[0]):
    tiny_model_from_config(json.loads(sm.params.entry), sm.output[0], data_dir=sm.params.data_dir, columns=sm.params.columns)
