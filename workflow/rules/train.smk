# Stage 2 runs: one job per (experiment, seed) of the matrix in config `experiments` (docs/training.md).
# Neural models go through rule `train`, the simple references (mean, ridge, hgb) through rule `reference`; both write
# results/runs/{experiment}/seed{seed}/ in the same format, so the tables do not care which made a run.
from memf.training.matrix import REFERENCE_FILES, TRAINED_FILES


include: "stage2_common.smk"


rule train:
    input:
        unpack(get_ground_truth),
        padded=get_padded,
    output:
        [f"results/runs/{{experiment}}/seed{{seed}}/{name}" for name in TRAINED_FILES],
    log:
        "logs/train/{experiment}/seed{seed}.log",
    params:
        experiment=get_experiment,
        train=config["train"],
        out_dir=lambda wildcards, output: str(Path(output[0]).parent),
    threads: 1
    resources:
        mem_mb=3000,
    wildcard_constraints:
        experiment=names_regex(NEURAL),
        seed=r"\d+",
    conda:
        "../../envs/memf.yaml"
    script:
        "../scripts/train.py"


rule reference:
    input:
        unpack(get_ground_truth),
        padded=get_padded,
    output:
        [f"results/runs/{{experiment}}/seed{{seed}}/{name}" for name in REFERENCE_FILES],
    log:
        "logs/reference/{experiment}/seed{seed}.log",
    params:
        experiment=get_experiment,
        out_dir=lambda wildcards, output: str(Path(output[0]).parent),
    threads: 1
    resources:
        mem_mb=2000,
    wildcard_constraints:
        experiment=names_regex(REFERENCES),
        seed=r"\d+",
    conda:
        "../../envs/memf.yaml"
    script:
        "../scripts/reference.py"
