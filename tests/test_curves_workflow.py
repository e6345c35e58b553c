"""The fixed protocol through Snakemake (config split.mode: fixed): every (size, replicate) is a run fold trained on
its own subset and tested on the shared streams, the tables rule writes the learning curves and the probes, and adding
a replicate reruns exactly its jobs and the report."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "tests" / "configs" / "curves_tiny.yaml"


def snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--cores", "2", "--configfile",
           str(CONFIG), *args]
    return subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def curves_run(tmp_path_factory) -> Path:
    """The tiny curves config with run folds 0 and 2 only (replicate 1 of the small size left for later)."""
    workdir = tmp_path_factory.mktemp("curves")
    (workdir / "folds.yaml").write_text("split: {run_folds: [0, 2]}\n")
    out = snakemake(workdir, str(workdir / "folds.yaml"))
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return workdir


def test_each_run_fold_trains_on_its_subset_and_tests_on_the_shared_streams(curves_run):
    tests = []
    for fold, size in ((0, 50), (2, 120)):
        for name in ("memf", "hgb-set"):
            preds = pl.read_parquet(curves_run / f"results/runs/{name}/fold{fold}/predictions.parquet")
            counts = dict(preds.group_by("split").len().iter_rows())
            assert counts == {"train": size, "val": 40, "test": 80}  # the unused pool is not predicted
            tests.append(preds.filter(pl.col("split") == "test")["stream_id"].sort().to_list())
    assert all(t == tests[0] for t in tests)
    train = {f: set(pl.read_parquet(curves_run / f"results/runs/memf/fold{f}/predictions.parquet")
                    .filter(pl.col("split") == "train")["stream_id"]) for f in (0, 2)}
    assert train[0] < train[2]  # nested
    summary = pl.read_csv(curves_run / "results/data/summary.csv")
    assert summary["part"].to_list() == ["training pool", "validation", "test", "all"]


def test_the_tables_rule_writes_the_curves_and_the_probes(curves_run):
    curves = pl.read_csv(curves_run / "results/tables/curves.csv")
    assert curves["train_size"].to_list() == [50, 50, 120, 120] and set(curves["replicates"]) == {1}
    assert curves.filter(pl.col("experiment") == "memf")["verdict"].to_list() == ["reference"] * 2
    assert curves["signal"].unique().to_list() == ["match"] and curves["budget_gain"].is_not_null().all()
    probes = pl.read_csv(curves_run / "results/tables/curves_probes.csv")
    assert probes["entity"].to_list() == ["anchor", "commodity", "room", "video", "audio"]
    assert (probes["train_size"] == 120).all() and probes["probe_r2"].is_finite().all()
    assert probes["probe_r2_untrained"].is_finite().all() and (probes["probe_r2"] != probes["probe_r2_untrained"]).any()
    assert (curves_run / "results/tables/tuning.md").is_file()
    assert not (curves_run / "results/tables/table7.csv").exists()


def test_adding_a_replicate_reruns_its_jobs_and_the_report_only(curves_run):
    (curves_run / "all_folds.yaml").write_text("split: {run_folds: [0, 1, 2]}\n")
    out = snakemake(curves_run, str(curves_run / "all_folds.yaml"), "-n", "--quiet", "rules")
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    planned = {line.split()[0]: int(line.split()[1]) for line in out.stdout.splitlines()
               if len(line.split()) == 2 and line.split()[1].isdigit()}
    assert planned == {"fit": 1, "fit_reference": 1, "tables": 1, "figures": 1, "all": 1, "total": 5}


def test_on_extracted_features_the_fixed_protocol_fits_no_ensemble_and_exports_no_best(tmp_path):
    """The curves compare models per training size: no ensemble job, no ensemble table declared (the curves writer
    writes none), and `best`, which chooses between the ensemble and its candidates, is refused in one line."""
    shipped = str(ROOT / "config.curves.features.yaml")
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-n", "--configfile", shipped]
    out = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "rule ensemble:" not in out.stdout
    tables = [line for line in out.stdout.splitlines() if "results/tables/curves.csv" in line]
    assert tables and not any("ensemble" in line for line in tables)
    (tmp_path / "best.yaml").write_text("predict: {bundle: best}\n")
    out = subprocess.run([*cmd, str(tmp_path / "best.yaml")], cwd=tmp_path, capture_output=True, text=True,
                         timeout=300)
    errors = [line for line in (out.stdout + out.stderr).splitlines() if line.startswith("memf config error")]
    assert out.returncode != 0 and errors == [
        "memf config error: config key 'predict.bundle': 'best' chooses between the ensemble and its candidates, and "
        "the fixed protocol (split.mode: fixed, learning curves) fits no ensemble; name an experiment"], errors
