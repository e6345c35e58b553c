# Stage 1: tiny local models, feature extraction into the sharded store, and manifests (docs/features.md).
# Needs from common.smk: DATA, CLEAN_TABLES. features_common.smk provides features_targets() for `rule all`.
# Speed and placement settings (extraction.workers, timeout_s, batch_size, device) reach the scripts through the
# config, not through params, so changing them reruns nothing; what changes a feature is in `identity`. The extraction
# rules also extract the datasets to predict, with the bundle's extractors, into results/predict/{name}/features/.
include: "features_common.smk"


rule tiny_model:
    input:
        tables=lambda wildcards: DATA_INPUTS if config["tiny_models"][wildcards.name]["kind"] in ("bert", "xlnet") else [],
    output:
        directory(str(MODELS / "{name}")),
    log:
        "logs/features/tiny_model/{name}.log",
    params:
        data_dir=lambda wildcards, input: str(Path(input.tables[0]).parent) if len(input.tables) else None,
        entry=lambda wildcards: json.dumps(config["tiny_models"][wildcards.name], sort_keys=True),
        columns=config["columns"],
        code=code_version("tiny_model"),
    wildcard_constraints:
        name=_one_of(config["tiny_models"]),
    resources:
        mem_mb=2000,
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
            shard=f"results/{{prefix}}features/{_modality}/{{extractor}}/shard-{{shard}}.{shard_suffix(_modality)}",
            failures=f"results/{{prefix}}features/{_modality}/{{extractor}}/shard-{{shard}}.failures.parquet",
        log:
            f"logs/{{prefix}}features/{_modality}/{{extractor}}/shard-{{shard}}.log",
        params:
            **extract_params(_modality),
        wildcard_constraints:
            prefix=PREFIX_REGEX,
            extractor=_one_of(extractors_of(_modality) + predict_extractor_names(_modality)),
            shard=r"\d+",
        threads: config["extraction"]["workers"]
        resources:
            mem_mb=4000,
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
        str(FEATURES / "{modality}" / "{extractor}" / "manifest.json"),
    log:
        "logs/features/{modality}/{extractor}/manifest.log",
    wildcard_constraints:
        modality=_one_of(FEATURE_MODALITIES),
        extractor=_one_of(config["extractors"]),
    conda:
        "../../envs/memf.yaml"
    script:
        "../scripts/manifest.py"
