# memf: multi-entity multimodal fusion for live-commerce sales prediction (README.md, docs/architecture.md).
# Stage 1 extracts features per modality into a sharded store; stage 2 pads, trains and evaluates on it.
from pathlib import Path

from snakemake.utils import min_version

min_version("9.0")


# The repository's config.yaml, also when Snakemake runs in another --directory; --configfile files merge over it.
configfile: Path(workflow.basedir) / "config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/features.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        get_final_outputs,
