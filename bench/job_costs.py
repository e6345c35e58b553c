"""CPU-seconds per job of each rule of finished workflow runs (issue 23): what memf.core.progress estimates from.

    python bench/job_costs.py --run WORKDIR CONFIG [CONFIG ...] [--run ...] [--python]

Every job log ends with its cost (``memf job: <CPU> CPU-s (<start> before its work), <wall> s wall``, written by
``memf.core.logs.job_log``). This maps each job log of a run to its rule with ``snakemake --summary`` (run in WORKDIR
with the run's config files), and prints per rule the jobs, their CPU-seconds in all and per job (start and work),
and per stage. With ``--python`` it prints the ``COSTS`` of ``memf.core.progress`` from the runs given (one or two:
each rule's work at each run's size of its unit) instead.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from memf.core.logs import job_cost  # noqa: E402
from memf.core.progress import COSTS, UNITS, config_sizes  # noqa: E402

#: Stage -> its rules, in the order of the README's time budget.
STAGES = {
    "data: simulate, render, probe, validate": ("simulate", "simulate_render", "probe_media", "validate"),
    "stage 1: tiny models, extraction, manifests, pad": ("tiny_model", "extract_text", "extract_image",
                                                          "extract_numeric", "extract_video", "extract_audio",
                                                          "features_manifest", "pad", "pad_latent"),
    "stage 2: fit (neural)": ("fit",),
    "stage 2: fit_reference": ("fit_reference",),
    "ensemble, tables, figures": ("ensemble", "tables", "figures"),
    "predict: export, export_best, predict, predict_truth, whatif": ("export", "export_best", "predict",
                                                                      "predict_truth", "whatif"),
}


def log_rules(workdir: Path, configfiles: list[str]) -> dict[str, str]:
    """Job log (relative to ``workdir``) -> its rule, from ``snakemake --summary``."""
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--summary"]
    cmd += ["--configfile", *configfiles] if configfiles else []
    out = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=600, check=True)
    rows = csv.DictReader(io.StringIO(out.stdout), delimiter="\t")
    return {log.strip(): row["rule"] for row in rows for log in (row["log-file(s)"] or "").split(",")
            if log.strip() not in ("", "-")}  # "-": a rule without a log (the default target)


def measure(workdir: Path, configfiles: list[str]) -> dict[str, list[tuple[float, float]]]:
    """Rule -> (start, work) CPU-seconds of each of its jobs (a job without a log has not run: it is left out)."""
    costs: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for log, rule in sorted(log_rules(workdir, configfiles).items()):
        path = workdir / log
        if not path.is_file():
            continue
        found = job_cost(path.read_text(encoding="utf-8", errors="replace"))
        if found is None:
            raise SystemExit(f"{path}: no 'memf job:' cost line (a job log of an older version)")
        cpu, start, _ = found
        costs[rule].append((start, cpu - start))
    return dict(costs)


def sizes(workdir: Path, configfiles: list[str]) -> dict[str, float]:
    """The run's sizes (memf.core.progress.config_sizes) from its config and its validated dataset."""
    import yaml

    from memf.config import load_config
    from memf.training.matrix import REFERENCE_MODELS

    config: dict = {}
    for name in configfiles:
        config.update(yaml.safe_load(Path(name).read_text()) or {})
    load_config(config, ROOT / "workflow/schemas/config.schema.yaml", workdir)
    streams = json.loads((workdir / "results/data/dataset.json").read_text())["streams_kept"]
    return config_sizes(config, streams, REFERENCE_MODELS)


def print_costs(runs: list[tuple[Path, list[str]]]) -> None:
    """COSTS of memf.core.progress: per rule the mean start over the runs and each run's (size, work) per job."""
    measured = [(measure(w, c), sizes(w, c)) for w, c in runs]
    print("COSTS: dict[str, RuleCost] = {")
    for rule in sorted({r for costs, _ in measured for r in costs}):
        unit = COSTS[rule].unit if rule in COSTS else "job"
        starts = [s for costs, _ in measured for s, _ in costs.get(rule, [])]
        points = [(UNITS[unit](size), sum(w for _, w in costs[rule]) / len(costs[rule]))
                  for costs, size in measured if rule in costs]
        work = ", ".join(f"({u:.6g}, {w:.2f})" for u, w in points)
        print(f'    "{rule}": RuleCost({sum(starts) / len(starts):.2f}, "{unit}", ({work},)),')
    print("}")


def print_table(costs: dict[str, list[tuple[float, float]]]) -> None:
    print("| rule | jobs | CPU-s | per job: start | per job: work |\n|---|---|---|---|---|")
    for rule, jobs in sorted(costs.items(), key=lambda kv: -sum(s + w for s, w in kv[1])):
        total = sum(s + w for s, w in jobs)
        print(f"| {rule} | {len(jobs)} | {total:,.0f} | {sum(s for s, _ in jobs) / len(jobs):.1f} | "
              f"{sum(w for _, w in jobs) / len(jobs):.1f} |")
    print("\n| part | jobs | CPU-s |\n|---|---|---|")
    for stage, rules in STAGES.items():
        jobs = [j for r in rules for j in costs.get(r, [])]
        if jobs:
            print(f"| {stage} | {len(jobs)} | {sum(s + w for s, w in jobs):,.0f} |")
    everything = [j for js in costs.values() for j in js]
    print(f"| all | {len(everything)} | {sum(s + w for s, w in everything):,.0f} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", nargs="+", action="append", required=True, metavar="WORKDIR CONFIG",
                        help="a run's work folder and the config files it ran with")
    parser.add_argument("--python", action="store_true", help="print COSTS for memf.core.progress")
    args = parser.parse_args()
    runs = [(Path(w), [str(Path(c).resolve()) for c in cfgs]) for w, *cfgs in args.run]
    if args.python:
        print_costs(runs)
        return 0
    for workdir, configfiles in runs:
        print(f"\n{workdir}:\n")
        print_table(measure(workdir, configfiles))
    return 0


if __name__ == "__main__":
    sys.exit(main())
