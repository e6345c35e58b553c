"""memf.resources: every rule's memory and runtime follow the data. The requests cover the measured peaks
(bench/resources_measured.json, written by bench/resources_bench.py) at 1k and 100k streams, at demo and paper
dimensions, without asking for more than twice; every rule of the workflow has a model; what a job is planned with
(streams, bytes per stream, model features) comes from the config and the raw data; and a SLURM dry run of 100,000
paper-dimension streams requests what the model says."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from memf.config import load_config
from memf.resources import (
    MIN_MEM_MB,
    RULES,
    ResourcePlan,
    fit_need,
    linear_need,
    model_features,
    pad_need,
    reference_need,
    tables_need,
)

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "workflow/schemas/config.schema.yaml"
MEASURED = json.loads((ROOT / "bench" / "resources_measured.json").read_text())
#: Model features of the set statistics and their reduction (pooled width, widest reduced block, components): demo
#: dimensions (unreduced) and paper dimensions (38,420 reduced to 2,068; the widest block, the items' text, 15,360).
SET_FEATURES = {"demo": (4180, (0, 0, 0)), "paper": (2068, (38420, 15360, 256))}


def config(tmp_path: Path, n: int = 1000, paper: bool = False, **changes) -> dict:
    """The demo config with ``n`` simulated streams; ``paper``: 768-d text, video and audio and 2048-d images."""
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    cfg["simulator"]["n_streams"] = n
    if paper:
        for name in ("bert-tiny", "videomae-tiny", "wav2vec2-tiny"):
            cfg["tiny_models"][name]["settings"]["hidden"] = 768
        cfg["feature_sets"]["demo"]["image"] = "resnet50"
    cfg.update(changes)
    load_config(cfg, SCHEMA, tmp_path)
    return cfg


def modelled_need(rule: str, dims: str, case: str, n: int) -> tuple[float, object]:
    """(peak MiB at n streams extrapolated from the two measured points, the request at n)."""
    entry = next(e for e in MEASURED if (e["rule"], e["dims"], e["case"]) == (rule, dims, case))
    first = entry["points"][0]
    peak = first["peak_mib"] + entry["per_stream_bytes"] * (n - first["n"]) / 2**20
    n_train = round(0.6 * n)
    if rule == "fit_reference":
        features, reduction = SET_FEATURES[dims]
        request = reference_need(case.split("-")[0], n, first["padded_bytes"], features, 3, n_train, reduction)
    elif rule == "fit":
        request = fit_need(n, first["padded_bytes"], 3, 2, n_train)
    elif rule == "tables":
        request = tables_need(n, 11, 10, 2000)
    elif rule in ("pad", "pad_latent"):
        request = pad_need(rule, n, first["padded_bytes"])
    else:
        request = linear_need(rule, n)
    return peak, request


@pytest.mark.parametrize("n", [1_000, 100_000])
@pytest.mark.parametrize("case", [(e["rule"], e["dims"], e["case"]) for e in MEASURED],
                         ids=[f"{e['rule']}-{e['dims']}-{e['case']}" for e in MEASURED])
def test_requests_cover_the_measured_peak_and_not_twice_more(case, n):
    peak, request = modelled_need(*case, n)
    assert request.mem_mb >= peak, (peak, request)
    assert request.mem_mb <= 2 * max(peak, MIN_MEM_MB), (peak, request)


@pytest.mark.parametrize("case", [(e["rule"], e["dims"], e["case"]) for e in MEASURED],
                         ids=[f"{e['rule']}-{e['dims']}-{e['case']}" for e in MEASURED])
def test_requested_time_covers_the_measured_cpu_time(case):
    entry = next(e for e in MEASURED if (e["rule"], e["dims"], e["case"]) == case)
    for point in entry["points"]:
        _, request = modelled_need(*case, point["n"])
        assert request.runtime * 60 >= point["cpu_s"], (point, request)


def test_the_store_bounds_the_model_repeats_are_the_code_constants():
    from memf.padding import batches, pad
    from memf.resources import BLOCK_ROWS, DEFAULT_CACHE_MB, PAD_BLOCK_ROWS

    assert (PAD_BLOCK_ROWS, BLOCK_ROWS, DEFAULT_CACHE_MB) == (pad.PAD_BLOCK, batches.BLOCK_ROWS,
                                                             batches.DEFAULT_CACHE_MB)


def test_every_rule_of_the_workflow_has_a_model(tmp_path):
    # The demo's rules, with the media probe's jobs turned on (rule probe_media exists only then).
    (tmp_path / "config.yaml").write_text("validation: {probe_shards: 1}\n")
    out = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--list-rules"],
                         cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    rules = set(out.stdout.split()) - {"all"}
    assert rules and rules == set(RULES), (sorted(rules - RULES), sorted(RULES - rules))


def test_the_plan_reads_bytes_per_stream_and_features_from_the_config(tmp_path):
    demo, paper = ResourcePlan(config(tmp_path)), ResourcePlan(config(tmp_path, paper=True))
    assert demo.padded_bytes("demo") == 27_766  # the demo's results/padded/demo.h5, measured
    # 4 bytes x [anchor (4 x 768 + 2048 + 8) + room (2 x 768 + 2048 + 1) + 8 items (5 x 768 + 2048 + 2) + 5 clips x
    # (768 + 768)] + 18 mask bytes (docs/cluster.md)
    assert paper.padded_bytes("demo") == 254_070
    assert model_features(demo, "hgb-set") == SET_FEATURES["demo"]
    assert model_features(paper, "hgb-set") == SET_FEATURES["paper"]
    assert model_features(paper, "ridge") == (2059, (9995, 2048, 256)) and model_features(paper, "mean")[0] == 0
    assert demo.notes == [] and paper.notes == []


def test_the_stream_count_comes_from_the_raw_tables_footer(tmp_path):
    spec = importlib.util.spec_from_file_location("plan_100k", ROOT / "bench" / "plan_100k.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    bench.write_raw_standin(tmp_path / "raw", 37)
    plan = ResourcePlan(config(tmp_path, dataset={"root": str(tmp_path / "raw"), "simulate": False},
                               experiments={"memf": {"model": "memf", "feature_set": "demo"}}))
    assert plan.streams() == 37
    assert ResourcePlan(config(tmp_path, n=123)).streams() == 123  # simulated: the simulator's size


def test_a_retried_job_asks_for_more(tmp_path):
    plan = ResourcePlan(config(tmp_path, n=50_000, paper=True))
    wildcards = {"experiment": "hgb-set", "fold": "0"}
    first = plan.need("fit_reference", wildcards)
    assert plan.mem_mb("fit_reference")(wildcards, 1) == first.mem_mb
    assert plan.mem_mb("fit_reference")(wildcards, 3) == 3 * first.mem_mb
    assert plan.runtime("fit_reference")(wildcards, 2) == 2 * first.runtime


def test_an_unknown_extractor_width_is_noted_in_one_line(tmp_path):
    cfg = config(tmp_path)
    cfg["extractors"]["bert-tiny"]["model"] = "some-org/not-in-any-cache"
    plan = ResourcePlan(cfg)
    assert len(plan.notes) == 1 and "'bert-tiny'" in plan.notes[0] and "\n" not in plan.notes[0]
    assert plan.padded_bytes("demo") > ResourcePlan(config(tmp_path)).padded_bytes("demo")  # planned with 1024


def dry_run_jobs(text: str) -> list[tuple[str, dict[str, str], dict[str, str]]]:
    """(rule, wildcards, resources) of every job `snakemake -n` printed."""
    jobs = []
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", text):
        head = re.match(r"(?:local)?rule (\w+):", block)
        res = re.search(r"^\s+resources: (.*)$", block, flags=re.MULTILINE)
        wild = re.search(r"^\s+wildcards: (.*)$", block, flags=re.MULTILINE)
        if head and res:
            parse = lambda line: dict(item.split("=", 1) for item in line.split(", "))  # noqa: E731
            jobs.append((head.group(1), parse(wild.group(1)) if wild else {}, parse(res.group(1))))
    return jobs


def test_a_slurm_dry_run_of_100k_paper_streams_requests_what_the_model_says(tmp_path):
    """The raw tables of 100,000 streams (bench/plan_100k.py's stand-in), paper dimensions: the SLURM dry run shows
    each job's modelled memory and time; with the padded store pad and fit stay under what the profile held as
    constants before (pad 8,000 MB, fit 16,000 MB)."""
    spec = importlib.util.spec_from_file_location("plan_100k", ROOT / "bench" / "plan_100k.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    bench.write_raw_standin(tmp_path / "raw", 100_000)
    experiments = {"memf": {"model": "memf", "feature_set": "demo"},
                   "ridge-set": {"model": "ridge", "feature_set": "demo", "options": {"pooling": "set"},
                                 "seeds": [0]},
                   "hgb-set": {"model": "hgb", "feature_set": "demo", "options": {"pooling": "set"},
                               "search": "hgb", "seeds": [0]}}
    cfg = config(tmp_path, paper=True, dataset={"root": str(tmp_path / "raw"), "simulate": False},
                 experiments=experiments, extraction={"shards": 8}, split={"run_folds": [0]})
    cfg["feature_sets"] = {"demo": cfg["feature_sets"]["demo"]}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    out = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--configfile",
                          str(tmp_path / "config.yaml"), "--profile", str(ROOT / "profiles" / "slurm"), "-n"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    plan = ResourcePlan(cfg)
    assert plan.streams() == 100_000 and plan.padded_bytes("demo") == 254_070
    seen = {}
    for rule, wildcards, resources in dry_run_jobs(out.stdout + out.stderr):
        if rule == "all":
            continue
        expected = plan.need(rule, wildcards)
        assert resources["mem_mb"] == str(expected.mem_mb), (rule, wildcards, resources)
        assert resources["runtime"] == str(expected.runtime), (rule, wildcards, resources)
        seen[rule] = int(resources["mem_mb"])
    assert {"validate", "pad", "fit", "fit_reference", "tables", "extract_video"} <= set(seen)
    # The padded store bounds pad and fit at 100k paper streams (before it the model asked 118 GB and 56 GB, where the
    # profile held 8,000 and 16,000 MB); the chunked bootstrap keeps the tables at the minimum request.
    assert seen["pad"] < 8000 and seen["fit"] < 16000 and seen["tables"] == MIN_MEM_MB
