"""Snakemake adapter: rule whatif -> memf.whatif.core.answer on a predicted dataset's folder."""

from pathlib import Path

import torch

from memf.core.logs import job_log
from memf.predict.predictor import load_bundle
from memf.whatif.core import answer, read_variants, with_plans, write_answer

sm = snakemake  # noqa: F821 (injected by Snakemake)
with job_log(sm.log[0]):
    torch.set_num_threads(sm.threads)
    bundle = load_bundle(Path(sm.input.bundle).parent)
    frame, summary = answer(bundle, sm.params.out_dir, sm.params.dataset, with_plans(read_variants(sm.input.variants)))
    write_answer(sm.params.out_dir, frame, summary)
