"""features.smk through the Snakemake CLI: a full tiny run, then what a config change plans (and what no change plans)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
import yaml

from features_support import TinyEnv
from memf.data.contract import DEFAULT_COLUMNS
from memf.features.tiny import tiny_model_from_config
from memf.padding.store import read_padded

RULES = Path(__file__).resolve().parents[1] / "workflow" / "rules"
CONFIG = {
    "dataset": {"root": "raw", "simulate": False},
    "extraction": {"shards": 1, "device": "cpu", "workers": 1, "timeout_s": 30},
    "extractors": {
        "bert-tiny": {"kind": "transformers-text", "model": "results/models/bert-tiny", "options": {"max_length": 32}},
        "resnet18": {"kind": "torchvision", "model": "resnet18", "options": {"weights": "none", "resize": 36, "crop": 32}},
        "videomae-tiny": {"kind": "videomae", "model": "results/models/videomae-tiny"},
        "wav2vec2-tiny": {"kind": "wav2vec2", "model": "results/models/wav2vec2-tiny"},
        "log-standard": {"kind": "log-standard"},
    },
    "feature_sets": {"demo": {"text": "bert-tiny", "image": "resnet18", "numeric": "log-standard",
                              "video": "videomae-tiny", "audio": "wav2vec2-tiny"}},
    "tiny_models": {"bert-tiny": {"kind": "bert", "settings": {"vocab_size": 300}}, "videomae-tiny": {"kind": "videomae"},
                    "wav2vec2-tiny": {"kind": "wav2vec2"}},
    "experiments": {"memf": {"model": "memf", "feature_set": "demo"}},
    "padding": {"max_items": 2, "max_clips": 1},
}
SNAKEFILE = f"""configfile: "config.yaml"
include: "{RULES / 'common.smk'}"
include: "{RULES / 'features.smk'}"
include: "{RULES / 'train.smk'}"
rule all:
    input: features_targets() + [padded_path("demo")]
"""


def snakemake(workdir: Path, *args: str) -> str:
    cmd = [sys.executable, "-m", "snakemake", "--cores", "2", "--directory", str(workdir), "-s", str(workdir / "Snakefile"),
           *args]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out.stdout + out.stderr


def planned_outputs(workdir: Path) -> set[str]:
    text = snakemake(workdir, "--dry-run")
    if "Nothing to be done" in text:
        return set()
    return {o for line in re.findall(r"^\s+output: (.*)$", text, flags=re.M) for o in line.split(", ")}


def test_tiny_model_rule_function_builds_a_loadable_model(tiny_env, tmp_path):
    from transformers import AutoModel, AutoTokenizer

    out = tiny_model_from_config({"kind": "bert", "seed": 3, "settings": {"vocab_size": 200, "hidden": 16}}, tmp_path / "m",
                                 data_dir=tiny_env.data, columns=DEFAULT_COLUMNS)
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors", "tokenizer.json",
                                                     "tokenizer_config.json"]
    assert AutoModel.from_pretrained(out).config.hidden_size == 16
    assert AutoTokenizer.from_pretrained(out).tokenize("连衣裙")[0] == "连"
    with pytest.raises(ValueError, match=r"unknown keys \['size'\]"):
        tiny_model_from_config({"kind": "bert", "size": 3}, tmp_path / "n", data_dir=tiny_env.data, columns=DEFAULT_COLUMNS)


def workflow_dir(env: TinyEnv, tmp_path: Path, config: dict) -> Path:
    work = tmp_path / "wf"
    shutil.copytree(env.data, work / "results" / "data")
    (work / "results" / "data" / "dataset.json").write_text(json.dumps({"root": str(env.root), "folds": {"k": 3}}))
    # The workflow checks the configured raw root at load; the validated data above stands in for its outputs.
    for table in ("streams", "anchors", "items", "clips"):
        (work / "raw").mkdir(exist_ok=True)
        shutil.copy2(env.data / f"{table}.parquet", work / "raw" / f"{table}.parquet")
    (work / "config.yaml").write_text(yaml.safe_dump({**config, "dataset": {"root": "raw", "simulate": False}}))
    (work / "Snakefile").write_text(SNAKEFILE)
    return work


def test_a_fresh_run_plans_every_shard_manifest_model_and_padded_file(tiny_env, tmp_path):
    config = json.loads(json.dumps(CONFIG))
    config["extraction"]["shards"] = 3
    work = workflow_dir(tiny_env, tmp_path, config)
    planned = planned_outputs(work)
    for modality, name in config["feature_sets"]["demo"].items():
        suffix = "h5" if modality in ("video", "audio") else "parquet"
        for k in range(3):
            assert f"results/features/{modality}/{name}/shard-{k}.{suffix}" in planned
            assert f"results/features/{modality}/{name}/shard-{k}.failures.parquet" in planned
        assert f"results/features/{modality}/{name}/manifest.json" in planned
    assert {"results/models/bert-tiny", "results/models/videomae-tiny", "results/models/wav2vec2-tiny"} <= planned
    assert {"results/padded/demo.h5", "results/padded/demo.truncated.parquet"} <= planned
    assert len(planned) == 5 * 3 * 2 + 5 + 3 + 2


@pytest.mark.slow
def test_full_run_then_only_changed_extractors_are_planned(tiny_env: TinyEnv, tmp_path):
    work = workflow_dir(tiny_env, tmp_path, CONFIG)
    snakemake(work, "--quiet")
    padded = read_padded(work / "results" / "padded" / "demo.h5")
    assert padded.dims()["commodity/mask"] == (2,) and padded.dims()["video/x"] == (1, 32)
    truncated = pl.read_parquet(work / "results" / "padded" / "demo.truncated.parquet")
    assert truncated.height > 0 and set(truncated["entity"].to_list()) <= {"commodity", "video", "audio"}
    manifest = json.loads((work / "results" / "features" / "image" / "resnet18" / "manifest.json").read_text())
    assert manifest["weights"] == "random-init" and manifest["dimension"] == 512 and manifest["failures"] == 0
    assert (work / "logs" / "features" / "image" / "resnet18" / "shard-0.log").exists()

    assert planned_outputs(work) == set()

    changed = json.loads(json.dumps(CONFIG))
    changed["extractors"]["resnet18"]["options"]["crop"] = 30
    (work / "config.yaml").write_text(yaml.safe_dump(changed))
    assert planned_outputs(work) == {
        "results/features/image/resnet18/shard-0.parquet",
        "results/features/image/resnet18/shard-0.failures.parquet",
        "results/features/image/resnet18/manifest.json",
        "results/padded/demo.h5",
        "results/padded/demo.truncated.parquet",
    }
