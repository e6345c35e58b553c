"""The tiny run's tables pinned on one machine setting (issue 23, item 8): what the pins hold, the setting they were
recorded on, and how to record them again.

    python tests/pinned_tables.py WORKDIR     # rewrite tests/pinned/tiny_tables.json from a tiny run's tables

A run of tests/configs/tiny.yaml repeated on the same setting writes the same tables to the last bit; on another
setting (other CPU kernels) they move by about 1e-6 there (docs/training.md, "Reruns on other machines").
"""

from __future__ import annotations

import csv
import json
import os
import platform
import sys
from pathlib import Path

PINNED = Path(__file__).resolve().parent / "pinned" / "tiny_tables.json"
#: The tables and the numbers of each row a verdict is made of.
TABLES = ("table9", "table8", "ceilings", "table10")
FIELDS = ("r2", "r2_diff", "r2_lo", "r2_hi")
#: Environment variables that choose other CPU code paths (bench/rerun_tolerance.py sets them).
NUMERIC_ENV = ("ATEN_CPU_CAPABILITY", "MKL_CBWR", "MKL_ENABLE_INSTRUCTIONS", "ONEDNN_MAX_CPU_ISA", "OPENBLAS_CORETYPE")


def machine_setting() -> dict[str, str | None]:
    """What decides the tiny run's last bits: the packages' versions, the CPU kernels PyTorch picks, the CPU's
    vendor (MKL's code paths follow it) and the variables that override them."""
    import numpy
    import sklearn
    import torch

    vendor = None
    if Path("/proc/cpuinfo").is_file():
        vendor = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                       if line.startswith("vendor_id")), None)
    return {"machine": platform.machine(), "cpu_vendor": vendor, "torch": torch.__version__,
            "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(), "numpy": numpy.__version__,
            "scikit-learn": sklearn.__version__, **{k: os.environ.get(k) for k in NUMERIC_ENV}}


def table_values(tables_dir: Path) -> dict[str, dict[str, dict[str, float]]]:
    """table -> experiment -> the pinned fields it has (R², and the ΔR² interval where the row is compared)."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for table in TABLES:
        with open(tables_dir / f"{table}.csv", encoding="utf-8") as fh:
            out[table] = {row["experiment"]: {f: float(row[f]) for f in FIELDS if row[f]} for row in csv.DictReader(fh)}
    return out


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python tests/pinned_tables.py WORKDIR  (a finished run of tests/configs/tiny.yaml)")
    PINNED.parent.mkdir(exist_ok=True)
    PINNED.write_text(json.dumps({"setting": machine_setting(),
                                  "tables": table_values(Path(sys.argv[1]) / "results/tables")}, indent=1) + "\n")
