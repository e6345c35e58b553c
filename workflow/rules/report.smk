# Tables (paper Tables 7-10, Fig. 5) and figures (Figs. 3-6, Table 9 bars), recomputed from the runs' predictions.


include: "stage2_common.smk"


rule tables:
    input:
        unpack(get_ground_truth),
        runs=get_table_runs,
        ground_truth_json=[GROUND_TRUTH_JSON] if IMPORTANCE_TABLE else [],
    output:
        [report(path, category="Tables") if path.endswith(".md") else path for path in table_outputs()],
    log:
        "logs/report/tables.log",
    params:
        tables=EVALUATION["tables"],
        experiments=config["experiments"],
        seeds=config["seeds"],
        compare_to=EVALUATION["compare_to"],
        bootstrap=EVALUATION["bootstrap"],
        importance_table=IMPORTANCE_TABLE,
        importance_truth=EVALUATION["importance"]["truth"],
        out_dir=lambda wildcards, output: str(Path(output[0]).parent),
    resources:
        mem_mb=2000,
    conda:
        "../../envs/memf.yaml"
    script:
        "../scripts/tables.py"


rule figures:
    input:
        tables=[f"{TABLES_DIR}/{table}.csv" for table in BAR_FIGURES.values()],
        run=get_figure_run,
    output:
        [report(path, category="Figures") for path in figure_outputs()],
    log:
        "logs/report/figures.log",
    params:
        figures=FIGURE_RUN,
        bars=lambda wildcards, input: dict(zip(BAR_FIGURES, input.tables)),
        titles=[EVALUATION["tables"][table].get("title", table) for table in BAR_FIGURES.values()],
        run_dir=lambda wildcards, input: str(Path(input.run[0]).parent) if input.run else None,
        out_dir=lambda wildcards, output: str(Path(output[0]).parent),
    resources:
        mem_mb=2000,
    conda:
        "../../envs/memf.yaml"
    script:
        "../scripts/figures.py"
