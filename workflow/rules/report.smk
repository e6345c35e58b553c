# Tables (paper Tables 7-10, Fig. 5, references, ceilings, tuning) and figures (Figs. 3-6, Table 9 bars, the tuning
# budget), recomputed from the runs' predictions; all of them in `snakemake --report report.html` (docs/report.md).


include: "stage2_common.smk"


rule tables:
    input:
        unpack(get_ground_truth),
        runs=get_table_runs,
        tuning=get_tuning_records,
        ground_truth_json=[GROUND_TRUTH_JSON] if SIMULATED else [],
        probe=get_probe_inputs,
    output:
        [report_table(path) for path in table_outputs()],
    log:
        "logs/report/tables.log",
    params:
        evaluation=EVALUATION,
        experiments=config["experiments"],
        ensemble=config["ensemble"],
        seeds=config["seeds"],
        folds=FOLDS,
        split=config["split"],
        epochs=config["train"]["epochs"],
        padded={EXPERIMENTS[PROBED].feature_set: padded_path(EXPERIMENTS[PROBED].feature_set)} if PROBED else {},
        importance_table=IMPORTANCE_TABLE,
        target_offset=config["target"]["offset"],
        code=code_version("report"),
        out_dir=lambda wildcards, output: str(Path(output[0]).parent),
    resources:
        mem_mb=RESOURCES.mem_mb("tables"),
        runtime=RESOURCES.runtime("tables"),
    conda:
        "../../envs/memf.yaml"
    script:
        "../scripts/tables.py"


rule figures:
    input:
        tables=[f"{TABLES_DIR}/{table}.csv" for table in BAR_FIGURES.values()],
        run=get_figure_run,
        tuning=get_tuning_records,
    output:
        [report(path, category="Figures", caption=f"../report/{Path(path).stem}.rst") for path in figure_outputs()],
    log:
        "logs/report/figures.log",
    params:
        figures=FIGURE_RUN,
        bars=lambda wildcards, input: dict(zip(BAR_FIGURES, input.tables)),
        titles=[EVALUATION["tables"][table].get("title", table) for table in BAR_FIGURES.values()],
        run_dir=lambda wildcards, input: str(Path(input.run[0]).parent) if input.run else None,
        code=code_version("report"),
        out_dir=lambda wildcards, output: str(Path(output[0]).parent),
    resources:
        mem_mb=RESOURCES.mem_mb("figures"),
        runtime=RESOURCES.runtime("figures"),
    conda:
        "../../envs/memf.yaml"
    script:
        "../scripts/figures.py"
