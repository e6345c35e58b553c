"""Rules fit, fit_reference, tables and figures through the Snakemake CLI on a tiny padded feature set and fake
simulator ground truth (the stages before `pad` are tested elsewhere)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml

from memf.core.io import read_json, write_json, write_parquet
from memf.padding.store import write_padded
from train_support import tiny_padded

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "workflow" / "rules"

CONFIG = {
    "dataset": {"root": "raw", "simulate": True},
    "model": {"width": 16, "heads": 2, "layers": 1, "dropout": 0.0},
    "train": {"epochs": 3, "batch_size": 16, "device": "cpu"},
    "tuning": {"trials": 2, "startup_trials": 1},
    "search_spaces": {"s": {"train.lr": {"log_uniform": [1e-3, 1e-2]}}, "r": {"model.alpha": {"log_uniform": [1, 100]}}},
    "seeds": [0],
    "split": {"run_folds": [0, 1]},
    "experiments": {
        "memf": {"model": "memf", "feature_set": "demo", "search": "s"},
        "memf-no-audio": {"model": "memf", "feature_set": "demo", "options": {"drop_entities": ["audio"]}, "tuned_as": "memf"},
        "memf-no-video": {"model": "memf", "feature_set": "demo", "options": {"drop_entities": ["video"]}, "tuned_as": "memf"},
        "ridge": {"model": "ridge", "feature_set": "demo", "search": "r"},
    },
    "evaluation": {
        "compare_to": {"demo": "memf"},
        "ceilings": {"latent": []},
        "bootstrap": {"n": 200},
        "importance": {"table": "table8"},
        "tables": {
            "table8": {"title": "Table 8", "rows": {"memf-no-audio": "w/o audio", "memf-no-video": "w/o video", "memf": "All"}},
            "table9": {"title": "Table 9", "rows": {"ridge": "Ridge", "memf": "MEMF"}},
            "fig5": {"title": "Fig. 5", "rows": {"memf-no-audio": "other", "memf": "MEMF"}},
        },
        "figures": {"experiment": "memf", "fold": 1, "seed": 0, "attention_streams": 4},
    },
}


def _snakemake(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "snakemake", "-s", "Snakefile", "--configfile", "config.yaml", *args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=900)


@pytest.mark.slow  # about a minute; the tiny run (tests/workflow_support.py) runs every rule to tables and figures
def test_matrix_runs_to_tables_and_figures(tmp_path):
    (tmp_path / "Snakefile").write_text(
        "\n".join(f'include: "{RULES / name}"' for name in ("common.smk", "data.smk", "train.smk", "report.smk"))
        + "\n\nrule all:\n    input:\n        report_targets(),\n"
    )
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(CONFIG, sort_keys=False))
    padded = tiny_padded(60)
    write_padded(tmp_path / "results/padded/demo.h5", padded)
    raw = tmp_path / "raw"
    for table in ("streams", "anchors", "items", "clips", "latents"):  # stand-ins: the simulate rule's other outputs
        write_parquet(raw / f"{table}.parquet", pl.DataFrame({"x": [0]}))
    expected = padded.target + np.random.default_rng(0).normal(0, 0.3, len(padded))
    write_parquet(raw / "ground_truth.parquet", pl.DataFrame({"stream_id": padded.stream_id, "expected_log_sales": expected}))
    write_json(raw / "ground_truth.json", {"importance": {"entity_covariance_share": {"audio": 0.2, "video": 0.8}}})

    out = _snakemake("--cores", "2", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-4000:]
    for fold in (0, 1):
        for name in ("memf", "memf-no-audio", "memf-no-video"):
            assert (tmp_path / f"results/runs/{name}/fold{fold}/weights.safetensors").exists()
        # The ablations ran with the settings memf's tuning chose on the same fold.
        chosen = read_json(tmp_path / f"results/tuning/memf/fold{fold}/best.json")["params"]
        assert read_json(tmp_path / f"results/tuning/memf-no-audio/fold{fold}/best.json")["params"] == chosen
        assert read_json(tmp_path / f"results/runs/memf-no-video/fold{fold}/model.json")["params"] == chosen
    assert sorted(p.name for p in (tmp_path / "results/runs/ridge/fold0").iterdir()) == [
        "metrics.json", "model.json", "predictions.parquet", "reference.skops"]
    metrics = read_json(tmp_path / "results/runs/memf/fold0/metrics.json")
    assert metrics["oracle_r2"] > 0
    t9 = pl.read_csv(tmp_path / "results/tables/table9.csv")
    assert t9["experiment"].to_list() == ["ridge", "memf", "oracle"]
    memf = t9.filter(pl.col("experiment") == "memf").row(0, named=True)
    assert memf["n_seeds"] == 1 and memf["n_folds"] == 2 and memf["n_streams"] == 24
    assert "Spearman rho" in (tmp_path / "results/tables/entity_importance.md").read_text()
    for fig in ("fig3_training_curves", "fig4_scatter_density", "fig6_attention", "fig5_fusion_order", "table9_methods",
                "tuning_budget"):
        assert (tmp_path / f"results/figures/{fig}.png").stat().st_size > 5000
    assert (tmp_path / "logs/runs/memf/fold0.log").exists()

    again = _snakemake("-n", cwd=tmp_path)
    assert "Nothing to be done" in again.stdout + again.stderr
