#!/usr/bin/env bash
# Set up the environment (.venv, pinned dependencies) and run the demo pipeline or the tests.
#   bash run.sh demo [snakemake args...]   simulate -> validate -> extract -> pad -> train -> evaluate (config.yaml)
#   bash run.sh test [pytest args...]      the test suite CI runs
set -euo pipefail
cd "$(dirname "$0")"
python=${PYTHON:-$(command -v python3.11 || command -v python3)}
if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
# torch/torchvision/torchaudio first and explicitly: pip resolves that triple reliably on its own.
.venv/bin/python -m pip install --quiet torch==2.11.0 torchvision==0.26.0 torchaudio==2.11.0
.venv/bin/python -m pip install --quiet -e ".[test]"
case "${1:-}" in
    demo) shift; exec .venv/bin/snakemake --cores all "$@" ;;
    test) shift; exec .venv/bin/python -m pytest "$@" ;;
    *) echo "usage: bash run.sh demo|test [args...]" >&2; exit 2 ;;
esac
