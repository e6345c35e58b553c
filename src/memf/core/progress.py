"""How long a workflow run takes: measured CPU-seconds per job of each rule, and the time left, printed while it runs.

:data:`COSTS` holds what one job of each rule cost on the measured runs (:data:`MEASURED`): the CPU-seconds its job
log recorded (:func:`memf.core.logs.job_cost`), split into its start (the interpreter and the imports, the same
whatever the config) and its work, which grows with the config's size as :data:`UNITS` says. :func:`job_costs`
scales the table to a config; ``python bench/job_costs.py`` measures a run's costs again.

:class:`ProgressHandler` is a :class:`logging.Handler` the workflow attaches to Snakemake's logger when it loads. It
reads the records Snakemake logs for its own console and for logger plugins (``event``: ``run_info`` with the jobs
per rule, ``job_info`` when a job starts, ``job_finished``) and prints one line of its own: the estimate when the plan
is known (dry runs too), and after a finished job the jobs done and the time left (after the first job of each rule,
else at most every ``every_s`` seconds). As soon as one job of a rule has finished, its measured duration times its
threads replaces the table's cost for the rule's other jobs, and the ratio of measured to tabled costs rescales the
rules not seen yet: the estimate follows this machine, its load and this data.

Standard library only: the workflow imports this when it loads.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any, TextIO

#: Where :data:`COSTS` was measured, and on which runs (``python bench/job_costs.py``).
MACHINE = "the 2-core development machine"
MEASURED = (f"{MACHINE} (AMD EPYC, AVX2; other sessions sharing its cores), on two runs: tests/configs/tiny.yaml "
            "(40 streams, 2 tuning trials, 1 seed, 3 epochs) and bench/rerun.yaml (the demo's 500 streams, folds, "
            "tuning budget, seeds and training, for MEMF, CMMT and gradient boosting)")


@dataclass(frozen=True)
class RuleCost:
    """CPU-seconds of one job of a rule, measured: its start and its work at one or two sizes of its unit."""

    start: float  # before the job's work: interpreter and imports (does not grow with the config)
    unit: str  # what the work grows with: a key of UNITS
    work: tuple[tuple[float, float], ...]  # (size in the unit, CPU-seconds of a job's work) of each measured run

    def work_at(self, size: float) -> float:
        """The work of a job at ``size``: proportional to the size from one measurement; through two at different
        sizes, the power law through both (its exponent kept within 0-2, so that noise between two small
        measurements cannot make work shrink with size); two at the same size, their mean."""
        (s0, w0), *more = self.work
        if not more:
            return w0 * size / s0
        s1, w1 = more[0]
        if s1 == s0:
            return (w0 + w1) / 2
        if w0 <= 0 or w1 <= 0:
            return max(w0, w1) * size / max(s0, s1)
        exponent = min(max(math.log(w1 / w0) / math.log(s1 / s0), 0.0), 2.0)
        return w0 * (size / s0) ** exponent


#: What a rule's work grows with, as a function of the config's sizes (:func:`config_sizes`).
UNITS: dict[str, Callable[[Mapping[str, float]], float]] = {
    "job": lambda s: 1.0,  # the same whatever the size
    "streams": lambda s: s["streams"],  # every stream of the dataset once
    "shard": lambda s: s["streams"] / s["shards"],  # the streams of one shard
    "probe_shard": lambda s: s["streams"] / s["probe_shards"],  # the streams of one media-probing shard
    "fit": lambda s: s["streams"] * s["fit_rounds"] * s["epochs"],  # trials and seeds, each a training
    "reference": lambda s: s["streams"] * s["reference_rounds"],  # trials and the final fit
    "tables": lambda s: s["streams"] * s["bootstrap"] * s["experiments"],  # resampled metrics of every row
}

#: Rule -> cost of one of its jobs on the runs of :data:`MEASURED` (tiny first, then bench/rerun.yaml where the rule
#: ran there), as ``python bench/job_costs.py --python --run WORKDIR tests/configs/tiny.yaml --run WORKDIR
#: bench/rerun.yaml`` prints it; the rules bench/rerun.yaml does not run (the latent padding, the bundle and the
#: prediction) have the tiny run's alone and grow in proportion to their unit.
COSTS: dict[str, RuleCost] = {
    "export": RuleCost(0.51, "streams", ((40, 6.31),)),
    "extract_audio": RuleCost(2.29, "shard", ((20, 5.84), (250, 25.71),)),
    "extract_image": RuleCost(2.32, "shard", ((20, 5.39), (250, 55.54),)),
    "extract_numeric": RuleCost(2.35, "shard", ((20, 0.51), (250, 0.52),)),
    "extract_text": RuleCost(2.06, "shard", ((20, 4.90), (250, 10.61),)),
    "extract_video": RuleCost(2.23, "shard", ((20, 4.99), (250, 13.38),)),
    "features_manifest": RuleCost(0.43, "job", ((1, 0.21), (1, 0.20),)),
    "figures": RuleCost(2.34, "job", ((1, 3.01), (1, 3.27),)),
    "fit": RuleCost(3.88, "fit", ((240, 1.91), (160000, 66.42),)),
    "fit_reference": RuleCost(3.84, "reference", ((93.3333, 0.12), (3000, 8.94),)),
    "pad": RuleCost(1.99, "streams", ((40, 0.44), (500, 0.70),)),
    "pad_latent": RuleCost(2.03, "streams", ((40, 0.38),)),
    "predict": RuleCost(4.44, "streams", ((40, 3.56),)),
    "predict_truth": RuleCost(3.14, "job", ((1, 0.81),)),
    # Since rendering left simulate: the tiny run with validation.probe_shards 2, then (simulate, simulate_render) the
    # demo-sized points of bench/resources_measured.json less the start (1,000-4,000 streams; one 500-stream shard).
    "simulate": RuleCost(1.86, "streams", ((40, 0.12), (4000, 3.96),)),
    "simulate_render": RuleCost(1.98, "shard", ((20, 0.24), (500, 18.89),)),
    "probe_media": RuleCost(0.55, "probe_shard", ((20, 0.66),)),
    "tables": RuleCost(2.00, "tables", ((72000, 0.74), (3e+06, 2.50),)),
    "tiny_model": RuleCost(1.91, "job", ((1, 3.74), (1, 3.72),)),
    "validate": RuleCost(0.47, "streams", ((40, 0.74), (500, 9.71),)),
    # The ensemble and bundle best on the tiny run (best: four member bundles written in process; its start taken as
    # export's); whatif: two streams' seven variants with MEMF's bundle of three folds.
    "ensemble": RuleCost(1.92, "job", ((1, 0.05),)),
    "export_best": RuleCost(0.51, "streams", ((40, 8.77),)),
    "whatif": RuleCost(3.14, "job", ((1, 1.60),)),  # its start taken as predict_truth's (the same imports)
    "all": RuleCost(0.0, "job", ((1, 0.0),)),  # the default target: no work
    "refuse_export": RuleCost(0.0, "job", ((1, 0.0),)),  # stops the planning: never a job
}


def config_sizes(config: Mapping[str, Any], streams: float, references: Collection[str]) -> dict[str, float]:
    """The sizes the units scale with: a checked config's (:func:`memf.config.load_config`), its dataset's number of
    streams, and the names of the reference models (whose experiments run rule fit_reference)."""
    experiments = list(config["experiments"].values())

    def rounds(neural: bool) -> float:
        """Trainings per job, averaged over the rule's experiments: the tuning trials (when searched) and the seeds
        (a reference fits once)."""
        chosen = [e for e in experiments if (e["model"] in references) != neural]
        per_job = [(config["tuning"]["trials"] if e.get("search") else 0)
                   + (len(e.get("seeds", config["seeds"])) if neural else 1) for e in chosen]
        return sum(per_job) / len(per_job) if per_job else 0.0

    return {"streams": float(streams), "shards": float(config["extraction"]["shards"]),
            "probe_shards": float(max(1, config["validation"]["probe_shards"])), "fit_rounds": rounds(True),
            "epochs": float(config["train"]["epochs"]), "reference_rounds": rounds(False),
            "bootstrap": float(config["evaluation"]["bootstrap"]["n"]), "experiments": float(len(experiments))}


def job_costs(sizes: Mapping[str, float]) -> dict[str, float]:
    """Rule -> estimated CPU-seconds of one of its jobs for a config of ``sizes`` (:func:`config_sizes`)."""
    return {rule: cost.start + cost.work_at(UNITS[cost.unit](sizes)) for rule, cost in COSTS.items()}


def _count(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def duration(seconds: float) -> str:
    """``7 s``, ``12 min``, ``1 h 05 min``."""
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


@dataclass
class _Job:
    rule: str
    started: float
    threads: int


class ProgressHandler(logging.Handler):
    """Prints the estimated time of a Snakemake run and, as jobs finish, the time left (see the module docstring).

    Args:
        costs: called when an estimate is made: rule -> estimated CPU-seconds of one job (:func:`job_costs`), or
            None with the reason when there is no estimate yet (the number of streams of a dataset not validated).
        cores: the run's cores (None: unknown, the estimate is in CPU time only).
        stream: where the lines go (the console).
        every_s: least seconds between two progress lines.
    """

    def __init__(self, costs: Callable[[], dict[str, float] | str], cores: int | None, stream: TextIO | None = None,
                 every_s: float = 30.0) -> None:
        super().__init__(level=logging.INFO)
        self.costs, self.cores, self.every_s = costs, cores, every_s
        self.stream = stream or sys.stderr
        self.planned: dict[str, int] = {}
        self.running: dict[Any, _Job] = {}
        self.measured: dict[str, list[float]] = {}  # rule -> CPU-seconds (duration x threads) of its finished jobs
        self.begun = time.monotonic()
        self.last = -float("inf")
        self.said = ""
        self.failed = False

    def emit(self, record: logging.LogRecord) -> None:
        """Follow one Snakemake record. The estimate never stops a run: should it fail, it says so in one line and
        stops estimating."""
        if self.failed:
            return
        try:
            self._follow(record)
        except Exception as exc:  # noqa: BLE001 (any failure of the estimate: reported, never raised into Snakemake)
            self.failed = True
            self._say(f"memf time: no more estimates ({type(exc).__name__}: {' '.join(str(exc).split())})")

    def _follow(self, record: logging.LogRecord) -> None:
        event = str(getattr(record, "event", "") or "")
        if event == "run_info" and not self.planned and isinstance(getattr(record, "stats", None), dict):
            self.planned = {r: int(n) for r, n in record.stats.items() if r != "total"}
            self._say(self._plan_line())
        elif event == "job_info" and self.planned:
            threads = getattr(record, "threads", 1)
            self.running[record.jobid] = _Job(record.rule_name, time.monotonic(), int(threads or 1))
        elif event == "job_finished" and self.planned:
            job = self.running.pop(getattr(record, "job_id", None), None)
            if job is not None:
                first = job.rule not in self.measured
                self.measured.setdefault(job.rule, []).append((time.monotonic() - job.started) * job.threads)
                if first or time.monotonic() - self.last >= self.every_s:
                    self._say(self._progress_line())

    def _say(self, line: str) -> None:
        if line == self.said:  # the default target's job ends a run: nothing new to say
            return
        self.last, self.said = time.monotonic(), line
        print(line, file=self.stream, flush=True)

    def _per_job(self) -> dict[str, float] | str:
        """Rule -> CPU-seconds per job: measured in this run where a job of the rule finished, else the table's,
        rescaled by how this run's finished jobs compare with the table."""
        tabled = self.costs()
        if isinstance(tabled, str):
            return tabled
        seen = [r for r in self.measured if tabled.get(r)]
        ratio = (sum(sum(self.measured[r]) for r in seen) / sum(tabled[r] * len(self.measured[r]) for r in seen)
                 if seen else 1.0)
        out = {r: c * ratio for r, c in tabled.items()}
        out.update({r: sum(v) / len(v) for r, v in self.measured.items()})
        return out

    def _left(self, per_job: dict[str, float]) -> tuple[float, list[str]]:
        """CPU-seconds of the work left, and the planned rules without a cost."""
        left, unknown = 0.0, []
        for rule, n in self.planned.items():
            todo = n - len(self.measured.get(rule, [])) - sum(j.rule == rule for j in self.running.values())
            if rule not in per_job:
                unknown += [rule] if rule != "all" else []
                continue
            left += max(todo, 0) * per_job[rule]
        now = time.monotonic()
        for job in self.running.values():
            left += max(per_job.get(job.rule, 0.0) - (now - job.started) * job.threads, 0.0)
        return left, unknown

    def _wall(self, cpu_s: float) -> str:
        if not self.cores:
            return f"about {duration(cpu_s)} of CPU time"
        return f"about {duration(cpu_s / self.cores)} on {_count(self.cores, 'core')}"

    def _plan_line(self) -> str:
        jobs = sum(n for r, n in self.planned.items() if r != "all")
        per_job = self._per_job()
        if isinstance(per_job, str):
            return f"memf time: {_count(jobs, 'job')}; no estimate yet ({per_job})"
        left, unknown = self._left(per_job)
        missing = f"; no measured cost for {', '.join(unknown)}" if unknown else ""
        return (f"memf time: {_count(jobs, 'job')}, {duration(left)} of CPU time, {self._wall(left)} (CPU-seconds "
                f"per job of each rule as measured on {MACHINE}, scaled to this config{missing})")

    def _progress_line(self) -> str:
        jobs = sum(n for r, n in self.planned.items() if r != "all")
        done = sum(len(v) for r, v in self.measured.items() if r != "all")
        elapsed = duration(time.monotonic() - self.begun)
        per_job = self._per_job()
        if isinstance(per_job, str):
            return f"memf time: {done} of {jobs} jobs done in {elapsed}; no estimate yet ({per_job})"
        left, _ = self._left(per_job)
        return f"memf time: {done} of {jobs} jobs done in {elapsed}; {self._wall(left)} left"
