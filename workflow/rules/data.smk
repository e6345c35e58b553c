# Raw data: the live-commerce simulator (demo dataset), and validation into results/data with the folds.


if config["dataset"]["simulate"]:

    rule simulate:
        output:
            RAW_TABLES,
            str(RAW / "ground_truth.parquet"),
            str(RAW / "ground_truth.json"),
            str(RAW / "latents.parquet"),
            str(RAW / "defects.parquet"),
            str(RAW / "dataset.json"),
        log:
            "logs/data/simulate.log",
        params:
            root=lambda wildcards, output: str(Path(output[0]).parent),
            simulator=config["simulator"],
            columns=config["columns"],
            code=code_version("simulate"),
        resources:
            mem_mb=2000,
        conda:
            "../../envs/memf.yaml"
        script:
            "../scripts/simulate.py"


rule validate:
    input:
        RAW_TABLES,
    output:
        CLEAN_TABLES,
        excluded=str(DATA / "excluded.parquet"),
        excluded_csv=str(DATA / "excluded.csv"),
        truncated=str(DATA / "truncated.parquet"),
        truncated_csv=str(DATA / "truncated.csv"),
        summary=str(DATA / "summary.csv"),
        summary_md=str(DATA / "summary.md"),
        summary_html=report(str(DATA / "summary.html"), category="Data", caption="../report/summary.rst"),
        excluded_html=report(str(DATA / "excluded.html"), category="Data", caption="../report/excluded.rst"),
        meta=str(DATA / "dataset.json"),
    log:
        "logs/data/validate.log",
    params:
        root=lambda wildcards, input: str(Path(input[0]).parent),
        out_dir=lambda wildcards, output: str(Path(output.meta).parent),
        columns=config["columns"],
        target=config["target"],
        max_drop_fraction=config["validation"]["max_drop_fraction"],
        split={k: config["split"][k] for k in ("seed", "folds", "group_by")},
        code=code_version("validate"),
        # What each numeric column accepts, not its transform: a transform change that accepts the same values
        # reruns the numeric features only (docs/data-format.md, "Numeric policy").
        numeric_accepts=numeric_accepts(config["numeric"], config["columns"]),
        limits=config["limits"],
    threads: config["validation"]["probe_workers"]
    resources:
        mem_mb=2000,
    conda:
        "../../envs/memf.yaml"
    script:
        "../scripts/validate.py"
