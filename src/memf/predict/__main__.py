"""``python -m memf.predict BUNDLE DATASET OUT``: predict the raw dataset DATASET (docs/data-format.md; ``sales``
optional) with the model bundle BUNDLE and write the files of ``results/predict/{name}/`` to OUT (docs/predict.md).

``python -m memf.predict export EXPERIMENT OUT``: write the bundle of a trained experiment of this working directory's
``results/`` to OUT (``--fold K`` for one fold's seeds, ``--seeds`` for some seeds; by default every fold and seed).

Errors are one line (``memf error: ...``); ``MEMF_DEBUG=1`` shows the traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from memf.core.logs import report_cli_error


def _predict(args: argparse.Namespace) -> None:
    from memf.predict.predictor import load_bundle

    bundle = load_bundle(args.bundle, device=args.model_device)
    frame = bundle.predict(args.dataset, args.out, shards=args.shards, workers=args.workers, device=args.device,
                           max_drop_fraction=args.max_drop_fraction, figure_streams=args.figure_streams)
    print(f"{frame.height} streams predicted with {bundle.label}: {Path(args.out) / 'predictions.parquet'} "
          f"(not predicted: {Path(args.out) / 'unpredicted.csv'})")


def _export(args: argparse.Namespace) -> None:
    from memf.core.io import read_json
    from memf.data.layout import validated_dir
    from memf.features.layout import store_dir
    from memf.padding.layout import padded_path
    from memf.predict.export import export_bundle
    from memf.training.matrix import MODEL_JSON, RUNS_DIR, run_dir

    # The workflow's folders, relative to the working directory that holds results/.
    work = Path(args.results).parent
    runs = work / run_dir(args.experiment, 0).parent
    folds = [args.fold] if args.fold is not None else sorted(
        int(p.name[len("fold"):]) for p in runs.glob("fold*") if (p / MODEL_JSON).is_file())
    if not folds:
        raise ValueError(f"{runs}: no finished run of experiment '{args.experiment}'")
    dirs = {k: run_dir(args.experiment, k, work / RUNS_DIR) for k in folds}
    feature_set = read_json(dirs[folds[0]] / MODEL_JSON)["feature_set"]
    bundle = export_bundle(experiment=args.experiment, run_dirs=dirs, padded_path=work / padded_path(feature_set),
                           data_dir=work / validated_dir(), features_dir=work / store_dir(), out=args.out,
                           seeds=args.seeds, level=args.coverage, extraction_shards=args.shards)
    iv = bundle["intervals"]
    print(f"bundle {args.out}: {args.experiment}, folds {folds}; {100 * iv['level']:.0f}% interval +-{iv['q']:.3f} "
          f"log(sales), test coverage {iv['test_coverage']:.3f} on {iv['test_streams']} test streams")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m memf.predict", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bundle", help="a bundle folder (results/bundles/<experiment>), or the word export (see below)")
    p.add_argument("dataset", help="raw dataset folder to predict")
    p.add_argument("out", help="output folder")
    p.add_argument("--shards", type=int, default=None, help="extraction shards (default: the bundle's)")
    p.add_argument("--workers", type=int, default=2, help="decoding workers")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"), help="where the extractors run")
    p.add_argument("--model-device", default="cpu", help="where the bundle's models run (cpu, cuda, cuda:1)")
    p.add_argument("--max-drop-fraction", type=float, default=0.25,
                   help="fail when more of the streams cannot be predicted (default 0.25, as validation.max_drop_fraction)")
    p.add_argument("--figure-streams", type=int, default=6, help="streams shown in drivers.png")
    return p


def export_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m memf.predict export", description="write a model bundle")
    p.add_argument("experiment", help="a trained (neural) experiment of results/runs")
    p.add_argument("out", help="the bundle folder to write (replaced whole)")
    p.add_argument("--fold", type=int, default=None, help="only this fold's seeds (default: every fold: an ensemble)")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="only these seeds (default: all)")
    p.add_argument("--coverage", type=float, default=0.9, help="nominal coverage of the interval (default 0.9)")
    p.add_argument("--shards", type=int, default=2, help="the extraction shard count the features were made with")
    p.add_argument("--results", default="results", help="the workflow's results folder")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        if argv[:1] == ["export"]:
            _export(export_parser().parse_args(argv[1:]))
        else:
            _predict(parser().parse_args(argv))
    except Exception as exc:  # one line for a user's mistake; the traceback for a bug, or with MEMF_DEBUG=1
        return report_cli_error(exc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
