#!/usr/bin/env bash
# Snakemake runs this once in each new conda environment made from memf.yaml, with that environment activated, after
# conda has installed the pinned dependencies. It installs the memf package of the checkout that runs the workflow:
# editable (jobs run the checkout's current code) and without dependencies (memf.yaml pins them all). MEMF_SOURCE
# names the checkout; the Snakefile sets it from workflow.basedir, so this works whatever directory Snakemake runs in.
set -euo pipefail
source=${MEMF_SOURCE:-}
if [ -z "$source" ] || [ ! -f "$source/pyproject.toml" ] || [ ! -d "$source/src/memf" ]; then
    echo "memf.post-deploy.sh: MEMF_SOURCE is '$source', expected the memf checkout (the folder holding pyproject.toml" \
         "and src/memf; the Snakefile sets it from workflow.basedir)" >&2
    exit 1
fi
python -m pip install --quiet --no-deps --no-build-isolation --editable "$source"
# Fail here, not in the first job, if the environment's python does not import this checkout's memf.
MEMF_EXPECTED=$(cd "$source/src/memf" && pwd -P) python -c '
import os, sys
import memf
found, expected = os.path.dirname(os.path.realpath(memf.__file__)), os.environ["MEMF_EXPECTED"]
if found != expected:
    sys.exit(f"memf.post-deploy.sh: python imports memf from {found}, expected {expected}")
'
