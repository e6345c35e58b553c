"""Every stage's CPU-seconds, peak RSS and disk as the data grows, before and after the scale work (docs/scale.md).

Two parts, each measured with this checkout ("after") and, where it still fits, with the code before the padded
store and the references at scale ("before": commit :data:`BEFORE`, extracted with ``git archive``):

- ``chain``: the workflow itself on the media-free latent chain of config.scale.yaml (simulate -> validate ->
  pad_latent -> one MEMF and one gradient-boosting fit of fold 0 -> the tables) at each ``--streams``, run by
  Snakemake with ``--cores 2``. Every job process records its peak RSS (VmHWM, or the largest worker it waited for)
  and CPU-seconds when it exits (a ``sitecustomize`` hook on the jobs' path, the same for both checkouts; this
  checkout's job logs carry the same figure on their ``memf job:`` line, reported beside it); disk is the size of
  each stage's outputs.
- ``padded``: the paper-dimension padded path (synthetic 768/2048-d features, tests/scale_support.py) through
  ``bench/scale_bench.py``'s steps, each a fresh process: pad, one MEMF fit job (``--epochs`` epochs, one seed, no
  tuning), the export's neutral reference with the prediction of every stream.

``table`` turns the JSON of both parts into Markdown: it writes OUT/scale.md and OUT/scale.json, and with ``--doc``
replaces the block between ``<!-- scale:begin -->`` and ``<!-- scale:end -->`` of docs/scale.md.

    python bench/scale.py chain --streams 1000 10000 100000 --before-max 100000 --out /tmp/scale
    python bench/scale.py chain --streams 100000 --before-max 0 --out /tmp/scale       # after only
    python bench/scale.py padded --streams 1000 20000 --before 1000 3000 --out /tmp/scale
    python bench/scale.py table --out /tmp/scale --doc docs/scale.md

A finished size is not run again (its JSON is in OUT); delete OUT/<part>/<code>-<n>.json to measure it again.
Where "before" is not run, the table extrapolates its peak along the slope measured between its two largest sizes
("does not fit" over 4 GB); the extrapolation table does the same for "after" at 10^6 streams.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
from memf.report.readme import markers  # noqa: E402

#: The last commit of main before the references at scale and the padded store were merged (it has the media-free
#: simulator): what "before" runs.
BEFORE = "a89039b0405b6e45c1a7cedc1d046b07cef9afa4"
#: Peak RSS every process must stay under (the issue's target on the 2-core machine).
TARGET_MIB = 4096
#: Output folders of the chain's stages, relative to the work folder (results/demo/raw: the simulated dataset).
DISK = {"simulate": "results/demo/raw", "validate": "results/data", "pad_latent": "results/padded",
        "fit": "results/runs/memf-latent", "fit_reference": "results/runs/hgb-latent", "tables": "results/tables"}
STAGES = ("simulate", "validate", "pad_latent", "fit", "fit_reference", "tables")
PAPER_STEPS = ("pad", "fit", "predict")
ONE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

#: Recorded by every Python process on the path when it exits: its rule (a Snakemake script job), peak and CPU.
HOOK = '''"""bench/scale.py: record this process's peak RSS and CPU-seconds when it exits (MEMF_SCALE_PEAKS)."""
import atexit, json, os, resource, sys


def _record():
    folder = os.environ.get("MEMF_SCALE_PEAKS")
    if not folder:
        return
    job = getattr(sys.modules.get("__main__"), "snakemake", None)
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        with open("/proc/self/status") as fh:
            own = next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        pass
    kids, me = resource.getrusage(resource.RUSAGE_CHILDREN), resource.getrusage(resource.RUSAGE_SELF)
    record = {"rule": getattr(job, "rule", None), "log": [str(x) for x in getattr(job, "log", []) or []],
              "peak_mib": max(own, kids.ru_maxrss) / 1024,
              "cpu_s": me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime, "argv": sys.argv[:2]}
    with open(os.path.join(folder, f"{os.getpid()}.json"), "w") as fh:
        json.dump(record, fh)


atexit.register(_record)
'''


def checkout(code: str, out: Path) -> Path:
    """The tree the chain runs: this checkout, or :data:`BEFORE` extracted under ``out`` once."""
    if code == "after":
        return ROOT
    tree = out / "before-tree"
    if not (tree / "Snakefile").is_file():
        tree.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", BEFORE], capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    return tree


def scale_config(n: int) -> dict:
    """config.scale.yaml at ``n`` streams (as many streams per anchor as it has)."""
    config = yaml.safe_load((ROOT / "config.scale.yaml").read_text())
    sim = config["simulator"]
    sim["n_anchors"] = max(12, round(sim["n_anchors"] * n / sim["n_streams"]))
    sim["n_streams"] = n
    return config


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.exists() else 0


def _time_v(path: Path) -> dict[str, float]:
    """Wall seconds and the largest process's peak from ``/usr/bin/time -v``'s report."""
    text = path.read_text()
    peak = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", text).group(1)) / 1024
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", text).group(1)
    seconds = sum(float(x) * 60 ** i for i, x in enumerate(reversed(wall.split(":"))))
    return {"wall_s": round(seconds, 1), "largest_peak_mib": round(peak, 1)}


def _job_rows(work: Path, peaks: Path) -> list[dict]:
    """One row per job process (its hook record), with the peak its own log states (None before the scale work)."""
    from memf.core.logs import job_peak

    rows = []
    for record in sorted(peaks.glob("*.json")):
        job = json.loads(record.read_text())
        if job["rule"] is None:
            continue
        logged = [job_peak((work / log).read_text()) for log in job["log"] if (work / log).is_file()]
        rows.append({"rule": job["rule"], "log": job["log"][0] if job["log"] else "", "cpu_s": round(job["cpu_s"], 2),
                     "peak_mib": round(job["peak_mib"], 1), "log_peak_mib": next((x for x in logged if x), None)})
    return rows


def chain_once(code: str, n: int, out: Path, cores: int) -> dict:
    """The workflow on config.scale.yaml at ``n`` streams with ``code``'s checkout, measured."""
    tree, work = checkout(code, out), out / "chain" / f"{code}-{n}"
    peaks, hook = work / "peaks", out / "hook"
    for folder in (peaks, hook):
        folder.mkdir(parents=True, exist_ok=True)
    (hook / "sitecustomize.py").write_text(HOOK)
    (work / "config.yaml").write_text(yaml.safe_dump(scale_config(n), sort_keys=False))
    env = {**os.environ, **ONE_THREAD, "PYTHONPATH": os.pathsep.join([str(tree / "src"), str(hook)]),
           "MEMF_SCALE_PEAKS": str(peaks)}
    cmd = ["/usr/bin/time", "-v", "-o", str(work / "time.txt"), sys.executable, "-m", "snakemake", "-s",
           str(tree / "Snakefile"), "--configfile", "config.yaml", "--cores", str(cores)]
    with open(work / "console.log", "w") as console:
        done = subprocess.run(cmd, cwd=work, env=env, stdout=console, stderr=subprocess.STDOUT, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"the chain at {n} streams ({code}) failed: see {work / 'console.log'}")
    return {"code": code, "n": n, "jobs": _job_rows(work, peaks), **_time_v(work / "time.txt"),
            "disk_bytes": {rule: folder_bytes(work / folder) for rule, folder in DISK.items()}}


def padded_once(code: str, n: int, out: Path, epochs: int) -> dict:
    """bench/scale_bench.py's pad, fit and predict steps at ``n`` paper-dimension streams with ``code``'s sources."""
    sys.path.insert(0, str(ROOT / "bench"))
    from scale_bench import measure_step

    src = checkout(code, out) / "src"
    shared, data = out / "padded" / f"data-{n}", out / "padded" / f"{code}-{n}"
    if not (shared / "data" / "dataset.json").is_file():  # the synthetic inputs, written once for both codes
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT / "tests")])}
        subprocess.run([sys.executable, str(ROOT / "bench" / "scale_bench.py"), "write", "--streams", str(n),
                        "--dims", "paper", "--out", str(shared)], env=env, check=True)
    data.mkdir(parents=True, exist_ok=True)
    for name in ("data", "features"):
        if not (data / name).exists():
            (data / name).symlink_to(shared / name)
    steps = []
    for step in PAPER_STEPS:
        os.environ.update(ONE_THREAD)
        steps.append({"rule": step, **measure_step(step, data, src, "--epochs", str(epochs))})
    disk = {"features": folder_bytes(data / "features"), "padded": (data / "padded.h5").stat().st_size}
    return {"code": code, "n": n, "epochs": epochs, "jobs": steps, "disk_bytes": disk}


def measured(out: Path, part: str, code: str, n: int, run) -> dict:
    """The JSON of one (part, code, size), measured once."""
    path = out / part / f"{code}-{n}.json"
    if not path.is_file():
        started = time.perf_counter()
        result = run()
        result["measured_s"] = round(time.perf_counter() - started, 1)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=1))
    return json.loads(path.read_text())


def chain(args: argparse.Namespace) -> None:
    for n in args.streams:
        for code in ("before", "after") if n <= args.before_max else ("after",):
            result = measured(args.out, "chain", code, n, lambda: chain_once(code, n, args.out, args.cores))
            print(json.dumps({"code": code, "n": n, "wall_s": result["wall_s"],
                              "peaks": {j["rule"]: j["peak_mib"] for j in result["jobs"]}}), flush=True)


def padded(args: argparse.Namespace) -> None:
    for code, sizes in (("before", args.before), ("after", args.streams)):
        for n in sizes:
            result = measured(args.out, "padded", code, n, lambda: padded_once(code, n, args.out, args.epochs))
            print(json.dumps({"code": code, "n": n, "peaks": {j["rule"]: j["peak_mib"] for j in result["jobs"]}}),
                  flush=True)


# --- the tables ----------------------------------------------------------------------------------------------------


def load(out: Path, part: str) -> dict[tuple[str, int], dict]:
    return {(r["code"], r["n"]): r for r in (json.loads(p.read_text()) for p in sorted((out / part).glob("*-*.json")))
            if "code" in r}


def per_rule(result: dict, key: str) -> dict[str, float]:
    """Rule -> the largest ``key`` of its jobs (one job per rule in these runs)."""
    out: dict[str, float] = {}
    for job in result["jobs"]:
        out[job["rule"]] = max(out.get(job["rule"], 0.0), job[key] or 0.0)
    return out


def extrapolated(results: dict[tuple[str, int], dict], code: str, rule: str, n: int) -> float | None:
    """``code``'s peak of ``rule`` at ``n`` along the slope between its two largest measured sizes."""
    sizes = sorted(m for c, m in results if c == code)
    if len(sizes) < 2:
        return None
    (a, b) = sizes[-2:]
    pa, pb = per_rule(results[(code, a)], "peak_mib")[rule], per_rule(results[(code, b)], "peak_mib")[rule]
    return pb + (pb - pa) / (b - a) * (n - b)


def _peak_cell(results: dict, code: str, rule: str, n: int) -> str:
    if (code, n) in results:
        peak = per_rule(results[(code, n)], "peak_mib").get(rule)
        return "" if peak is None else f"{peak:,.0f}"
    guess = extrapolated(results, code, rule, n) if code == "before" else None
    if guess is None:
        return ""
    verdict = "does not fit" if guess > TARGET_MIB else "not run"
    return f"{verdict} (~{guess:,.0f} extrapolated)"


def _cpu_cell(results: dict, code: str, rule: str, n: int) -> str:
    cpu = per_rule(results[(code, n)], "cpu_s").get(rule) if (code, n) in results else None
    return "" if cpu is None else f"{cpu:,.1f}"


def chain_table(results: dict[tuple[str, int], dict]) -> list[str]:
    sizes = sorted({n for _, n in results})
    lines = ["| stage | streams | CPU-s before | CPU-s after | peak MiB before | peak MiB after | after: in its log | "
             "disk MB |", "|---|---|---|---|---|---|---|---|"]
    for rule in STAGES:
        for n in sizes:
            after = results.get(("after", n))
            logged = max((j["log_peak_mib"] or 0 for j in after["jobs"] if j["rule"] == rule), default=0) if after \
                else 0
            disk = f"{after['disk_bytes'][rule] / 1e6:,.1f}" if after else ""
            lines.append(f"| {rule} | {n:,} | {_cpu_cell(results, 'before', rule, n)} | "
                         f"{_cpu_cell(results, 'after', rule, n)} | {_peak_cell(results, 'before', rule, n)} | "
                         f"{_peak_cell(results, 'after', rule, n)} | {f'{logged:,.0f}' if logged else ''} | {disk} |")
    lines += ["", "| whole run (Snakemake, 2 cores) | streams | wall s before | wall s after | largest process MiB "
              "before | largest process MiB after |", "|---|---|---|---|---|---|"]
    for n in sizes:
        cells = [(f"{results[(c, n)]['wall_s']:,.0f}", f"{results[(c, n)]['largest_peak_mib']:,.0f}")
                 if (c, n) in results else ("", "") for c in ("before", "after")]
        lines.append(f"| latent chain | {n:,} | {cells[0][0]} | {cells[1][0]} | {cells[0][1]} | {cells[1][1]} |")
    return lines


def extrapolation_table(results: dict[tuple[str, int], dict], steps: tuple[str, ...], sizes: list[int]) -> list[str]:
    """After's peak and CPU-seconds of every stage at ``sizes`` along the slope between its two largest measured
    sizes (CPU-seconds proportionally to the streams from the largest)."""
    measured = sorted(n for c, n in results if c == "after")
    if len(measured) < 2:
        return []
    largest = measured[-1]
    head = " | ".join(f"peak MiB at {n:,} | CPU-s at {n:,}" for n in sizes)
    lines = [f"| stage | slope KB a stream ({measured[-2]:,} to {largest:,}) | {head} |",
             "|---" * (2 + 2 * len(sizes)) + "|"]
    for rule in steps:
        a, b = (per_rule(results[("after", m)], "peak_mib")[rule] for m in measured[-2:])
        slope = (b - a) * 1024 / (largest - measured[-2])
        cpu = per_rule(results[("after", largest)], "cpu_s")[rule]
        cells = " | ".join(f"{extrapolated(results, 'after', rule, n):,.0f} | {cpu * n / largest:,.0f}" for n in sizes)
        lines.append(f"| {rule} | {slope:,.1f} | {cells} |")
    return lines


def padded_table(results: dict[tuple[str, int], dict]) -> list[str]:
    sizes = sorted({n for _, n in results})
    lines = ["| step | streams | CPU-s before | CPU-s after | peak MiB before | peak MiB after | features MB | "
             "padded MB before | padded MB after |", "|---|---|---|---|---|---|---|---|---|"]
    for rule in PAPER_STEPS:
        for n in sizes:
            disk = {c: results[(c, n)]["disk_bytes"] for c in ("before", "after") if (c, n) in results}
            features = next((f"{d['features'] / 1e6:,.0f}" for d in disk.values()), "")
            padded = [f"{disk[c]['padded'] / 1e6:,.0f}" if c in disk else "" for c in ("before", "after")]
            lines.append(f"| {rule} | {n:,} | {_cpu_cell(results, 'before', rule, n)} | "
                         f"{_cpu_cell(results, 'after', rule, n)} | {_peak_cell(results, 'before', rule, n)} | "
                         f"{_peak_cell(results, 'after', rule, n)} | {features} | {padded[0]} | {padded[1]} |")
    return lines


def table(args: argparse.Namespace) -> None:
    parts = {"chain": load(args.out, "chain"), "padded": load(args.out, "padded")}
    text = "\n".join(["**The latent chain** (config.scale.yaml, media-free; MEMF: "
                      f"{scale_config(1)['train']['epochs']} epochs, one seed, no tuning):", "",
                      *chain_table(parts["chain"]), "",
                      "Extrapolated (after): peak along the slope between the two largest sizes, CPU-seconds in "
                      "proportion to the streams:", "",
                      *extrapolation_table(parts["chain"], STAGES, args.extrapolate), "",
                      "**The paper-dimension padded path** (synthetic 768/2048-d features; fit: MEMF, 1 epoch, one "
                      "seed, no tuning; predict: the export's neutral reference and every stream predicted):", "",
                      *padded_table(parts["padded"])]) + "\n"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "scale.md").write_text(text)
    (args.out / "scale.json").write_text(json.dumps({part: list(r.values()) for part, r in parts.items()}, indent=1))
    print(text)
    if args.doc:
        begin, end = markers("scale")
        doc = args.doc.read_text()
        head, rest = doc.split(begin, 1)
        doc = f"{head}{begin}\n{text}{end}{rest.split(end, 1)[1]}"
        args.doc.write_text(doc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("chain", help="the workflow on config.scale.yaml")
    c.add_argument("--streams", type=int, nargs="+", default=[1000, 10000])
    c.add_argument("--before-max", type=int, default=10000, help="largest size the code before runs at")
    c.add_argument("--cores", type=int, default=2)
    p = sub.add_parser("padded", help="the paper-dimension padded path")
    p.add_argument("--streams", type=int, nargs="+", default=[1000, 20000])
    p.add_argument("--before", type=int, nargs="*", default=[1000, 3000], help="sizes the code before runs at")
    p.add_argument("--epochs", type=int, default=1)
    t = sub.add_parser("table", help="Markdown and JSON of what was measured")
    t.add_argument("--extrapolate", type=int, nargs="*", default=[1_000_000], help="stream counts extrapolated to")
    t.add_argument("--doc", type=Path, help="replace the scale block of this Markdown file (docs/scale.md)")
    for sp in (c, p, t):
        sp.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    {"chain": chain, "padded": padded, "table": table}[args.command](args)


if __name__ == "__main__":
    main()
