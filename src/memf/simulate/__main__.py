"""Command line: write a simulated raw dataset outside the workflow.

    python -m memf.simulate --root DIR [--config config.yaml] [--n-streams N] [--seed S] [--world W] [--no-media]
                            [--shards K]

Reads the ``simulator`` and ``columns`` sections of the config (``columns`` defaults to the paper's tables). Writes
the tables, then renders every shard's media in this process (``--shards``: how many render records list them; the
files are the same for any value); ``--no-media`` (or ``simulator.media: false``) writes the tables only.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

from memf.data.contract import DEFAULT_COLUMNS
from memf.simulate.worlds import WORLDS
from memf.simulate.writer import simulate


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m memf.simulate", description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, required=True, help="output folder of the raw dataset")
    parser.add_argument("--config", type=Path, default=Path("config.yaml"),
                        help="pipeline config (default: %(default)s)")
    parser.add_argument("--n-streams", type=int, help="override simulator.n_streams")
    parser.add_argument("--seed", type=int, help="override simulator.seed")
    parser.add_argument("--world", choices=list(WORLDS), help="override simulator.world")
    parser.add_argument("--no-media", action="store_true", help="write no media (as simulator.media: false)")
    parser.add_argument("--shards", type=int, default=1, help="render records to list the media in (default: 1)")
    args = parser.parse_args(argv)

    with open(args.config, encoding="utf-8") as fh:
        config = yaml.safe_load(fh)
    if not isinstance(config, dict) or "simulator" not in config:
        parser.error(f"{args.config}: no 'simulator' section")
    cfg = dict(config["simulator"])
    if args.n_streams is not None:
        cfg["n_streams"] = args.n_streams
    if args.seed is not None:
        cfg["seed"] = args.seed
    if args.world is not None:
        cfg["world"] = args.world
    if args.no_media:
        cfg["media"] = False
    if args.shards < 1:
        parser.error(f"--shards {args.shards}: expected at least 1")
    summary = simulate(args.root, cfg, config.get("columns", DEFAULT_COLUMNS), shards=args.shards)
    print(
        f"wrote {summary.n_streams} streams, {summary.n_anchors} anchors, {summary.n_items} items, "
        f"{summary.n_video_clips} video and {summary.n_audio_clips} audio clips, {summary.n_images} images"
        f"{'' if summary.media else ' (no media)'}, "
        f"{summary.n_defects} defects to {summary.root} in {summary.seconds:.1f} s; target mean "
        f"{summary.target_mean:.3f}, sd {summary.target_sd:.3f}, oracle R^2 {summary.oracle_r2}"
    )


if __name__ == "__main__":
    main()
