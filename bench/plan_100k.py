"""Time `snakemake -n` (DAG planning) of the real workflow on a 100,000-stream dataset, for several shard counts.

The workflow plans from the raw tables alone: the job count is a function of the config (shards, extractors, feature
sets, experiments, seeds), never of the number of streams. This script writes a raw-dataset stand-in of the right
shape (the four tables of docs/data-format.md with the default column mapping; media paths are written but no media
files, which planning never opens), points a config at it with `dataset.simulate: false`, and times a dry run per
shard count. A small dataset with the same shard counts shows the job count does not move with the streams.

    python bench/plan_100k.py                        # 100k and 1k streams, shards 2, 64, 256
    python bench/plan_100k.py --streams 100000 --shards 512 --out /tmp/plan100k

Writes OUT/plan.json (timings and job counts) and prints one line per run.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import yaml

from memf.core.io import write_json, write_parquet, write_text
from memf.data.contract import DEFAULT_COLUMNS

ROOT = Path(__file__).resolve().parents[1]


def write_raw_standin(root: Path, n_streams: int, seed: int = 0) -> dict[str, int]:
    """Write streams/anchors/items/clips.parquet for ``n_streams`` streams under ``root``; return the row counts."""
    rng = np.random.default_rng(seed)
    n_anchors = max(1, n_streams // 4)
    stream_ids = [f"s{i:07d}" for i in range(n_streams)]
    anchor_ids = [f"a{i:06d}" for i in range(n_anchors)]

    def text(n: int, prefix: str) -> list[str]:
        return [f"{prefix} {i}" for i in range(n)]

    anchors = {"anchor_id": anchor_ids}
    anchors |= {c: text(n_anchors, c) for c in DEFAULT_COLUMNS["anchor"]["text"]}
    anchors |= {c: [f"media/anchor/{a}.jpg" for a in anchor_ids] for c in DEFAULT_COLUMNS["anchor"]["image"]}
    anchors |= {c: rng.gamma(2.0, 100.0, n_anchors) for c in DEFAULT_COLUMNS["anchor"]["numeric"]}

    streams = {"stream_id": stream_ids, "anchor_id": rng.choice(anchor_ids, n_streams).tolist(),
               "sales": rng.poisson(150.0, n_streams).astype(np.float64)}
    streams |= {c: text(n_streams, c) for c in DEFAULT_COLUMNS["room"]["text"]}
    streams |= {c: [f"media/room/{s}.jpg" for s in stream_ids] for c in DEFAULT_COLUMNS["room"]["image"]}
    streams |= {c: rng.uniform(600.0, 7200.0, n_streams) for c in DEFAULT_COLUMNS["room"]["numeric"]}

    n_items = rng.integers(2, 9, n_streams)
    item_stream = np.repeat(np.arange(n_streams), n_items)
    item_pos = np.concatenate([np.arange(k) for k in n_items])
    items = {"stream_id": [stream_ids[i] for i in item_stream],
             "item_id": [f"i{j:08d}" for j in range(len(item_stream))], "position": item_pos}
    items |= {c: text(len(item_stream), c) for c in DEFAULT_COLUMNS["commodity"]["text"]}
    item_images = [f"media/item/{j}.jpg" for j in range(len(item_stream))]
    items |= {c: item_images for c in DEFAULT_COLUMNS["commodity"]["image"]}
    items |= {c: rng.gamma(2.0, 50.0, len(item_stream)) for c in DEFAULT_COLUMNS["commodity"]["numeric"]}

    n_clips = rng.integers(1, 6, n_streams)
    clip_stream = np.repeat(np.arange(n_streams), n_clips)
    clip_pos = np.concatenate([np.arange(k) for k in n_clips])
    clips = []
    for kind, ext in (("video", "mp4"), ("audio", "wav")):
        clips.append(pl.DataFrame({
            "stream_id": [stream_ids[i] for i in clip_stream],
            "clip_id": [f"{kind[0]}{j:08d}" for j in range(len(clip_stream))],
            "kind": kind, "position": clip_pos,
            "path": [f"media/{kind}/{j}.{ext}" for j in range(len(clip_stream))],
        }))

    tables = {"streams": pl.DataFrame(streams), "anchors": pl.DataFrame(anchors),
              "items": pl.DataFrame(items), "clips": pl.concat(clips)}
    for name, frame in tables.items():
        write_parquet(root / f"{name}.parquet", frame)
    return {name: frame.height for name, frame in tables.items()}


def plan(workdir: Path, config: Path) -> tuple[float, int]:
    """Seconds one `snakemake -n` takes on ``config``, and the number of jobs it plans."""
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-n", "--quiet", "rules",
           "--configfile", str(config)]
    start = time.perf_counter()
    out = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    text = out.stdout + out.stderr
    if out.returncode != 0:
        raise RuntimeError(f"snakemake -n on {config} failed (exit {out.returncode}):\n{text[-4000:]}")
    total = re.search(r"^total\s+(\d+)\s*$", text, flags=re.MULTILINE)
    if total is None:
        raise RuntimeError(f"snakemake -n on {config}: no 'total N' line in its job stats:\n{text[-4000:]}")
    return seconds, int(total.group(1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, nargs="+", default=[100_000, 1_000], help="dataset sizes")
    parser.add_argument("--shards", type=int, nargs="+", default=[2, 64, 256], help="extraction.shards values")
    parser.add_argument("--out", type=Path, default=Path("results/bench/plan_100k"), help="work folder")
    args = parser.parse_args(argv)

    runs = []
    for n_streams in args.streams:
        workdir = (args.out / f"streams-{n_streams}").resolve()
        start = time.perf_counter()
        rows = write_raw_standin(workdir / "raw", n_streams)
        print(f"{n_streams} streams: wrote raw stand-in {rows} in {time.perf_counter() - start:.1f} s", flush=True)
        for shards in args.shards:
            config = workdir / f"shards-{shards}.yaml"
            write_text(config, yaml.safe_dump({"dataset": {"root": "raw", "simulate": False},
                                               "extraction": {"shards": shards}}))
            seconds, jobs = plan(workdir, config)
            runs.append({"streams": n_streams, "shards": shards, "jobs": jobs, "plan_seconds": round(seconds, 2)})
            print(f"streams={n_streams:>7} shards={shards:>4} jobs={jobs:>5} snakemake -n: {seconds:6.1f} s",
                  flush=True)
    write_json(args.out / "plan.json", {"runs": runs})
    by_shards: dict[int, set[int]] = {}
    for run in runs:
        by_shards.setdefault(run["shards"], set()).add(run["jobs"])
    varying = {s: sorted(j) for s, j in by_shards.items() if len(j) > 1}
    if varying:
        print(f"job count changes with the number of streams at equal shards: {varying}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
