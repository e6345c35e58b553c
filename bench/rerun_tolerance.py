"""How far the tables move when the same run is repeated on another machine (issue 23, item 8).

    python bench/rerun_tolerance.py WORKDIR [--config bench/rerun.yaml] [--cores 2]

Runs the workflow on ``--config`` twice from scratch, in WORKDIR/native and WORKDIR/portable: once as this machine
runs it, once with the CPU kernels another x86-64 machine could pick (``PORTABLE``: PyTorch's baseline kernels instead
of AVX2/AVX-512, MKL's compatible code path, oneDNN limited to SSE4.1, OpenBLAS's Prescott kernels). The features
then differ in their last bits, and the tuning follows them as it does on another machine. Prints, per table row,
the change of R² and of the ΔR² interval's ends and verdict, then the largest changes: the largest change of an
interval end is what ``memf.report.bootstrap.VERDICT_TOLERANCE`` records. With the same settings twice, the two runs
are identical (reruns on one machine are).
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: Environment of the "other machine": CPU code paths every x86-64 machine has.
PORTABLE = {"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "COMPATIBLE", "ONEDNN_MAX_CPU_ISA": "SSE41",
            "OPENBLAS_CORETYPE": "Prescott"}
FIELDS = ("r2", "r2_diff", "r2_lo", "r2_hi")


def run(workdir: Path, config: Path, cores: int, env: dict[str, str]) -> float:
    """The whole DAG of ``config`` in ``workdir``; returns its wall seconds."""
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    cmd = ["nice", "-n", "10", sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--cores", str(cores),
           "--configfile", str(config)]
    out = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, env={**os.environ, **env}, check=False)
    (workdir / "console.log").write_text(out.stdout + out.stderr)
    if out.returncode != 0:
        raise SystemExit(f"{workdir}: snakemake exited {out.returncode}; see {workdir / 'console.log'}")
    return time.monotonic() - started


def rows(workdir: Path) -> dict[tuple[str, str], dict[str, str]]:
    """(table, experiment) -> its CSV row, for every table the run wrote."""
    out = {}
    for path in sorted((workdir / "results/tables").glob("*.csv")):
        with open(path, encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                if "r2" in row and "experiment" in row:
                    out[(path.stem, row["experiment"])] = row
    return out


def changes(a: dict, b: dict) -> list[tuple[str, str, dict[str, float], str, str]]:
    """Per row: the absolute change of each field, and the two verdicts."""
    out = []
    for key in sorted(a):
        moved = {f: abs(float(a[key][f]) - float(b[key][f])) for f in FIELDS if a[key].get(f) and b[key].get(f)}
        out.append((*key, moved, a[key].get("verdict") or "", b[key].get("verdict") or ""))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("workdir", type=Path)
    parser.add_argument("--config", type=Path, default=ROOT / "bench/rerun.yaml")
    parser.add_argument("--cores", type=int, default=2)
    args = parser.parse_args()
    walls = {name: run(args.workdir / name, args.config.resolve(), args.cores, env)
             for name, env in (("native", {}), ("portable", PORTABLE))}
    found = changes(rows(args.workdir / "native"), rows(args.workdir / "portable"))
    print("| table | row | R² moved | ΔR² moved | interval ends moved | verdict here | verdict there |")
    print("|---|---|---|---|---|---|---|")
    for table, row, moved, here, there in found:
        ends = max(moved.get("r2_lo", 0.0), moved.get("r2_hi", 0.0))
        print(f"| {table} | {row} | {moved.get('r2', 0.0):.4f} | {moved.get('r2_diff', 0.0):.4f} | {ends:.4f} | "
              f"{here} | {there} |")
    largest = {f: max(m.get(f, 0.0) for *_, m, _, _ in found) for f in FIELDS}
    print(f"\nlargest change: R² {largest['r2']:.4f}, ΔR² {largest['r2_diff']:.4f}, interval end "
          f"{max(largest['r2_lo'], largest['r2_hi']):.4f}; wall: native {walls['native']:.0f} s, portable "
          f"{walls['portable']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
