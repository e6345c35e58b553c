"""memf.core.progress: the per-rule cost table scaled to a config, and the time-left lines printed from Snakemake's
log records (the records are made here as Snakemake makes them; tests/test_first_hour.py drives the real CLI)."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import pytest
import yaml

from memf.config import load_config
from memf.core import progress
from memf.core.progress import COSTS, ProgressHandler, config_sizes, job_costs
from memf.training.matrix import REFERENCE_MODELS

ROOT = Path(__file__).resolve().parents[1]


def checked(path: Path, tmp_path: Path) -> dict:
    config = yaml.safe_load(path.read_text())
    load_config(config, ROOT / "workflow/schemas/config.schema.yaml", tmp_path)
    return config


def record(event: str, **fields) -> logging.LogRecord:
    rec = logging.LogRecord("snakemake.logging", logging.INFO, __file__, 0, "", None, None)
    rec.__dict__.update(event=event, **fields)
    return rec


def test_the_table_reproduces_its_measured_runs_and_grows_with_the_config(tmp_path):
    tiny_config = checked(ROOT / "tests/configs/tiny.yaml", tmp_path)
    tiny_config["validation"]["probe_shards"] = 2  # as the tiny run was measured (probe_media has jobs only then)
    tiny = job_costs(config_sizes(tiny_config, 40, REFERENCE_MODELS))
    demo = job_costs(config_sizes(checked(ROOT / "config.yaml", tmp_path), 500, REFERENCE_MODELS))
    for rule, cost in COSTS.items():
        # The tiny run is the first measurement of every rule: its jobs cost what they cost there (the mean of the
        # two runs where the unit's size does not change between them).
        same = all(size == cost.work[0][0] for size, _ in cost.work)
        work = sum(w for _, w in cost.work) / len(cost.work) if same else cost.work[0][1]
        assert tiny[rule] == pytest.approx(cost.start + work), rule
        assert cost.start <= demo[rule] and tiny[rule] <= demo[rule] + 1e-9, rule  # the demo is larger in every unit
    # A size between two measurements costs between them; beyond the larger one, more.
    two = {rule: cost for rule, cost in COSTS.items() if len({size for size, _ in cost.work}) == 2}
    assert two, "no rule was measured at two sizes"
    for rule, cost in two.items():
        (s0, w0), (s1, w1) = cost.work
        middle = cost.work_at((s0 + s1) / 2)
        assert min(w0, w1) - 1e-9 <= middle <= max(w0, w1) + 1e-9, rule
        assert cost.work_at(2 * max(s0, s1)) >= max(w0, w1) - 1e-9, rule


def test_the_handler_prints_the_plan_then_the_time_left_from_measured_jobs(monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: clock[0])
    out = io.StringIO()
    handler = ProgressHandler(lambda: {"fit": 100.0, "tables": 10.0, "all": 0.0}, cores=2, stream=out, every_s=30)
    handler.handle(record("run_info", stats={"fit": 4, "tables": 1, "all": 1, "total": 6}))
    assert out.getvalue().splitlines() == [
        "memf time: 5 jobs, 7 min of CPU time, about 3 min on 2 cores (CPU-seconds per job of each rule as measured "
        "on the 2-core development machine, scaled to this config)"]
    handler.handle(record("run_info", stats={"fit": 4, "tables": 1, "all": 1, "total": 6}))  # dry runs log it twice
    assert len(out.getvalue().splitlines()) == 1
    for jobid in (1, 2):
        handler.handle(record("job_info", jobid=jobid, rule_name="fit", threads=1))
    clock[0] += 300.0  # the first fit job took 300 s, three times the table's cost
    handler.handle(record("job_finished", job_id=1))
    # Measured: 300 CPU-s per fit job. Left: job 2 (300 s, 300 s elapsed: 0), two fit jobs (600 s), tables rescaled
    # by 300/100 (30 s): 630 CPU-s on 2 cores.
    assert out.getvalue().splitlines()[-1] == "memf time: 1 of 5 jobs done in 5 min; about 5 min on 2 cores left"
    clock[0] += 1.0
    handler.handle(record("job_finished", job_id=2))  # within every_s of the last line, not a rule's first: quiet
    assert len(out.getvalue().splitlines()) == 2


def test_without_a_size_or_a_cost_the_handler_says_so():
    out = io.StringIO()
    handler = ProgressHandler(lambda: "your dataset's size is known once rule validate has run", cores=None, stream=out)
    handler.handle(record("run_info", stats={"validate": 1, "total": 1}))
    assert out.getvalue().strip() == ("memf time: 1 job; no estimate yet (your dataset's size is known once rule "
                                      "validate has run)")
    out = io.StringIO()
    handler = ProgressHandler(lambda: {"fit": 60.0}, cores=None, stream=out)
    handler.handle(record("run_info", stats={"fit": 2, "newrule": 1, "total": 3}))
    assert "2 min of CPU time, about 2 min of CPU time" in out.getvalue()
    assert out.getvalue().rstrip().endswith("no measured cost for newrule)")


def test_every_rule_of_the_workflow_has_a_measured_cost():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--list-rules"], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert set(out.stdout.split()) - {"all"} <= set(COSTS), set(out.stdout.split()) - set(COSTS)


def test_a_failing_estimate_is_one_line_and_never_stops_the_run():
    def broken() -> dict[str, float]:
        raise KeyError("streams_kept")

    out = io.StringIO()
    handler = ProgressHandler(broken, cores=2, stream=out)
    handler.handle(record("run_info", stats={"fit": 1, "total": 1}))  # raises nothing into Snakemake's logger
    handler.handle(record("job_info", jobid=1, rule_name="fit", threads=1))
    handler.handle(record("job_finished", job_id=1))
    assert out.getvalue().splitlines() == ["memf time: no more estimates (KeyError: 'streams_kept')"]
