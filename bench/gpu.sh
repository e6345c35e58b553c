#!/usr/bin/env bash
# Both stages on a GPU in one prepared run, against the card's ceiling (docs/features.md, "Benchmarks on a GPU"):
#   bash bench/gpu.sh                    a CUDA machine: paper model sizes; installs the wheels of .whl/ first
#   bash bench/gpu.sh --cpu-smoke        the same steps at tiny sizes on the CPU, installing nothing (a test runs it)
#   bash bench/gpu.sh --steps extract,train    only these steps (a rerun after a fix; environment, which installs,
#                                              runs first unless --no-install)
#   bash bench/gpu.sh --no-install       a GPU machine already set up (bash run.sh test): use its environment as it is
# Steps (bench/gpu_bench.py): environment, gpu_tests, extract, train, workflow. Each runs in its own process under its
# own timeout; a failed or timed-out step does not stop the later ones. $OUT/gpu-figures.json, rewritten after every
# step, holds each step's status (ok, failed, timeout), seconds and figures; $OUT/gpu-bench.log every step's output.
# Exit status: 0 when every step passed, 1 when one did not, 2 for a usage error.
# Environment: OUT (default: a new temporary folder), PYTHON (default: python3).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$root"

mode=gpu
install=1
steps=environment,gpu_tests,extract,train,workflow
while (($#)); do
    case $1 in
        --cpu-smoke) mode=smoke install=0 ;;
        --no-install) install=0 ;;
        --steps)
            (($# >= 2)) || { echo "gpu.sh: --steps needs a comma-separated list of steps" >&2; exit 2; }
            steps=$2
            shift
            ;;
        -h | --help) sed -n '2,12p' "$0"; exit 0 ;;
        *)
            echo "gpu.sh: unknown argument '$1' (expected --cpu-smoke, --no-install, --steps LIST, --help)" >&2
            exit 2
            ;;
    esac
    shift
done

# Seconds each step may take. GPU: the device runs one command for at most 600 s, so the limits add up to 570.
declare -A limit
if [[ $mode == gpu ]]; then
    limit=([environment]=75 [gpu_tests]=75 [extract]=150 [train]=45 [workflow]=225)
else
    limit=([environment]=60 [gpu_tests]=60 [extract]=90 [train]=60 [workflow]=120)
fi
IFS=, read -r -a requested <<< "$steps"
for step in "${requested[@]}"; do
    [[ -n ${limit[$step]:-} ]] || { echo "gpu.sh: unknown step '$step' (expected ${!limit[*]})" >&2; exit 2; }
done
if ((install)) && [[ ,$steps, != *,environment,* ]]; then  # it installs what the other steps import
    requested=(environment "${requested[@]}")
    steps=environment,$steps
fi

python=${PYTHON:-python3}
OUT=${OUT:-$(mktemp -d "${TMPDIR:-/tmp}/memf-gpu-bench.XXXXXX")}
mkdir -p "$OUT"
work=$(mktemp -d "${TMPDIR:-/tmp}/memf-gpu-work.XXXXXX")
trap 'rm -rf "$work"' EXIT
# Packages installed for this run come after the checkout's sources and before the machine's own.
site=$work/site
mkdir -p "$site"
export PYTHONPATH="$root/src:$site${PYTHONPATH:+:$PYTHONPATH}"
export TQDM_DISABLE=1 PYTHONUNBUFFERED=1
log=$OUT/gpu-bench.log
: > "$log"
started=$(date +%s.%N)
echo "gpu.sh: mode $mode, steps $steps, figures in $OUT/gpu-figures.json"

run_step() {  # run_step NAME: run one step under its timeout; record its name, exit status, start, end and limit
    local name=$1 rc=0 t0 cmd
    cmd=("$python" bench/gpu_bench.py "$name" --mode "$mode" --work "$work" --out "$work/$name.json")
    if [[ $name == environment ]] && ((install)); then  # install first, within the same limit
        # shellcheck disable=SC2016  # $1 and $@ belong to the inner bash
        cmd=(bash -c 'bash bench/gpu_wheels.sh --install "$1" && exec "${@:2}"' _ "$site" "${cmd[@]}")
    fi
    t0=$(date +%s.%N)
    timeout --kill-after=10 "${limit[$name]}" "${cmd[@]}" > "$work/$name.log" 2>&1 || rc=$?
    printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$rc" "$t0" "$(date +%s.%N)" "${limit[$name]}" >> "$work/steps.tsv"
    { echo "=== $name: exit $rc (limit ${limit[$name]} s)"; cat "$work/$name.log"; } >> "$log"
    if ((rc == 0)); then
        echo "$name: ok"
    else
        if ((rc == 124 || rc == 137)); then
            echo "$name: stopped at its ${limit[$name]} s timeout; the end of its output:"
        else
            echo "$name: failed (exit $rc); the end of its output:"
        fi
        tail -n 25 "$work/$name.log"
    fi
    "$python" bench/gpu_bench.py collect --mode "$mode" --work "$work" --steps "$steps" --started "$started" \
        --out "$OUT/gpu-figures.json"
}

for step in "${requested[@]}"; do
    run_step "$step"
done
"$python" - "$OUT/gpu-figures.json" <<'PY'
import json
import sys

report = json.load(open(sys.argv[1]))
bad = [f"{name} {step['status']}" for name, step in report["steps"].items() if step["status"] != "ok"]
print(f"gpu.sh: {'every step passed' if report['ok'] else 'not passed: ' + ', '.join(bad)} ({report['wall_s']} s); "
      f"figures in {sys.argv[1]}")
sys.exit(0 if report["ok"] else 1)
PY
