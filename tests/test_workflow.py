"""The Snakemake workflow through its CLI: lint, a user's own dataset, and the tiny configuration end to end."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from fakedata import write_dataset

ROOT = Path(__file__).resolve().parents[1]


def nothing_planned(out: subprocess.CompletedProcess[str]) -> bool:
    text = out.stdout + out.stderr
    return "Nothing to be done" in text or re.search(r"^total\s+0$", text, flags=re.M) is not None


def snakemake(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), *args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=1800)


def test_lint_is_clean():
    out = snakemake("--lint", cwd=ROOT)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Congratulations, your workflow is in a good condition!" in out.stdout + out.stderr


def test_bad_config_is_rejected_at_load(tmp_path):
    (tmp_path / "bad.yaml").write_text("split: {test_fraction: 1.5}\n")
    out = snakemake("-n", "--configfile", "bad.yaml", cwd=tmp_path)
    assert out.returncode != 0
    message = out.stdout + out.stderr
    assert "test_fraction" in message and "1.5 is greater than or equal to the maximum of 1" in message


def test_own_dataset_goes_through_validation(tmp_path):
    write_dataset(tmp_path / "mydata", n_streams=8)
    (tmp_path / "cfg.yaml").write_text("dataset: {root: mydata, simulate: false}\n")
    out = snakemake("--cores", "2", "--configfile", "cfg.yaml", "--until", "validate", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    streams = pl.read_parquet(tmp_path / "results/data/streams.parquet")
    assert streams.height == 8 and set(streams["split"]) == {"train", "val", "test"}
    assert "kept 8 of 8 streams" in (tmp_path / "logs/data/validate.log").read_text()
    # Nothing changed: nothing to do.
    again = snakemake("-n", "--configfile", "cfg.yaml", "--until", "validate", cwd=tmp_path)
    assert nothing_planned(again)


def planned(workdir: Path, *configfiles: str) -> set[str]:
    # One --configfile taking every file: a repeated --configfile flag would replace the earlier ones.
    out = snakemake("-n", "--configfile", str(ROOT / "tests/configs/tiny.yaml"), *configfiles, cwd=workdir)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    text = out.stdout + out.stderr
    return set() if nothing_planned(out) else set(re.findall(r"^\s*(?:local)?rule (\w+):", text, flags=re.M))


def test_tiny_workflow_writes_every_stage(tiny_run):
    from memf.core.metrics import regression_metrics

    for path in ("results/data/summary.md", "results/padded/demo.h5", "results/tables/table9.md",
                 "results/tables/table8.csv", "results/figures/fig4_scatter_density.png",
                 "results/features/image/resnet18/manifest.json"):
        assert (tiny_run / path).is_file(), path
    run = tiny_run / "results/runs/memf/seed0"
    metrics = json.loads((run / "metrics.json").read_text())
    test = pl.read_parquet(run / "predictions.parquet").filter(pl.col("split") == "test")
    recomputed = regression_metrics(test["y_true"].to_numpy(), test["y_pred"].to_numpy())
    for key in ("mae", "mse", "mape", "r2", "evs"):
        assert recomputed[key] == pytest.approx(metrics[key], rel=1e-6, abs=1e-9)
    assert (tiny_run / "logs/train/memf/seed0.log").is_file()


def test_tiny_workflow_reruns_exactly_what_changed(tiny_run, tmp_path):
    assert planned(tiny_run) == set(), "an unchanged workflow plans nothing"
    change = tmp_path / "image.yaml"
    change.write_text("extractors:\n  resnet18: {kind: torchvision, model: resnet18, options: "
                      "{weights: none, resize: 40, crop: 32}}\n")
    rules = planned(tiny_run, str(change))
    # Only the changed image extractor's shards and what depends on them; no other modality, no data rule.
    assert "extract_image" in rules and "pad" in rules and "train" in rules
    assert not rules & {"simulate", "validate", "tiny_model", "extract_text", "extract_video", "extract_audio",
                        "extract_numeric"}


def test_tiny_workflow_numeric_policy_change_reruns_the_numeric_features_only(tiny_run, tmp_path):
    # Switching score from identity to signed_log1p accepts the same values: validation is not rerun, only the
    # numeric shards and what depends on them.
    change = tmp_path / "numeric.yaml"
    change.write_text("numeric: {columns: {anchor: {score: signed_log1p}}}\n")
    rules = planned(tiny_run, str(change))
    assert "extract_numeric" in rules and "pad" in rules
    assert not rules & {"simulate", "validate", "tiny_model", "extract_text", "extract_image", "extract_video",
                        "extract_audio"}
    # Making price signed too changes what validation accepts: validation reruns.
    change.write_text("numeric: {columns: {anchor: {score: signed_log1p}, commodity: {price: signed_log1p}}}\n")
    assert "validate" in planned(tiny_run, str(change))
