"""Which fusion wins in which simulator world (docs/simulator.md, "Worlds"; docs/training.md).

Each world is its own simulated dataset, so each is its own run of the workflow, in its own folder::

    python -m memf.report.worlds run --config config.worlds.yaml --out results/worlds --cores all
    python -m memf.report.worlds summary results/worlds --out results/tables

``run`` runs the workflow once per world (``simulator.world`` set on top of the given config, everything else
equal: the same matrix, folds, tuning budget and seeds) in ``<out>/<world>/``, then writes the summary. ``summary``
reads every world's ``results/tables/worlds.csv`` (the config's ``worlds`` table: its rows compared with MEMF by the
paired bootstrap within folds) and writes ``worlds.csv``, ``worlds.md`` and ``worlds.html``: per world and model the
pooled R², the difference from MEMF with its interval and verdict, the fractions of the oracle and of the latent
ceiling, and per world a plain sentence on the paper's claim (entity-first MEMF against the modality-first order).
The rows of a world's ``ceilings`` table (models fed the true latent factors, compared with MEMF on them) follow its
``worlds`` rows when it has one. ``--readme README.md`` also rewrites the README's text between
``<!-- worlds:begin -->`` and ``<!-- worlds:end -->``: a model x world table of R² and verdicts, and the sentences.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import polars as pl
import yaml

from memf.core.html import table_page
from memf.core.io import DataError, write_text
from memf.report.layout import TABLES_DIR, WORLDS_DIR
from memf.report.readme import update_readme
from memf.report.tables import write_csv
from memf.simulate.worlds import WORLDS as SIMULATOR_WORLDS

#: Every simulator world, in the simulator's registry order.
WORLDS: tuple[str, ...] = tuple(SIMULATOR_WORLDS)
TABLE = "worlds"
CEILINGS = "ceilings"
REFERENCE = "memf"
ORDER = "memf-modality-first"
ROOT = Path(__file__).resolve().parents[3]


def run_world(config: Path, folder: Path, overlay: dict, cores: str, extra: Sequence[str], what: str) -> None:
    """Run the workflow in ``folder`` on ``config`` with ``overlay`` on top (written to ``folder/world.yaml``)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "world.yaml"
    write_text(path, yaml.safe_dump(overlay))
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--directory", str(folder),
           "--cores", cores, "--configfile", str(config.resolve()), str(path.resolve()), *extra]
    print(f"{what}: {' '.join(cmd)}", flush=True)
    done = subprocess.run(cmd)
    if done.returncode != 0:
        raise SystemExit(f"{what}: the workflow failed (exit {done.returncode}); see {folder}/logs")


def run_worlds(config: Path, out: Path, worlds: list[str], cores: str, extra: list[str]) -> None:
    """Run the workflow once per world into ``out/<world>`` (a finished world plans nothing and costs nothing)."""
    simulator = yaml.safe_load(config.read_text()).get("simulator", {})
    for world in worlds:
        run_world(config, out / world, {"simulator": {**simulator, "world": world}}, cores, extra, f"world {world}")


def add_run_arguments(run: argparse.ArgumentParser, config: Path, out: str) -> None:
    """The arguments of a study's ``run`` command: its config, folder, worlds, cores and Snakemake's arguments."""
    run.add_argument("--config", type=Path, default=config)
    run.add_argument("--out", type=Path, default=Path(out))
    run.add_argument("--worlds", nargs="+", default=list(WORLDS), choices=WORLDS)
    run.add_argument("--cores", default="all")
    run.add_argument("snakemake_args", nargs="*", help="passed to every workflow run (after --)")


def load(folder: Path) -> pl.DataFrame:
    """A world's ``worlds`` table, then the model rows of its ``ceilings`` table (the oracle row is in the first)."""
    tables = folder / TABLES_DIR
    path = tables / f"{TABLE}.csv"
    if not path.is_file():
        raise DataError(f"{path}: missing; run the world's workflow with a `{TABLE}` table (config.worlds.yaml)")
    frames = [pl.read_csv(path, infer_schema_length=None)]
    if (tables / f"{CEILINGS}.csv").is_file():
        ceilings = pl.read_csv(tables / f"{CEILINGS}.csv", infer_schema_length=None)
        frames.append(ceilings.filter(pl.col("experiment") != "oracle"))
    return pl.concat(frames, how="diagonal_relaxed")


def claim(world: str, frame: pl.DataFrame) -> str:
    """One sentence on entity-first against modality-first fusion in ``world``, whichever way it goes."""
    order = frame.filter(pl.col("experiment") == ORDER)
    memf = frame.filter(pl.col("experiment") == REFERENCE)
    if order.height == 0 or memf.height == 0:
        return f"{world}: no {ORDER} or {REFERENCE} row."
    o = order.row(0, named=True)
    verdict = {"worse": "entity-first MEMF wins", "better": "modality-first wins", "borderline": "borderline",
               "not separable": "not separable"}
    features = frame.filter((pl.col("experiment") != "oracle") & (pl.col("feature_set") != "latent")
                            if "feature_set" in frame.columns else pl.col("experiment") != "oracle")
    best = features.sort("r2", descending=True).row(0, named=True)
    return (f"{world}: MEMF R² {memf['r2'][0]:.3f} vs modality-first {o['r2']:.3f} (Δ {-o['r2_diff']:+.3f} "
            f"[{-o['r2_hi']:+.3f}, {-o['r2_lo']:+.3f}]): {verdict.get(o['verdict'], o['verdict'])}; best on features "
            f"{best['label']} "
            f"(R² {best['r2']:.3f}).")


def summarise(folder: Path, out: Path, readme: Path | None = None) -> list[str]:
    """Write ``worlds.{csv,md,html}`` under ``out`` from every world under ``folder`` (and the README block, given
    ``readme``); return the sentences."""
    frames, sentences = [], []
    for world in WORLDS:
        if not (folder / world).is_dir():
            continue
        frame = load(folder / world).with_columns(pl.lit(world).alias("world"))
        frames.append(frame)
        sentences.append(claim(world, frame))
    if not frames:
        raise DataError(f"{folder}: no world folder ({', '.join(WORLDS)})")
    table = pl.concat(frames, how="diagonal_relaxed")
    cols = ["world", "label", "experiment", "feature_set", "r2", "r2_sd", "compared_to", "r2_diff", "r2_lo", "r2_hi",
            "verdict", "frac_oracle", "frac_latent", "n_parameters", "n_streams", "n_folds", "n_seeds", "settings"]
    table = table.select([c for c in cols if c in table.columns])
    write_csv(out / "worlds.csv", table)
    head = ["World", "Model", "R²", "ΔR² vs MEMF [95% CI]", "Verdict", "of oracle", "of latent"]

    def fmt(x: float | None, d: int = 3) -> str:
        return "" if x is None else f"{x:.{d}f}"

    rows = [[r["world"], r["label"], fmt(r["r2"]) + ("" if r["r2_sd"] is None else f" ± {fmt(r['r2_sd'])}"),
             "" if r["r2_diff"] is None else f"{r['r2_diff']:+.3f} [{r['r2_lo']:+.3f}, {r['r2_hi']:+.3f}]",
             r["verdict"] or "", fmt(r["frac_oracle"], 2), fmt(r["frac_latent"], 2)]
            for r in table.iter_rows(named=True)]
    note = ("Each world is a separate simulated dataset run with the same matrix, folds, tuning budget and seeds "
            "(config.worlds.yaml); rows as in the worlds' own tables (pooled over folds, paired bootstrap within "
            "folds, verdict on the R² interval). " + " ".join(sentences))
    title = "Which fusion wins in which world"
    lines = [f"# {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    write_text(out / "worlds.md", "\n".join([*lines, "", *sentences, ""]))
    write_text(out / "worlds.html", table_page(title, head, rows, note))
    if readme is not None:
        update_readme(readme, readme_section(table, sentences), marker="worlds")
    return sentences


def readme_section(table: pl.DataFrame, sentences: list[str]) -> str:
    """Models down, worlds across: each cell the pooled R² and, but for the reference rows, the difference from the
    row's reference with its interval and verdict; then the per-world sentences."""
    worlds = list(dict.fromkeys(table["world"].to_list()))
    labels = list(dict.fromkeys(table["label"].to_list()))
    cell: dict[tuple[str, str], str] = {}
    for r in table.iter_rows(named=True):
        text = f"{r['r2']:.3f}"
        if r["r2_diff"] is not None:
            text += f" ({r['r2_diff']:+.3f} [{r['r2_lo']:+.3f}, {r['r2_hi']:+.3f}], {r['verdict']})"
        cell[(r["label"], r["world"])] = text
    lines = ["| model | " + " | ".join(f"`{w}`" for w in worlds) + " |", "|---" * (len(worlds) + 1) + "|"]
    lines += ["| " + " | ".join([label, *(cell.get((label, w), "") for w in worlds)]) + " |" for label in labels]
    ref = table.filter(pl.col("experiment") == REFERENCE)
    info = (ref if ref.height else table).row(0, named=True)
    note = (f"R² of the pooled test predictions ({info['n_streams']} streams per world, {info['n_folds']} folds, "
            f"{info['n_seeds']} seed{'' if info['n_seeds'] == 1 else 's'} per neural model); in brackets the "
            "difference from MEMF on the same features "
            "(from MEMF (latents) for the rows fed the latent factors) with its paired bootstrap 95% interval and "
            "verdict. Generated by `python -m memf.report.worlds summary ... --readme README.md`.")
    return "\n".join([note, "", *lines, "", *(f"- {s}" for s in sentences)])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the workflow once per world, then summarise")
    add_run_arguments(run, ROOT / "config.worlds.yaml", WORLDS_DIR)
    run.add_argument("--tables", type=Path, default=Path(TABLES_DIR))
    summary = sub.add_parser("summary", help="summarise finished world runs")
    summary.add_argument("folder", type=Path)
    summary.add_argument("--out", type=Path, default=Path(TABLES_DIR))
    for command in (run, summary):
        command.add_argument("--readme", type=Path, help="also rewrite this README's worlds block")
    args = parser.parse_args(argv)
    if args.command == "run":
        run_worlds(args.config, args.out, args.worlds, args.cores, args.snakemake_args)
        folder, out = args.out, args.tables
    else:
        folder, out = args.folder, args.out
    try:
        for sentence in summarise(folder, out, args.readme):
            print(sentence)
    except DataError as exc:
        raise SystemExit(f"memf worlds: {exc}") from None


if __name__ == "__main__":
    main()
