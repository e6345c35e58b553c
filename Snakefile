# memf: multi-entity multimodal fusion for live-commerce sales prediction (README.md, docs/architecture.md).
# Stage 1 extracts features per modality into a sharded store; stage 2 pads, tunes, trains and evaluates on it.
import os
import sys
from pathlib import Path

from snakemake.utils import min_version

# The workflow's own package, for parsing from an environment that has only Snakemake (the jobs' conda environment
# installs it: envs/memf.post-deploy.sh reads MEMF_SOURCE).
sys.path.insert(0, str(Path(workflow.basedir) / "src"))
os.environ.update(MEMF_SOURCE=workflow.basedir)

min_version("9.0")


# The user's config (docs/configuration.md): exactly the files given with --configfile; otherwise config.yaml in the
# working directory; otherwise the shipped demo config. Keys left out take the schema's defaults.
if not workflow.overwrite_configfiles:

    configfile: "config.yaml" if Path("config.yaml").is_file() else str(Path(workflow.basedir) / "config.yaml")


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/features.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/predict.smk"


rule all:
    default_target: True
    input:
        get_final_outputs,
