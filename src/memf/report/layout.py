"""Where the report writes: the tables, figures and the simulator worlds' study (standard library only: the workflow
reads it when it loads)."""

from __future__ import annotations

from memf.data.layout import RESULTS

TABLES_DIR = f"{RESULTS}/tables"
FIGURES_DIR = f"{RESULTS}/figures"
#: ``python -m memf.report.worlds run``: one working folder per world under this folder.
WORLDS_DIR = f"{RESULTS}/worlds"
#: ``python -m memf.report.curves run``: one working folder per world under this folder (the learning curves).
CURVES_DIR = f"{RESULTS}/curves"
