"""Snakemake adapter: rule figures -> memf.report.figures.draw_figures."""

from memf.core.logs import job_log
from memf.report.figures import draw_figures

sm = snakemake  # noqa: F821 (injected by Snakemake)
with job_log(sm.log[0]):
    figures = sm.params.figures
    draw_figures(
        sm.params.out_dir,
        run_dir=sm.params.run_dir,
        run_seed=figures["seed"],
        run_label=f"{figures['experiment']} fold {figures['fold']} seed {figures['seed']}",
        bars={name: (csv, title) for (name, csv), title in zip(sm.params.bars.items(), sm.params.titles, strict=True)},
        tuning_records=list(sm.input.tuning),
        attention_streams=figures["attention_streams"],
        sample_seed=figures["sample_seed"],
    )
