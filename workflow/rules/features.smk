# Stage 1: tiny local models, feature extraction into the sharded store, and manifests (docs/features.md).
# Needs from common.smk: CLEAN_TABLES, log_of, names_regex. features_common.smk provides features_targets() for `rule all`.
# Speed and placement settings (extraction.workers, timeout_s, batch_size, device) reach the scripts through the
# config, not through params, so changing them reruns nothing; what changes a feature is in `identity`. The extraction
# rules also extract the datasets to predict, with the bundle's extractors, into results/predict/{name}/features/.
include: "features_common.smk"


rule tiny_model:
    input:
        tables=lambda wildcards: DATA_INPUTS if config["tiny_models"][wildcards.name]["kind"] in ("bert", "xlnet") else [],
    output:
        directory(model_dir("{name}")),
    log:
        log_of(model_dir("{name}")),
    params:
        data_dir=lambda wildcards, input: str(Path(input.tables[0]).parent) if len(input.tables) else None,
        entry=lambda wildcards: json.dumps(config["tiny_models"][wildcards.name], sort_keys=True),
        columns=config["columns"],
        code=code_version("tiny_model"),
    wildcard_constraints:
        name=names_regex(config["tiny_models"]),
    resources:
        mem_mb=RESOURCES.mem_mb("tiny_model"),
        runtime=RESOURCES.runtime("tiny_model"),
    conda:
        "../../envs/memf.yaml"
    script:
        "../scripts/tiny_model.py"


for _modality in FEATURE_MODALITIES:

    rule:
        name:
            f"extract_{_modality}"
        input:
            unpack(get_extract_inputs),
        output:
            shard=shard_path(store_dir("{prefix}"), _modality, "{extractor}", "{shard}"),
            failures=failures_path(store_dir("{prefix}"), _modality, "{extractor}", "{shard}"),
        log:
            log_of(shard_path(store_dir("{prefix}"), _modality, "{extractor}", "{shard}")),
        params:
            **extract_params(_modality),
        wildcard_constraints:
            prefix=PREFIX_REGEX,
            extractor=names_regex(extractors_of(_modality) + predict_extractor_names(_modality)),
            shard=r"\d+",
        threads: config["extraction"]["workers"]
        resources:
            mem_mb=RESOURCES.mem_mb(f"extract_{_modality}"),
            runtime=RESOURCES.runtime(f"extract_{_modality}"),
            gpu=0 if _modality == "numeric" else 1,
        conda:
            "../../envs/memf.yaml"
        script:
            "../scripts/extract.py"


rule features_manifest:
    input:
        shards=lambda wildcards: shard_files(wildcards.modality, wildcards.extractor),
        failures=lambda wildcards: failure_files(wildcards.modality, wildcards.extractor),
    output:
        manifest_path(store_dir(), "{modality}", "{extractor}"),
    log:
        log_of(manifest_path(store_dir(), "{modality}", "{extractor}")),
    wildcard_constraints:
        modality=names_regex(FEATURE_MODALITIES),
        extractor=names_regex(config["extractors"]),
    resources:
        mem_mb=RESOURCES.mem_mb("features_manifest"),
        runtime=RESOURCES.runtime("features_manifest"),
    conda:
        "../../envs/memf.yaml"
    script:
        "../scripts/manifest.py"
