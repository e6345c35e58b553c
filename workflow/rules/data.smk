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
            mem_mb=RESOURCES.mem_mb("simulate"),
            runtime=RESOURCES.runtime("simulate"),
        conda:
            "../../envs/memf.yaml"
        script:
            "../scripts/simulate.py"


rule validate:
    input:
        get_raw_tables,
    output:
        [validated_file(f"{table}.parquet", "{prefix}") for table in TABLE_NAMES],
        excluded=validated_file("excluded.parquet", "{prefix}"),
        excluded_csv=validated_file("excluded.csv", "{prefix}"),
        truncated=validated_file("truncated.parquet", "{prefix}"),
        truncated_csv=validated_file("truncated.csv", "{prefix}"),
        summary=validated_file("summary.csv", "{prefix}"),
        summary_md=validated_file("summary.md", "{prefix}"),
        summary_html=report(validated_file("summary.html", "{prefix}"), category="Data", caption="../report/summary.rst"),
        excluded_html=report(validated_file("excluded.html", "{prefix}"), category="Data", caption="../report/excluded.rst"),
        meta=validated_file("dataset.json", "{prefix}"),
    log:
        log_of(validated_dir("{prefix}"), "validate"),
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
        mem_mb=RESOURCES.mem_mb("validate"),
        runtime=RESOURCES.runtime("validate"),
    conda:
        "../../envs/memf.yaml"
    script:
        "../scripts/validate.py"
