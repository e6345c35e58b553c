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
        [str(bundle_dir("{experiment}") / name) for name in BUNDLE_OUTPUTS],
    log:
        log_of(bundle_dir("{experiment}")),
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
        mem_mb=RESOURCES.mem_mb("export"),
        runtime=RESOURCES.runtime("export"),
    conda:
        "../../envs/memf.yaml"
    script:
        "../scripts/export.py"


# The best model the study found on the validation parts (memf.training.ensemble.choose_best): the ensemble, its
# members' bundles and their weights per fold, or the single experiment that wins.
rule export_best:
    input:
        unpack(get_best_inputs),
    output:
        [str(bundle_dir(BEST) / name) for name in BUNDLE_OUTPUTS],
    log:
        log_of(bundle_dir(BEST)),
    params:
        folds=FOLDS,
        candidates=ENSEMBLE_CANDIDATES,
        coverage=config["predict"]["coverage"],
        shards=config["extraction"]["shards"],
        code=code_version("export"),
        out_dir=lambda wildcards, output: str(Path(output[0]).parent),
    resources:
        mem_mb=RESOURCES.mem_mb("export_best"),
        runtime=RESOURCES.runtime("export_best"),
    conda:
        "../../envs/memf.yaml"
    script:
        "../scripts/export_best.py"


# A bundle that rules export and export_best cannot make (the latent features, no such experiment, no ensemble): asking for it
# stops the workflow with one line saying why, instead of Snakemake's "no rule to produce". It never runs a job.
rule refuse_export:
    input:
        get_export_refusal,
    output:
        [str(bundle_dir("{experiment}") / name) for name in BUNDLE_OUTPUTS],
    log:
        log_of(bundle_dir("{experiment}")),
    wildcard_constraints:
        experiment=f"(?!(?:{names_regex(BUNDLES)})/)[^/]+",
    resources:
        mem_mb=RESOURCES.mem_mb("refuse_export"),
        runtime=RESOURCES.runtime("refuse_export"),
    conda:
        "../../envs/memf.yaml"
    shell:
        "exit 1"


rule predict:
    input:
        unpack(get_predict_inputs),
    output:
        **{key: str(predict_dir("{name}") / file) for key, file in PREDICT_FILES.items() if key != "figure"},
        figure=report(str(predict_dir("{name}") / PREDICT_FILES["figure"]), category="Predictions",
                      caption="../report/predict_drivers.rst"),
    log:
        log_of(predict_dir("{name}"), "predict"),
    params:
        shards=lambda wildcards: predict_shards(wildcards.name),
        figure_streams=config["predict"]["figure_streams"],
        code=code_version("predict"),
        out_dir=lambda wildcards, output: str(Path(output.predictions).parent),
    wildcard_constraints:
        name=names_regex(list(PREDICT_DATASETS)),
    threads: 1
    resources:
        mem_mb=RESOURCES.mem_mb("predict"),
        runtime=RESOURCES.runtime("predict"),
    conda:
        "../../envs/memf.yaml"
    script:
        "../scripts/predict.py"


# What-if variants of a predicted dataset's streams (config predict.whatif; memf.whatif): each predicted by every
# member of the bundle from the dataset's padded store, with the counterfactual truth on simulated data.
rule whatif:
    input:
        unpack(get_whatif_inputs),
    output:
        **{key: str(predict_dir("{name}") / file) for key, file in WHATIF_FILES.items()},
    log:
        log_of(predict_dir("{name}"), "whatif"),
    params:
        dataset=lambda wildcards: PREDICT_DATASETS[wildcards.name],
        code=code_version("whatif"),
        out_dir=lambda wildcards, output: str(Path(output.table).parent),
    wildcard_constraints:
        name=names_regex(list(WHATIF)),
    resources:
        mem_mb=RESOURCES.mem_mb("whatif"),
        runtime=RESOURCES.runtime("whatif"),
    conda:
        "../../envs/memf.yaml"
    script:
        "../scripts/whatif.py"


rule predict_truth:
    input:
        unpack(get_truth_inputs),
    output:
        json=str(predict_dir("{name}") / TRUTH_FILES["json"]),
        md=str(predict_dir("{name}") / TRUTH_FILES["md"]),
        figure=report(str(predict_dir("{name}") / TRUTH_FILES["figure"]), category="Predictions",
                      caption="../report/predict_truth.rst"),
    log:
        log_of(predict_dir("{name}"), "truth"),
    params:
        experiment=PLAN.bundle_experiment if PLAN is not None else None,
        code=code_version("predict"),
        out_dir=lambda wildcards, output: str(Path(output.json).parent),
    wildcard_constraints:
        name=names_regex(TRUTH_DATASETS),
    resources:
        mem_mb=RESOURCES.mem_mb("predict_truth"),
        runtime=RESOURCES.runtime("predict_truth"),
    conda:
        "../../envs/memf.yaml"
    script:
        "../scripts/predict_truth.py"
