"""``python -m memf.whatif BUNDLE DATASET VARIANTS OUT``: predict the what-if variants VARIANTS (a .csv, .parquet or
.yaml of stream_id, label, anchor_id, items, room_from; docs/predict.md, "What if") of streams of the raw dataset
DATASET with the model bundle BUNDLE, and write whatif.{parquet,csv,json} (with the predict chain's files) to OUT.

Errors are one line (``memf error: ...``); ``MEMF_DEBUG=1`` shows the traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from memf.core.logs import report_cli_error


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m memf.whatif", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bundle", help="a bundle folder (results/bundles/<experiment> or results/bundles/best)")
    p.add_argument("dataset", help="raw dataset folder holding the planned streams and those the variants borrow from")
    p.add_argument("variants", help="the variants file (.csv, .parquet, .yaml)")
    p.add_argument("out", help="output folder")
    p.add_argument("--workers", type=int, default=2, help="decoding workers")
    p.add_argument("--model-device", default="cpu", help="where the bundle's models run (cpu, cuda, cuda:1)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        from memf.predict.predictor import load_bundle
        from memf.whatif.core import what_if

        bundle = load_bundle(args.bundle, device=args.model_device)
        frame = what_if(bundle, args.dataset, args.variants, args.out, workers=args.workers)
        print(f"{frame.height} variants of {frame['stream_id'].n_unique()} streams predicted with {bundle.label}: "
              f"{Path(args.out) / 'whatif.csv'}")
    except Exception as exc:  # one line for a user's mistake; the traceback for a bug, or with MEMF_DEBUG=1
        return report_cli_error(exc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
