"""Snakemake adapter: rule export -> memf.predict.export.export_bundle (one experiment's bundle)."""

from pathlib import Path

from memf.core.logs import job_log
from memf.predict.export import export_bundle

sm = snakemake  # noqa: F821 (injected by Snakemake)
with job_log(sm.log[0]):
    runs = {int(Path(p).parent.name[len("fold"):]): str(Path(p).parent) for p in sm.input.runs}
    export_bundle(
        experiment=sm.wildcards.experiment,
        run_dirs=runs,
        padded_path=sm.input.padded,
        data_dir=str(Path(sm.input.tables[0]).parent),
        features_dir=str(Path(sm.input.numeric[0]).parents[2]),
        out=sm.params.out_dir,
        seeds=sm.params.seeds,
        level=sm.params.coverage,
        extraction_shards=sm.params.shards,
    )
