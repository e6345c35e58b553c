# memf: multi-entity multimodal fusion for live-commerce sales prediction (README.md, docs/architecture.md).
# Stage 1 extracts features per modality into a sharded store; stage 2 pads, trains and evaluates on it.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/features.smk"


rule all:
    default_target: True
    input:
        get_final_outputs,
