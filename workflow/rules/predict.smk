# Predicting upcoming streams (docs/predict.md): the model bundle of a trained experiment (rule export), then each
# dataset of config `predict.datasets`, validated (rule validate) and extracted (rules extract_{modality}) into
# results/predict/{name}/ with the bundle's contract and extractors, then padded and predicted (rule predict) and, on
# simulated data, its drivers compared with the simulator's truth (rule predict_truth). Placement (train.device,
# train.eval_batch_size) reaches the predict script through the config: changing it reruns nothing.


include: "predict_common.smk"


rule export:
    input:
        unpack(get_export_inputs),
    output:
        [f"results/bundles/{{experiment}}/{name}" for name in BUNDLE_OUTPUTS],
    log:
        "logs/predict/export/{experiment}.log",
    params:
        folds=EXPORT_FOLDS,
        seeds=config["predict"]["seeds"],
        coverage=config["predict"]["coverage"],
        shards=config["extraction"]["shards"],
        code=code_version("export"),
        out_dir=lambda wildcards, output: str(Path(output[0]).parent),
    wildcard_constraints:
        experiment=names_regex(EXPORTABLE),
    resources:
        mem_mb=4000,
    conda:
        "../../envs/memf.yaml"
    script:
        "../scripts/export.py"


rule predict:
    input:
        unpack(get_predict_inputs),
    output:
        **{key: f"results/predict/{{name}}/{file}" for key, file in PREDICT_OUTPUTS.items()},
        figure=report("results/predict/{name}/drivers.png", category="Predictions", caption="../report/predict_drivers.rst"),
    log:
        "logs/predict/{name}/predict.log",
    params:
        shards=lambda wildcards: predict_shards(wildcards.name),
        figure_streams=config["predict"]["figure_streams"],
        code=code_version("predict"),
        out_dir=lambda wildcards, output: str(Path(output.predictions).parent),
    wildcard_constraints:
        name=names_regex(list(PREDICT_DATASETS)),
    threads: 1
    resources:
        mem_mb=4000,
    conda:
        "../../envs/memf.yaml"
    script:
        "../scripts/predict.py"


rule predict_truth:
    input:
        unpack(get_truth_inputs),
    output:
        json="results/predict/{name}/drivers_vs_truth.json",
        md="results/predict/{name}/drivers_vs_truth.md",
        figure=report("results/predict/{name}/drivers_vs_truth.png", category="Predictions",
                      caption="../report/predict_truth.rst"),
    log:
        "logs/predict/{name}/truth.log",
    params:
        experiment=PLAN.bundle_experiment if PLAN is not None else None,
        code=code_version("predict"),
        out_dir=lambda wildcards, output: str(Path(output.json).parent),
    wildcard_constraints:
        name=names_regex(TRUTH_DATASETS),
    resources:
        mem_mb=2000,
    conda:
        "../../envs/memf.yaml"
    script:
        "../scripts/predict_truth.py"
