# Stage 2 runs: padding and masks, then one job per (experiment, fold) of the matrix in config `experiments`: its
# tuning trials on the fold's validation part, then every seed (docs/training.md). Neural models go through rule
# `fit`, the references (mean, ridge, hgb) through rule `fit_reference`; both write results/runs/{experiment}/fold{k}/
# in the same format and results/tuning/{experiment}/fold{k}/, so the tables do not care which made a run.
# Speed and placement settings (train.device, eval_batch_size, checkpoint_every) reach the script through the config,
# not through params, so changing them reruns nothing; the code version of the model and training modules is a param.
from memf.training.matrix import REFERENCE_FILES, TRAINED_FILES


include: "features_common.smk"
include: "stage2_common.smk"


rule pad:
    input:
        tables=DATA_INPUTS,
        shards=lambda wildcards: sum(feature_set_shards(wildcards.feature_set).values(), []),
    output:
        padded=str(PADDED / "{feature_set}.h5"),
        truncated=str(PADDED / "{feature_set}.truncated.parquet"),
    log:
        "logs/train/pad/{feature_set}.log",
    params:
        data_dir=lambda wildcards, input: str(Path(input.tables[0]).parent),
        shards=lambda wildcards: feature_set_shards(wildcards.feature_set),
        columns=config["columns"],
        padding=config["padding"],
        code=code_version("pad"),
    wildcard_constraints:
        feature_set=_one_of(config["feature_sets"]),
    resources:
        mem_mb=4000,
    conda:
        "../../envs/memf.yaml"
    script:
        "../scripts/pad.py"


if SIMULATED:

    rule pad_latent:
        input:
            tables=DATA_INPUTS,
            latents=LATENTS,
            truth=GROUND_TRUTH_JSON,
        output:
            padded=str(PADDED / f"{LATENT_FEATURE_SET}.h5"),
        log:
            "logs/train/pad/latent.log",
        params:
            data_dir=lambda wildcards, input: str(Path(input.tables[0]).parent),
            padding=config["padding"],
            code=code_version("pad"),
        resources:
            mem_mb=2000,
        conda:
            "../../envs/memf.yaml"
        script:
            "../scripts/pad_latent.py"


rule fit:
    input:
        unpack(get_fit_inputs),
    output:
        [f"results/runs/{{experiment}}/fold{{fold}}/{name}" for name in TRAINED_FILES],
        trials="results/tuning/{experiment}/fold{fold}/trials.parquet",
        best="results/tuning/{experiment}/fold{fold}/best.json",
    log:
        "logs/train/{experiment}/fold{fold}.log",
    params:
        spec=get_job_spec,
        train=train_identity(),
        tuning=config["tuning"],
        code=code_version("fit"),
        out_dir=lambda wildcards, output: str(Path(output[0]).parent),
    threads: 1
    resources:
        mem_mb=3000,
    wildcard_constraints:
        experiment=names_regex(NEURAL),
        fold=r"\d+",
    conda:
        "../../envs/memf.yaml"
    script:
        "../scripts/fit.py"


rule fit_reference:
    input:
        unpack(get_fit_inputs),
    output:
        [f"results/runs/{{experiment}}/fold{{fold}}/{name}" for name in REFERENCE_FILES],
        trials="results/tuning/{experiment}/fold{fold}/trials.parquet",
        best="results/tuning/{experiment}/fold{fold}/best.json",
    log:
        "logs/train/{experiment}/fold{fold}.log",
    params:
        spec=get_job_spec,
        tuning=config["tuning"],
        code=code_version("fit_reference"),
        out_dir=lambda wildcards, output: str(Path(output[0]).parent),
    threads: 1
    resources:
        mem_mb=3000,
    wildcard_constraints:
        experiment=names_regex(REFERENCES),
        fold=r"\d+",
    conda:
        "../../envs/memf.yaml"
    script:
        "../scripts/fit.py"
