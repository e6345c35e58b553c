# Raw data: the live-commerce simulator (demo dataset), and validation into results/data with the folds; datasets to
# predict are validated by the same rule into results/predict/{name}/data (prefix predict/{name}/, no folds).
# The simulator writes its tables in one job and renders its media in one job per shard (extraction.shards; none with
# simulator.media false); validation decodes every media file once, inside its job or, with validation.probe_shards,
# in one probe job per shard whose records it reads (docs/simulator.md, docs/data-format.md).
include: "data_common.smk"


if SIMULATED:

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


if SIMULATED_MEDIA:

    rule simulate_render:
        output:
            str(render_record_path(RAW, "{shard}")),
        log:
            "logs/data/simulate_render/{shard}.log",
        params:
            root=lambda wildcards, output: str(Path(output[0]).parents[1]),
            simulator=config["simulator"],
            columns=config["columns"],
            # The shard count decides which files each record lists (the files' bytes do not depend on it).
            shards=len(RENDER_SHARDS),
            code=code_version("simulate"),
        wildcard_constraints:
            shard=r"\d+",
        resources:
            mem_mb=RESOURCES.mem_mb("simulate_render"),
            runtime=RESOURCES.runtime("simulate_render"),
        conda:
            "../../envs/memf.yaml"
        script:
            "../scripts/simulate_render.py"


if PROBE_SHARDS:

    rule probe_media:
        input:
            tables=get_raw_tables,
            rendered=get_render_records,
        output:
            str(probe_record_path(validated_dir("{prefix}"), "{shard}")),
        log:
            log_of(probe_record_path(validated_dir("{prefix}"), "{shard}")),
        params:
            root=lambda wildcards, input: str(Path(input.tables[0]).parent),
            columns=lambda wildcards: validate_params(wildcards)["columns"],
            limits=lambda wildcards: validate_params(wildcards)["limits"],
            shards=len(PROBE_SHARDS),
            code=code_version("validate"),
        threads: config["validation"]["probe_workers"]
        wildcard_constraints:
            prefix=PREFIX_REGEX,
            shard=r"\d+",
        resources:
            mem_mb=RESOURCES.mem_mb("probe_media"),
            runtime=RESOURCES.runtime("probe_media"),
        conda:
            "../../envs/memf.yaml"
        script:
            "../scripts/probe_media.py"


rule validate:
    input:
        tables=get_raw_tables,
        rendered=lambda wildcards: [] if PROBE_SHARDS else get_render_records(wildcards),
        probes=get_probe_records,
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
        root=lambda wildcards, input: str(Path(input.tables[0]).parent),
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
        # false: a media-free dataset (simulator.media false): no image column or clip path is required or probed.
        media=has_media,
    # The media are decoded here unless probe jobs did (validation.probe_shards) or there are none.
    threads: lambda wildcards: config["validation"]["probe_workers"] if has_media(wildcards) and not PROBE_SHARDS else 1
    wildcard_constraints:
        prefix=PREFIX_REGEX,
    resources:
        mem_mb=RESOURCES.mem_mb("validate"),
        runtime=RESOURCES.runtime("validate"),
    conda:
        "../../envs/memf.yaml"
    script:
        "../scripts/validate.py"
