# Raw data: the live-commerce simulator (demo dataset), and validation into results/data with the folds; datasets to
# predict are validated by the same rule into results/predict/{name}/data (prefix predict/{name}/, no folds).


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
        get_raw_tables,
    output:
        [f"results/{{prefix}}data/{table}.parquet" for table in TABLE_NAMES],
        excluded="results/{prefix}data/excluded.parquet",
        excluded_csv="results/{prefix}data/excluded.csv",
        truncated="results/{prefix}data/truncated.parquet",
        truncated_csv="results/{prefix}data/truncated.csv",
        summary="results/{prefix}data/summary.csv",
        summary_md="results/{prefix}data/summary.md",
        summary_html=report("results/{prefix}data/summary.html", category="Data", caption="../report/summary.rst"),
        excluded_html=report("results/{prefix}data/excluded.html", category="Data", caption="../report/excluded.rst"),
        meta="results/{prefix}data/dataset.json",
    log:
        "logs/{prefix}data/validate.log",
    params:
        root=lambda wildcards, input: str(Path(input[0]).parent),
        out_dir=lambda wildcards, output: str(Path(output.meta).parent),
        columns=lambda wildcards: validate_params(wildcards)["columns"],
        target=lambda wildcards: validate_params(wildcards)["target"],
        max_drop_fraction=config["validation"]["max_drop_fraction"],
        split=lambda wildcards: validate_params(wildcards)["split"],
        code=code_version("validate"),
        # What each numeric column accepts, not its transform: a transform change that accepts the same values
        # reruns the numeric features only (docs/data-format.md, "Numeric policy").
        numeric_accepts=lambda wildcards: validate_params(wildcards)["numeric_accepts"],
        limits=lambda wildcards: validate_params(wildcards)["limits"],
    threads: config["validation"]["probe_workers"]
    wildcard_constraints:
        prefix=PREFIX_REGEX,
    resources:
        mem_mb=2000,
    conda:
        "../../envs/memf.yaml"
    script:
        "../scripts/validate.py"
