#!/usr/bin/env bash
# Set up the environment (.venv, pinned dependencies) and run the demo pipeline or the tests.
#   bash run.sh demo [snakemake args...]   simulate -> validate -> extract -> pad -> train -> evaluate (config.yaml)
#   bash run.sh test [pytest args...]      the test suite CI runs
# The pip steps run only when .venv/.memf-setup does not hold the stamp of this setup (the checkout's path, the torch
# pins, pyproject.toml): a second run starts at once. Delete .venv/.memf-setup to force them.
set -euo pipefail
cd "$(dirname "$0")"
python=${PYTHON:-$(command -v python3.11 || command -v python3)}
torch_pins=(torch==2.11.0 torchvision==0.26.0 torchaudio==2.11.0)
stamp_file=.venv/.memf-setup

setup_stamp() {
    # What the installed .venv depends on: where the editable install points, the torch triple installed first, and
    # every other pin (pyproject.toml, test extra included).
    { pwd -P; echo "${torch_pins[*]}"; cat pyproject.toml; } | sha256sum | cut -d' ' -f1
}

if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
if [ "$(cat "$stamp_file" 2>/dev/null)" != "$(setup_stamp)" ]; then
    rm -f "$stamp_file"  # an interrupted install leaves no stamp, so the next run installs again
    .venv/bin/python -m pip install --quiet --upgrade pip
    # torch/torchvision/torchaudio first and explicitly: pip resolves that triple reliably on its own.
    .venv/bin/python -m pip install --quiet "${torch_pins[@]}"
    .venv/bin/python -m pip install --quiet -e ".[test]"
    setup_stamp > "$stamp_file"
fi
case "${1:-}" in
    demo) shift; exec .venv/bin/snakemake --cores all "$@" ;;
    test) shift; exec .venv/bin/python -m pytest "$@" ;;
    *) echo "usage: bash run.sh demo|test [args...]" >&2; exit 2 ;;
esac
