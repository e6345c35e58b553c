"""The Snakemake workflow through its CLI: lint, whose config it reads, mistakes caught at load (one line each),
reruns that follow meaning, a user's own dataset, the report, and the tiny configuration end to end."""

from __future__ import annotations

import base64
import html
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
import yaml

from fakedata import write_dataset

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "configs" / "tiny.yaml"


def nothing_planned(out: subprocess.CompletedProcess[str]) -> bool:
    text = out.stdout + out.stderr
    return "Nothing to be done" in text or re.search(r"^total\s+0$", text, flags=re.M) is not None


def snakemake(*args: str, cwd: Path, snakefile: Path = ROOT / "Snakefile",
              env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "snakemake", "-s", str(snakefile), *args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=1800,
                          env={**os.environ, **(env or {})})


def job_counts(out: subprocess.CompletedProcess[str]) -> dict[str, int]:
    """Rule -> planned jobs, from a dry run's job stats table."""
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    if nothing_planned(out):
        return {}
    table = (out.stdout + out.stderr).split("Job stats:", 1)[1].split("Reasons:", 1)[0]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, flags=re.M)
            if m.group(1) not in ("total", "job")}


def planned(workdir: Path, *configfiles: str, snakefile: Path = ROOT / "Snakefile") -> set[str]:
    # One --configfile taking every file: a repeated --configfile flag would replace the earlier ones.
    out = snakemake("-n", "--configfile", str(TINY), *configfiles, cwd=workdir, snakefile=snakefile)
    return set(job_counts(out)) - {"all"}


def test_lint_is_clean():
    out = snakemake("--lint", cwd=ROOT)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Congratulations, your workflow is in a good condition!" in out.stdout + out.stderr


# --- whose config ----------------------------------------------------------------------------------------------


def test_a_config_runs_exactly_its_own_matrix(tmp_path):
    (tmp_path / "my.yaml").write_text("experiments:\n  memf: {model: memf, feature_set: demo, search: memf-demo}\n")
    jobs = job_counts(snakemake("-n", "--configfile", "my.yaml", cwd=tmp_path))
    assert jobs["fit"] == 5 and "fit_reference" not in jobs  # one experiment, five folds; not the demo's matrix
    assert jobs["pad"] == 1 and "pad_latent" not in jobs


def test_without_a_config_the_working_directory_one_or_else_the_shipped_demo_is_read(tmp_path):
    demo = job_counts(snakemake("-n", cwd=tmp_path))
    shipped = yaml.safe_load((ROOT / "config.yaml").read_text())
    neural = [e for e in shipped["experiments"].values() if e["model"] not in ("mean", "ridge", "hgb")]
    assert demo["fit"] == 5 * len(neural) and demo["fit_reference"] == 5 * (len(shipped["experiments"]) - len(neural))
    (tmp_path / "config.yaml").write_text("split: {folds: 3}\nexperiments:\n  ridge: {model: ridge, feature_set: demo}\n")
    own = job_counts(snakemake("-n", cwd=tmp_path))
    assert own["fit_reference"] == 3 and "fit" not in own
    assert not (tmp_path / "results").exists()  # a dry run writes nothing; a real one writes under the working dir


MISTAKES = {
    "top-level typo": ("trian: {lr: 1}\n", "config key 'trian': unknown key (accepted: columns, dataset"),
    "schema value": ("split: {folds: 1}\n", "config key 'split.folds': 1 is less than the minimum of 2"),
    "unknown model": ("experiments: {m: {model: memff, feature_set: demo}}\n",
                      "config key 'experiments.m.model': 'memff' is not a model (accepted: memf,"),
    "model option typo": ("experiments: {m: {model: memf, feature_set: demo, options: {widht: 3}}}\n",
                          "config key 'experiments.m.options': model 'memf': unknown option 'widht' (accepted:"),
    "missing feature set": ("experiments: {m: {model: memf, feature_set: nope}}\n",
                            "config key 'experiments.m.feature_set': 'nope' is not a feature set (known: demo"),
    "missing search space": ("experiments: {m: {model: memf, feature_set: demo, search: nospace}}\n",
                             "config key 'experiments.m.search': 'nospace' is not a search space"),
    "searched option of another model": (
        "experiments: {m: {model: mfb, feature_set: demo, search: memf-demo}}\n",
        "config key 'search_spaces.memf-demo.model.commodity_pool': not an option of model 'mfb'"),
    "unknown architecture": ("extractors: {resnet18: {kind: torchvision, model: resnet19}}\n",
                             "config key 'extractors.resnet18.model': 'resnet19' is not a torchvision architecture"),
    "extractor option typo": ("extractors: {resnet18: {kind: torchvision, model: resnet18, options: {rezise: 3}}}\n",
                              "config key 'extractors.resnet18.options.rezise': unknown option (accepted:"),
    "weights name": ("extractors: {resnet18: {kind: torchvision, model: resnet18, options: {weights: IMAGENET1K_V9}}}\n",
                     "config key 'extractors.resnet18.options.weights': 'IMAGENET1K_V9' is not a weights name"),
    "dataset root": ("dataset: {root: nowhere, simulate: false}\n", "config key 'dataset.root': 'nowhere' is not a folder"),
    "unknown bundle": ("predict: {bundle: nope}\n",
                       "config key 'predict.bundle': 'nope' is neither an experiment (known: "),
    "missing dataset to predict": ("predict: {bundle: memf, datasets: {next: nowhere}}\n",
                                   "config key 'predict.datasets.next': 'nowhere' is not a folder"),
    "media feature set without media": (
        "simulator: {media: false}\n",
        "config key 'experiments.memf.feature_set': 'demo'; simulator.media is false (no media are written), so only "
        "the feature set 'latent' is accepted"),
    "latent without the simulator": (
        "dataset: {root: ., simulate: false}\nexperiments: {m: {model: memf, feature_set: latent}}\n",
        "config key 'experiments.m.feature_set': 'latent' (the simulator's true latent factors) needs dataset.simulate"),
}


@pytest.mark.parametrize("case", sorted(MISTAKES))
def test_each_mistake_fails_at_load_with_one_line(case, tmp_path):
    text, expected = MISTAKES[case]
    if "root: ." in text:
        write_dataset(tmp_path, n_streams=4)
    (tmp_path / "bad.yaml").write_text(text)
    out = snakemake("-n", "--configfile", "bad.yaml", cwd=tmp_path)
    assert out.returncode != 0
    errors = [line for line in (out.stdout + out.stderr).splitlines() if line.startswith("memf config error:")]
    assert any(expected in line for line in errors), out.stderr[-2000:]
    assert "Traceback" not in out.stderr and "$schema" not in out.stderr and "properties" not in out.stderr
    assert not (tmp_path / "results").exists()


def test_a_hub_id_missing_from_the_offline_cache_is_named(tmp_path):
    (tmp_path / "bad.yaml").write_text(
        "extractors:\n  bert: {kind: transformers-text, model: bert-base-chinese}\n"
        "  resnet18: {kind: torchvision, model: resnet18, options: {weights: none}}\n"
        "  videomae-tiny: {kind: videomae, model: results/models/videomae-tiny}\n"
        "  wav2vec2-tiny: {kind: wav2vec2, model: results/models/wav2vec2-tiny}\n"
        "  log-standard: {kind: log-standard}\n"
        "feature_sets: {demo: {text: bert, image: resnet18, numeric: log-standard, video: videomae-tiny, "
        "audio: wav2vec2-tiny}}\n")
    out = snakemake("-n", "--configfile", "bad.yaml", cwd=tmp_path,
                    env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")})
    assert out.returncode != 0
    line = next(x for x in out.stderr.splitlines() if "extractors.bert.model" in x)
    assert "bert-base-chinese" in line and "hf download bert-base-chinese" in line


# --- a user's own dataset ----------------------------------------------------------------------------------------


def test_own_dataset_goes_through_validation(tmp_path):
    write_dataset(tmp_path / "mydata", n_streams=8)
    (tmp_path / "cfg.yaml").write_text("dataset: {root: mydata, simulate: false}\nsplit: {folds: 2}\n")
    out = snakemake("--cores", "2", "--configfile", "cfg.yaml", "--until", "validate", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    streams = pl.read_parquet(tmp_path / "results/data/streams.parquet")
    assert streams.height == 8 and sorted(streams["fold"].to_list()) == [0, 0, 0, 0, 1, 1, 1, 1]
    assert "kept 8 of 8 streams" in (tmp_path / "logs/data/validate.log").read_text()
    # Nothing changed: nothing to do.
    again = snakemake("-n", "--configfile", "cfg.yaml", "--until", "validate", cwd=tmp_path)
    assert nothing_planned(again)


def test_a_media_free_simulation_plans_no_media_job_and_rendering_and_probing_go_by_shard(tmp_path):
    (tmp_path / "free.yaml").write_text(
        "simulator: {n_streams: 30, media: false}\nextraction: {shards: 3}\nvalidation: {probe_shards: 2}\n"
        "experiments:\n  ridge-latent: {model: ridge, feature_set: latent, options: {pooling: set}}\n")
    jobs = job_counts(snakemake("-n", "--configfile", "free.yaml", cwd=tmp_path))
    assert set(jobs) == {"simulate", "validate", "pad_latent", "fit_reference", "all"}, jobs
    (tmp_path / "media.yaml").write_text("simulator: {n_streams: 30}\nextraction: {shards: 3}\n"
                                         "validation: {probe_shards: 2}\n")
    jobs = job_counts(snakemake("-n", "--configfile", "media.yaml", "--until", "validate", cwd=tmp_path))
    assert jobs == {"simulate": 1, "simulate_render": 3, "probe_media": 2, "validate": 1}, jobs


def test_probe_jobs_validate_as_the_validate_job_alone(tmp_path, monkeypatch):
    from memf.data.contract import DEFAULT_COLUMNS
    from memf.data.validate import validate_dataset

    write_dataset(tmp_path / "mydata", n_streams=6)
    (tmp_path / "mydata" / "media" / "room2.jpg").write_bytes(b"not an image")
    (tmp_path / "cfg.yaml").write_text("dataset: {root: mydata, simulate: false}\nsplit: {folds: 2}\n"
                                       "validation: {probe_shards: 2}\n")
    out = snakemake("--cores", "2", "--configfile", "cfg.yaml", "--until", "validate", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    probed = pl.concat([pl.read_parquet(tmp_path / f"results/data/probe/shard-{k}.parquet") for k in (0, 1)])
    assert probed["path"].is_unique().all() and probed.height == 3 + 6 + 12 + 24  # avatars, rooms, items, clips
    assert (tmp_path / "logs/data/probe/shard-1.log").is_file()
    monkeypatch.chdir(tmp_path)  # the workflow's root is relative to its folder: so are the files named in reasons
    validate_dataset("mydata", "alone", columns=DEFAULT_COLUMNS, target_offset=1.0, max_drop_fraction=0.25,
                     split_seed=0, folds=2)
    for name in ("streams", "items", "clips", "excluded"):
        assert pl.read_parquet(tmp_path / f"results/data/{name}.parquet").equals(
            pl.read_parquet(tmp_path / "alone" / f"{name}.parquet")), name
    assert "image does not decode" in pl.read_parquet(tmp_path / "alone" / "excluded.parquet")["reason"][0]


# --- the tiny configuration end to end, then what a change replans ---------------------------------------------


def test_tiny_workflow_writes_every_stage(tiny_run):
    from memf.core.metrics import regression_metrics

    for path in ("results/data/summary.md", "results/padded/demo.h5", "results/padded/latent.h5",
                 "results/tables/table9.md", "results/tables/table9.html", "results/tables/tuning.md",
                 "results/tables/ceilings.csv", "results/figures/fig4_scatter_density.png",
                 "results/figures/tuning_budget.png", "results/features/image/resnet18/manifest.json"):
        assert (tiny_run / path).is_file(), path
    run = tiny_run / "results/runs/memf/fold0"
    metrics = json.loads((run / "metrics.json").read_text())
    preds = pl.read_parquet(run / "predictions.parquet")
    test = preds.filter((pl.col("split") == "test") & (pl.col("seed") == 0))
    recomputed = regression_metrics(test["y_true"].to_numpy(), test["y_pred"].to_numpy())
    for key, value in recomputed.items():
        assert value == pytest.approx(metrics["seeds"]["0"]["test"][key], rel=1e-6, abs=1e-9)
    # Every stream is a test stream exactly once over the folds, and every tuned experiment had the same budget.
    tested = [pl.read_parquet(tiny_run / f"results/runs/memf/fold{k}/predictions.parquet")
              .filter((pl.col("split") == "test") & (pl.col("seed") == 0))["stream_id"].to_list() for k in range(3)]
    streams = pl.read_parquet(tiny_run / "results/data/streams.parquet")["stream_id"].to_list()
    assert sorted(sum(tested, [])) == sorted(streams)
    tuning = pl.read_csv(tiny_run / "results/tables/tuning.csv")
    assert tuning["trials"].n_unique() == 1 and tuning.height == 3 * 5  # 5 tuned experiments x 3 folds
    assert (tiny_run / "logs/runs/memf/fold0.log").is_file()


def test_an_unchanged_workflow_plans_nothing_and_speed_knobs_change_nothing(tiny_run, tmp_path):
    assert planned(tiny_run) == set(), "an unchanged workflow plans nothing"
    knobs = tmp_path / "knobs.yaml"
    knobs.write_text("extraction: {shards: 2, workers: 1, timeout_s: 7, batch_size: 3, device: cpu}\n"
                     "train: {epochs: 3, patience: 2, device: cpu, eval_batch_size: 5, checkpoint_every: 1}\n"
                     "validation: {probe_workers: 1, probe_timeout_s: 9}\n")
    assert planned(tiny_run, str(knobs)) == set()


def test_a_changed_extractor_replans_exactly_its_path(tiny_run, tmp_path):
    change = tmp_path / "image.yaml"
    config = yaml.safe_load(TINY.read_text())
    config["extractors"]["resnet18"]["options"]["resize"] = 40
    change.write_text(yaml.safe_dump({"extractors": config["extractors"]}))
    rules = planned(tiny_run, str(change))
    assert {"extract_image", "pad", "fit", "fit_reference", "tables", "figures"} <= rules
    assert not rules & {"simulate", "validate", "tiny_model", "extract_text", "extract_video", "extract_audio",
                        "extract_numeric", "pad_latent"}


def _repo_copy(tmp_path: Path) -> Path:
    """The workflow and its package in another folder, file times kept (Snakemake compares script times)."""
    copy = tmp_path / "repo"
    copy.mkdir()
    for name in ("Snakefile", "workflow", "src", "config.yaml", "envs", "profiles"):
        src = ROOT / name
        (shutil.copytree(src, copy / name, copy_function=shutil.copy2, ignore=shutil.ignore_patterns("__pycache__"))
         if src.is_dir() else shutil.copy2(src, copy / name))
    return copy


def test_code_changes_replan_what_they_compute(tiny_run, tmp_path):
    copy = _repo_copy(tmp_path)
    snakefile = copy / "Snakefile"
    assert planned(tiny_run, snakefile=snakefile) == set()
    with open(copy / "src/memf/models/blocks.py", "a") as fh:
        fh.write("# a comment is a change of the model code\n")
    jobs = job_counts(snakemake("-n", "--configfile", str(TINY), cwd=tiny_run, snakefile=snakefile))
    # The model code also makes the bundle's predictions: the tiny config's bundle and prediction are replanned, and
    # the ensemble of the runs whose predictions change.
    assert set(jobs) - {"all"} == {"fit", "ensemble", "tables", "figures", "export", "predict", "predict_truth"}
    assert jobs["fit"] == 3 * 6  # 6 neural experiments
    (copy / "src/memf/models/blocks.py").write_bytes((ROOT / "src/memf/models/blocks.py").read_bytes())
    with open(copy / "src/memf/report/tables.py", "a") as fh:
        fh.write("# a comment is a change of the tables code\n")
    assert planned(tiny_run, snakefile=snakefile) == {"tables", "figures"}


# --- the report --------------------------------------------------------------------------------------------------


def test_report_shows_every_table_inline_with_captions(tiny_run, tmp_path):
    report = tmp_path / "report.html"
    out = snakemake("--report", str(report), "--configfile", str(TINY), cwd=tiny_run)
    assert out.returncode == 0, out.stderr[-3000:]
    page = report.read_text()
    assert "memf" in page and "cross-validation folds" in page  # the workflow description
    embedded = [html.unescape(base64.b64decode(m).decode("utf-8", "replace"))
                for m in re.findall(r"data:text/html;charset=utf8;(?:filename=[^;,]*;)?base64,([A-Za-z0-9+/=]+)", page)]
    for table in ("table9", "table8", "ceilings", "tuning", "entity_importance", "table10", "../data/summary"):
        title = next(line for line in (tiny_run / f"results/tables/{table}.md").read_text().splitlines()
                     if line.startswith("# "))[2:]
        assert any(title in shown and "<table>" in shown for shown in embedded), table
    assert page.count("paired bootstrap") >= 1 and "expected best validation" in page


def test_tiny_workflow_numeric_policy_change_reruns_the_numeric_features_only(tiny_run, tmp_path):
    # Switching score from identity to signed_log1p accepts the same values: validation is not rerun, only the
    # numeric shards and what depends on them.
    change = tmp_path / "numeric.yaml"
    change.write_text("numeric: {columns: {anchor: {score: signed_log1p}, room: {duration: identity}}}\n")
    rules = planned(tiny_run, str(change))
    assert "extract_numeric" in rules and "pad" in rules
    assert not rules & {"simulate", "validate", "tiny_model", "extract_text", "extract_image", "extract_video",
                        "extract_audio"}
    # Making price signed too changes what validation accepts: validation reruns.
    change.write_text("numeric: {columns: {anchor: {score: signed_log1p}, commodity: {price: signed_log1p}}}\n")
    assert "validate" in planned(tiny_run, str(change))
