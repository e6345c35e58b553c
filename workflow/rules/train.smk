# Stage 2 runs: padding and masks, then one job per (experiment, fold) of the matrix in config `experiments`: its
# tuning trials on the fold's validation part, then every seed (docs/training.md). Neural models go through rule
# `fit`, the references (mean, ridge, hgb) through rule `fit_reference`; both write results/runs/{experiment}/fold{k}/
# in the same format and results/tuning/{experiment}/fold{k}/, so the tables do not care which made a run.
# Speed and placement settings (train.device, eval_batch_size, checkpoint_every) reach the script through the config,
# not through params, so changing them reruns nothing; the code version of the model and training modules is a param.
from memf.padding.layout import padded_path, truncated_path
from memf.training.matrix import (
    BEST_FILE,
    ENSEMBLE_FILES,
    REFERENCE_FILES,
    TRAINED_FILES,
    TRIALS_FILE,
    run_dir,
    tuning_dir,
)


include: "features_common.smk"
include: "stage2_common.smk"


rule pad:
    input:
        tables=DATA_INPUTS,
        shards=lambda wildcards: sum(feature_set_shards(wildcards.feature_set).values(), []),
    output:
        padded=padded_path("{feature_set}"),
        truncated=truncated_path(padded_path("{feature_set}")),
    log:
        log_of(padded_path("{feature_set}")),
    params:
        data_dir=lambda wildcards, input: str(Path(input.tables[0]).parent),
        shards=lambda wildcards: feature_set_shards(wildcards.feature_set),
        columns=config["columns"],
        padding=config["padding"],
        code=code_version("pad"),
    wildcard_constraints:
        feature_set=names_regex(config["feature_sets"]),
    resources:
        mem_mb=RESOURCES.mem_mb("pad"),
        runtime=RESOURCES.runtime("pad"),
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
            padded=padded_path(LATENT_FEATURE_SET),
        log:
            log_of(padded_path(LATENT_FEATURE_SET)),
        params:
            data_dir=lambda wildcards, input: str(Path(input.tables[0]).parent),
            padding=config["padding"],
            code=code_version("pad"),
        resources:
            mem_mb=RESOURCES.mem_mb("pad_latent"),
            runtime=RESOURCES.runtime("pad_latent"),
        conda:
            "../../envs/memf.yaml"
        script:
            "../scripts/pad_latent.py"


rule fit:
    input:
        unpack(get_fit_inputs),
    output:
        [str(run_dir("{experiment}", "{fold}") / name) for name in TRAINED_FILES],
        trials=str(tuning_dir("{experiment}", "{fold}") / TRIALS_FILE),
        best=str(tuning_dir("{experiment}", "{fold}") / BEST_FILE),
    log:
        log_of(run_dir("{experiment}", "{fold}")),
    params:
        spec=get_job_spec,
        train=train_identity(),
        tuning=config["tuning"],
        code=code_version("fit"),
        out_dir=lambda wildcards, output: str(Path(output[0]).parent),
    threads: 1
    resources:
        mem_mb=RESOURCES.mem_mb("fit"),
        runtime=RESOURCES.runtime("fit"),
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
        [str(run_dir("{experiment}", "{fold}") / name) for name in REFERENCE_FILES],
        trials=str(tuning_dir("{experiment}", "{fold}") / TRIALS_FILE),
        best=str(tuning_dir("{experiment}", "{fold}") / BEST_FILE),
    log:
        log_of(run_dir("{experiment}", "{fold}")),
    params:
        spec=get_job_spec,
        tuning=config["tuning"],
        code=code_version("fit_reference"),
        out_dir=lambda wildcards, output: str(Path(output[0]).parent),
    threads: 1
    resources:
        mem_mb=RESOURCES.mem_mb("fit_reference"),
        runtime=RESOURCES.runtime("fit_reference"),
    wildcard_constraints:
        experiment=names_regex(REFERENCES),
        fold=r"\d+",
    conda:
        "../../envs/memf.yaml"
    script:
        "../scripts/fit.py"


# The ensemble of the candidates' runs (config `ensemble`; memf.training.ensemble): per fold, weights fitted on the
# validation part; a run folder like any other, read by the tables as the row `ensemble`.
rule ensemble:
    input:
        runs=lambda wildcards: [f for name in ENSEMBLE_CANDIDATES
                                for f in run_files(name, int(wildcards.fold), ("predictions.parquet",))],
    output:
        [str(run_dir(ENSEMBLE, "{fold}") / name) for name in ENSEMBLE_FILES],
    log:
        log_of(run_dir(ENSEMBLE, "{fold}")),
    params:
        candidates=ENSEMBLE_CANDIDATES,
        feature_set=config["ensemble"]["feature_set"],
        code=code_version("ensemble"),
        out_dir=lambda wildcards, output: str(Path(output[0]).parent),
    wildcard_constraints:
        fold=r"\d+",
    resources:
        mem_mb=RESOURCES.mem_mb("ensemble"),
        runtime=RESOURCES.runtime("ensemble"),
    conda:
        "../../envs/memf.yaml"
    script:
        "../scripts/ensemble.py"
