"""Snakemake adapter: rule export_best -> memf.predict.export.export_best (the bundle ``best``)."""

from pathlib import Path

from memf.core.logs import job_log
from memf.predict.export import export_best
from memf.training.matrix import ENSEMBLE, run_dir

sm = snakemake  # noqa: F821 (injected by Snakemake)
with job_log(sm.log[0]):
    root = Path(sm.input.runs[0]).parents[2]  # results/runs, as the inputs name it
    folds = [int(k) for k in sm.params.folds]
    export_best(
        ensemble_dirs={k: run_dir(ENSEMBLE, k, root) for k in folds},
        candidate_dirs={name: {k: run_dir(name, k, root) for k in folds} for name in sm.params.candidates},
        padded_path=sm.input.padded,
        data_dir=str(Path(sm.input.tables[0]).parent),
        features_dir=str(Path(sm.input.numeric[0]).parents[2]),
        out=sm.params.out_dir,
        level=sm.params.coverage,
        extraction_shards=sm.params.shards,
    )
