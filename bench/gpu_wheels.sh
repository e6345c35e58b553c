#!/usr/bin/env bash
# Wheels for a GPU machine without network, and their install there (bench/gpu.sh, docs/features.md):
#   bash bench/gpu_wheels.sh [DEST [NAME...]]  download the carried distributions (or only the NAMEs among them)
#                                            into DEST (default .whl), in parts of at most 60 MiB (DEST/part-1, ...):
#                                            one device call carries 64 MiB; wheels already in DEST are kept
#   bash bench/gpu_wheels.sh --list          print NAME==VERSION of every carried distribution
#   bash bench/gpu_wheels.sh --install SITE  install into SITE: every wheel under .whl/ (no index, no dependencies),
#                                            or, without .whl/, the carried pins from the package index
# Which pins are carried and why: CARRIED and NOT_CARRIED in bench/gpu_bench.py (in short: the device has the torch
# stack, numpy and the other compiled libraries, but not decord, av, soundfile, polars, snakemake, optuna; its
# transformers is 5.17, the pin 5.24.0). The list is the carried pins plus each dependency the device lacks, at the
# versions installed in the environment of PYTHON (default .venv/bin/python, else python3), which must hold the pins.
# Wheels are for CPython 3.12 on manylinux x86-64; a dependency published only as an sdist is built here and must
# come out pure Python.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$root"
part_mib=${PART_MIB:-60}

if [[ ${1:-} == --install ]]; then
    site=${2:?usage: bash bench/gpu_wheels.sh --install SITE}
    python=${PYTHON:-python3}
    mapfile -t wheels < <(find .whl -type f -name '*.whl' 2>/dev/null | sort)
    if ((${#wheels[@]})); then
        echo "gpu_wheels: installing ${#wheels[@]} wheels from .whl into $site"
        "$python" -m pip install --quiet --no-index --no-deps --target "$site" "${wheels[@]}"
    else
        echo "gpu_wheels: no .whl folder; installing the carried pins from the package index into $site"
        mapfile -t roots < <("$python" bench/gpu_bench.py carry --carry roots)
        "$python" -m pip install --quiet --target "$site" \
            --constraint <("$python" bench/gpu_bench.py carry --carry pins) "${roots[@]}"
    fi
    exit 0
fi

if [[ -x .venv/bin/python ]]; then
    python=${PYTHON:-.venv/bin/python}
else
    python=${PYTHON:-python3}
fi
if [[ ${1:-} == --list ]]; then
    exec "$python" bench/gpu_bench.py carry --carry closure
fi
dest=${1:-.whl}
only=("${@:2}")
mapfile -t carried < <("$python" bench/gpu_bench.py carry --carry closure)
((${#carried[@]})) || { echo "gpu_wheels: nothing to carry (see the error above)" >&2; exit 1; }
if ((${#only[@]})); then
    mapfile -t carried < <(printf '%s\n' "${carried[@]}" | grep -E "^($(IFS='|'; echo "${only[*]}"))==" || true)
    if ((${#carried[@]} != ${#only[@]})); then
        echo "gpu_wheels: not all of '${only[*]}' are carried (see bash bench/gpu_wheels.sh --list)" >&2
        exit 1
    fi
fi
mkdir -p "$dest"
staging=$(mktemp -d "${TMPDIR:-/tmp}/memf-wheels.XXXXXX")
trap 'rm -rf "$staging"' EXIT
platform=(--only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64
          --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)

for requirement in "${carried[@]}"; do
    name=${requirement%%==*} version=${requirement#*==}
    # A wheel already in DEST (any part) is kept: a rerun downloads only what is missing.
    pattern="$(echo "$name" | tr '-' '_')-${version}-*.whl"
    if find "$dest" -iname "$pattern" | grep -q .; then
        continue
    fi
    if ! "$python" -m pip download --quiet --no-deps "${platform[@]}" -d "$staging" "$requirement" \
        2> "$staging/err"; then
        # No wheel for the device: build one from the sdist, which must be pure Python to run there.
        "$python" -m pip wheel --quiet --no-deps --no-binary "$name" -w "$staging/built" "$requirement"
        built=$(find "$staging/built" -iname "$pattern")
        if [[ $built != *-none-any.whl ]]; then
            echo "gpu_wheels: $requirement has no wheel for CPython 3.12 manylinux x86-64 and does not build a pure" \
                 "Python one ($(basename "${built:-nothing built}")); $(tail -n 1 "$staging/err")" >&2
            exit 1
        fi
        mv "$built" "$staging/"
    fi
done

# Parts: first fit by decreasing size, each at most part_mib (the largest wheel alone if it is bigger).
"$python" - "$staging" "$dest" "$part_mib" <<'PY'
import shutil
import sys
from pathlib import Path

staging, dest, limit = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]) * 2**20
# [bytes used, folder] of every part, those an earlier run filled included.
bins = [[sum(w.stat().st_size for w in folder.glob("*.whl")), folder] for folder in sorted(dest.glob("part-*"))]
for wheel in sorted(staging.glob("*.whl"), key=lambda p: -p.stat().st_size):
    size = wheel.stat().st_size
    target = next((b for b in bins if b[0] + size <= limit), None)
    if target is None:
        target = [0, dest / f"part-{len(bins) + 1}"]
        bins.append(target)
    target[1].mkdir(parents=True, exist_ok=True)
    shutil.move(wheel, target[1] / wheel.name)
    target[0] += size
total = 0
for used, folder in bins:
    total += used
    print(f"{folder}: {len(list(folder.glob('*.whl')))} wheels, {used / 2**20:.1f} MiB")
print(f"gpu_wheels: {total / 2**20:.1f} MiB in {len(bins)} part(s). One device call carries at most 64 MiB: carry "
      f"{dest}/part-1 in a first call, each further part in the next call while the machine is warm (it keeps what "
      f"earlier calls brought), then run bash bench/gpu.sh; it installs every wheel under .whl/.")
PY
