"""Learning curves: how much data does MEMF need? (README; docs/training.md, "Learning curves").

Under the fixed protocol (config ``split.mode: fixed``; :class:`memf.data.folds.FoldPlan`) every run fold is one
(training size, replicate): nested training subsets of one pool, all validated on the same streams and tested on the
same streams. A **curves table** (the tables rule writes one per ``evaluation.tables`` entry in this mode) has per
training size and row:

- R²: each replicate's and seed's test R², averaged; ± their sd; a bootstrap interval of that mean (the shared test
  streams resampled, the same resample for every replicate and seed);
- ΔR² against the reference (``evaluation.compare_to``) with its paired bootstrap interval and verdict
  (:func:`memf.report.bootstrap.paired_differences`, one group: the test streams are shared);
- the fraction of the oracle (the simulator's noiseless expected log sales on the same test streams);
- the **signal coefficient**: each prediction regressed on the world's signal and on the rest of the expected log
  sales (OLS with an intercept); the signal's coefficient, averaged over replicates and seeds (1: the model carries all
  of the signal; 0: none of it), for the worlds that have a signal (``contrib_<signal>`` in ground_truth.parquet);
- the budget: the gain of the last doubling of trials (:mod:`memf.report.budget`), mean over replicates, and how often
  the final runs trained to the epoch cap; a verdict resting on an under-tuned row reads "under-tuned".

At the largest size the reference's entity vectors are probed (:mod:`memf.training.probes`): ``curves_probes.*``.

Across worlds (one workflow run per world, as :mod:`memf.report.worlds`)::

    python -m memf.report.curves run --config config.curves.yaml --out results/curves --cores all
    python -m memf.report.curves summary results/curves --readme README.md

``run`` runs every world phase by phase (:func:`phases`: the first replicate of every size but the largest, then the
other replicates, then the largest size), so an interrupted study has every world at the small sizes first;
``summary`` writes ``curves.{csv,md,html}`` (every world's rows), ``results/figures/curves.png`` (R² against training
streams, a panel per world, the bootstrap bands and the oracle line) and, per world, the smallest size from which MEMF
is better than the best reference and than the modality-first order.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import yaml

from memf.core.io import DataError, read_json
from memf.core.metrics import regression_metrics
from memf.data.folds import FoldPlan
from memf.report.bootstrap import CHUNK_ELEMENTS, ResampledTruth, paired_differences, resample_chunks, verdict
from memf.report.budget import budget_state, budget_verdict, cap_bound, study_gain
from memf.report.experiments import RunSet, load_runset
from memf.report.layout import CURVES_DIR, FIGURES_DIR, TABLES_DIR
from memf.report.readme import update_readme
from memf.report.tables import write_csv, write_table
from memf.report.worlds import ROOT, WORLDS, add_run_arguments, run_world
from memf.training.matrix import METRICS_FILE, RUNS_DIR, Experiment

TABLE = "curves"
PROBES = "curves_probes"
REFERENCE = "memf"
ORDER = "memf-modality-first"
REFERENCE_MODELS = ("hgb-set", "ridge-set")


# --- one world: the curves table --------------------------------------------------------------------------------


@dataclass
class Truth:
    """The simulator's truth on the shared test streams."""

    expected: np.ndarray  # [N] expected log sales
    signal: np.ndarray | None  # [N] the world's signal term, or None in a world without one
    name: str | None  # the signal's name ("match", "fit", "trend")


def load_truth(ground_truth: str | Path, ground_truth_json: str | Path, stream_id: np.ndarray) -> Truth:
    """The expected log sales and the world's signal (``ground_truth.json`` ``world.credit`` names it) of
    ``stream_id``, in that order."""
    credit = read_json(ground_truth_json).get("world", {}).get("credit", {})
    names = sorted(credit)
    if len(names) > 1:
        raise DataError(f"{ground_truth_json}: the world has {len(names)} signals ({names}); the curves read one")
    table = pl.read_parquet(ground_truth)
    order = pl.DataFrame({"stream_id": np.asarray(stream_id).astype(str)})
    joined = order.join(table, on="stream_id", how="left", maintain_order="left")
    if joined["expected_log_sales"].null_count():
        raise DataError(f"{ground_truth}: no row for {joined['expected_log_sales'].null_count()} test streams")
    name = names[0] if names else None
    signal = joined[f"contrib_{name}"].to_numpy() if name else None
    return Truth(joined["expected_log_sales"].to_numpy(), signal, name)


def signal_coefficient(preds: np.ndarray, truth: Truth) -> float | None:
    """Mean over the rows of ``preds`` [K, N] of the signal's OLS coefficient when a row is regressed on the signal,
    the rest of the expected log sales and an intercept (None in a world without a signal)."""
    if truth.signal is None:
        return None
    design = np.column_stack([np.ones_like(truth.signal), truth.signal, truth.expected - truth.signal])  # [N, 3]
    coef, *_ = np.linalg.lstsq(design, preds.T, rcond=None)  # [3, K]
    return float(coef[1].mean())


def r2_interval(y_true: np.ndarray, preds: np.ndarray, n_boot: int, seed: int, level: float) -> tuple[float, float]:
    """Percentile interval of the mean R² of ``preds`` [K, N] over resamples of the (shared) test streams."""
    boot = np.concatenate([ResampledTruth(y_true, idx).seed_mean(preds)["r2"] for idx in
                           resample_chunks(np.zeros(len(y_true)), n_boot, seed, max(1, CHUNK_ELEMENTS // len(y_true)))])
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(boot, [tail, 100 - tail])
    return float(lo), float(hi)


@dataclass
class Curves:
    """Everything a world's curves table reads (see :func:`curve_table`)."""

    experiments: dict[str, Experiment]
    plan: FoldPlan
    folds: Sequence[int]  # the run folds that ran
    compare_to: Mapping[str, str]
    ground_truth: Path
    ground_truth_json: Path
    epochs_cap: int
    tuning_records: Sequence[str | Path] = ()
    n_boot: int = 1000
    boot_seed: int = 0
    level: float = 0.95
    runs_root: Path = RUNS_DIR
    _stacks: dict[tuple[str, int], tuple[RunSet, np.ndarray]] = field(default_factory=dict)

    def sizes(self) -> dict[int, list[int]]:
        """Training size -> the run folds (replicates) of it that ran, ascending sizes."""
        out: dict[int, list[int]] = {}
        for fold in sorted(self.folds):
            out.setdefault(self.plan.runs[fold][0], []).append(fold)
        return dict(sorted(out.items()))

    def stack(self, name: str, size: int) -> tuple[RunSet, np.ndarray]:
        """The first replicate's runs of ``name`` at ``size`` and every replicate's and seed's test predictions
        [R x S, N] (the replicates share the test streams)."""
        if (name, size) not in self._stacks:
            runs = [load_runset(self.experiments[name], [fold], self.runs_root) for fold in self.sizes()[size]]
            for other in runs[1:]:
                if other.stream_id.tolist() != runs[0].stream_id.tolist():
                    raise DataError(f"experiment {name}: replicates of size {size} have different test streams")
            self._stacks[(name, size)] = runs[0], np.concatenate([r.preds for r in runs])
        return self._stacks[(name, size)]

    def records(self, name: str, size: int) -> list[Path]:
        """The tuning studies of ``name`` at ``size`` (one per replicate)."""
        folds = {f"fold{fold}" for fold in self.sizes()[size]}
        return [Path(p) for p in self.tuning_records if Path(p).parent.parent.name == name
                and Path(p).parent.name in folds]

    def cap(self, name: str, size: int) -> tuple[float | None, float | None]:
        """Fractions of the final runs (replicates x seeds) that trained to the epoch cap, and that early stopping
        ended; None for a reference model."""
        counts = np.array([cap_bound(self.experiments[name].run_dir(fold, self.runs_root) / METRICS_FILE,
                                     self.epochs_cap) for fold in self.sizes()[size]]).sum(0)
        return (None, None) if counts[2] == 0 else (counts[0] / counts[2], counts[1] / counts[2])


def _size_rows(c: Curves, size: int, rows: Mapping[str, str]) -> list[dict[str, Any]]:
    base = c.compare_to.get(c.experiments[next(iter(rows))].feature_set)
    first, _ = c.stack(next(iter(rows)), size)
    y, ids = first.y_true, first.stream_id
    truth = load_truth(c.ground_truth, c.ground_truth_json, ids)
    oracle = regression_metrics(y, truth.expected)["r2"]
    others = {name: c.stack(name, size)[1] for name in rows if name != base}
    diffs = (paired_differences(y, np.zeros(len(y)), others, c.stack(base, size)[1], c.n_boot, c.boot_seed, c.level)
             if base in rows and others else {})
    base_gain = study_gain(c.records(base, size)) if base else None
    out = []
    for name, label in rows.items():
        runs, preds = c.stack(name, size)
        if runs.stream_id.tolist() != ids.tolist():
            raise DataError(f"experiments {name} and {next(iter(rows))}: different test streams at size {size}")
        r2s = [regression_metrics(y, p)["r2"] for p in preds]
        lo, hi = r2_interval(y, preds, c.n_boot, c.boot_seed, c.level)
        gain = study_gain(c.records(name, size))
        cap, early = c.cap(name, size)
        row = {"train_size": size, "replicates": len(c.sizes()[size]), "runs": len(preds), "experiment": name,
               "label": label, "model": runs.experiment.model, "feature_set": runs.experiment.feature_set,
               "r2": float(np.mean(r2s)), "r2_sd": float(np.std(r2s, ddof=1)) if len(r2s) > 1 else None,
               "r2_ci_lo": lo, "r2_ci_hi": hi, "oracle_r2": oracle, "frac_oracle": float(np.mean(r2s)) / oracle,
               "signal": truth.name, "signal_coef": signal_coefficient(preds, truth), "compared_to": base,
               "budget_gain": gain, "budget": budget_state(gain), "cap_bound": cap, "early_stopped": early,
               "n_test": len(y), "r2_diff": None, "r2_lo": None, "r2_hi": None,
               "verdict": "reference" if name == base else None}
        if name in diffs:
            iv = diffs[name]["r2"]
            row.update(r2_diff=iv.diff, r2_lo=iv.lo, r2_hi=iv.hi,
                       verdict=budget_verdict(verdict(iv, higher_is_better=True), gain, base_gain))
        out.append(row)
    return out


SCHEMA = {"train_size": pl.Int64, "replicates": pl.Int64, "runs": pl.Int64, "experiment": pl.String,
          "label": pl.String, "model": pl.String, "feature_set": pl.String, "r2": pl.Float64, "r2_sd": pl.Float64,
          "r2_ci_lo": pl.Float64, "r2_ci_hi": pl.Float64, "oracle_r2": pl.Float64, "frac_oracle": pl.Float64,
          "signal": pl.String, "signal_coef": pl.Float64, "compared_to": pl.String, "r2_diff": pl.Float64,
          "r2_lo": pl.Float64, "r2_hi": pl.Float64, "verdict": pl.String, "budget_gain": pl.Float64,
          "budget": pl.String, "cap_bound": pl.Float64, "early_stopped": pl.Float64, "n_test": pl.Int64}


def curve_table(c: Curves, rows: Mapping[str, str]) -> pl.DataFrame:
    """Every training size that ran x every row (experiment -> label) of one table."""
    if not rows:
        raise ValueError("a curves table needs at least one row")
    out = [r for size in c.sizes() for r in _size_rows(c, size, rows)]
    return pl.DataFrame([{k: r.get(k) for k in SCHEMA} for r in out], schema=SCHEMA)


def _fmt(x: float | None, digits: int = 3, sign: bool = False) -> str:
    return "" if x is None else (f"{x:+.{digits}f}" if sign else f"{x:.{digits}f}")


def curve_cells(frame: pl.DataFrame, level: float) -> tuple[list[str], list[list[str]]]:
    """The curves table for people."""
    head = ["World", "Training streams", "Model", "R² (± sd over runs)", f"R² {level:.0%} CI", "of oracle",
            "Signal coef.", f"ΔR² vs MEMF [{level:.0%} CI]", "Verdict", "Last doubling of trials", "Epoch cap hit"]
    has_world = "world" in frame.columns
    rows = []
    for r in frame.iter_rows(named=True):
        d = r["r2_diff"]
        cells = [r["world"] if has_world else "", f"{r['train_size']:,} ×{r['replicates']}", r["label"],
                 _fmt(r["r2"]) + ("" if r["r2_sd"] is None else f" ± {_fmt(r['r2_sd'])}"),
                 f"[{_fmt(r['r2_ci_lo'])}, {_fmt(r['r2_ci_hi'])}]", _fmt(r["frac_oracle"], 2),
                 _fmt(r["signal_coef"], 2), "" if d is None else f"{d:+.3f} [{r['r2_lo']:+.3f}, {r['r2_hi']:+.3f}]",
                 r["verdict"] or "", "" if r["budget_gain"] is None else f"{r['budget_gain']:+.3f} ({r['budget']})",
                 "" if r["cap_bound"] is None else f"{r['cap_bound']:.0%}"]
        rows.append(cells if has_world else cells[1:])
    return (head if has_world else head[1:]), rows


def caption(level: float, n_boot: int | None) -> str:
    """What a curves table shows (``n_boot``: the resamples, or None where the worlds' tables are gathered)."""
    resamples = "resamples" if n_boot is None else f"{n_boot} resamples"
    return (
        "Fixed protocol: every training size is a nested subset of one pool, validated on the same streams and tested "
        "on the same streams; ×R: replicates (training subsets). R²: mean over replicates and seeds, ± their sd, and "
        f"a {level:.0%} bootstrap interval of that mean ({resamples} of the test streams, the same for every "
        "replicate). ΔR² = row - MEMF, paired bootstrap on the same resamples; verdict as in the other tables, "
        "'under-tuned' when the losing side (either side, for an undecided verdict) still gained more than 0.005 "
        "validation R² from its last doubling of trials. Signal coef.: the world "
        "signal's coefficient when the predictions are regressed on it and on the rest of the expected log sales (1 = "
        "all of it, 0 = none). Epoch cap hit: final runs that trained to the cap (early stopping never fired)."
    )


def write_curves(out_dir: Path, name: str, frame: pl.DataFrame, title: str, level: float,
                 n_boot: int | None) -> list[Path]:
    """``{name}.csv``, ``.md`` and ``.html`` of a curves frame."""
    head, rows = curve_cells(frame, level)
    return write_table(out_dir, name, frame, title, head, rows, caption(level, n_boot))


# --- one world: probes of MEMF's entity vectors at the largest size ----------------------------------------------


def entity_truth(ground_truth: str | Path, ground_truth_json: str | Path,
                 stream_id: np.ndarray) -> dict[str, np.ndarray]:
    """Entity -> its true contribution to the expected log sales on ``stream_id``: ``contrib_<entity>`` plus its
    credited share of each world signal (``ground_truth.json`` ``world.credit``)."""
    credit = read_json(ground_truth_json).get("world", {}).get("credit", {})
    order = pl.DataFrame({"stream_id": np.asarray(stream_id).astype(str)})
    table = order.join(pl.read_parquet(ground_truth), on="stream_id", how="left", maintain_order="left")
    out = {}
    for column in table.columns:
        entity = column.removeprefix("contrib_")
        if column.startswith("contrib_") and entity not in credit and entity != "interaction":
            out[entity] = table[column].to_numpy().copy()
    for signal, shares in credit.items():
        for entity, share in shares.items():
            out[entity] = out[entity] + share * table[f"contrib_{signal}"].to_numpy()
    return out


def probe_rows(c: Curves, name: str, padded: str | Path) -> pl.DataFrame:
    """Per entity: the test R² of ridge probes of ``name``'s entity vectors for the entity's true contribution, at
    the largest training size that ran (mean over its replicates and seeds), of the same architecture untrained (the
    baseline), and the contribution's sd."""
    from memf.training.probes import entity_vectors, probe_entities

    size, folds = list(c.sizes().items())[-1]
    exp = c.experiments[name]
    scores: dict[tuple[str, bool], list[float]] = {}
    sd: dict[str, float] = {}
    for fold in folds:
        for seed in exp.seeds:
            for trained in (True, False):
                entities, ids, vectors = entity_vectors(exp.run_dir(fold, c.runs_root), padded, fold, seed,
                                                        trained=trained)
                truth = {split: entity_truth(c.ground_truth, c.ground_truth_json, ids[split]) for split in ids}
                for entity, r2 in probe_entities(entities, vectors, truth).items():
                    scores.setdefault((entity, trained), []).append(r2)
                    sd[entity] = float(np.std(truth["test"][entity]))
    return pl.DataFrame([{"train_size": size, "experiment": name, "entity": e,
                          "probe_r2": float(np.mean(scores[(e, True)])),
                          "probe_r2_untrained": float(np.mean(scores[(e, False)])), "runs": len(scores[(e, True)]),
                          "contribution_sd": sd[e]} for e in sd])


def probed(tables: Mapping[str, Mapping[str, Any]], experiments: Mapping[str, Experiment],
           compare_to: Mapping[str, str]) -> str | None:
    """The experiment whose entity vectors are probed: the reference of the first table's first row, when it is MEMF
    (the only model with one vector per entity); else None."""
    first = next(iter(tables.values()), None)
    if first is None or not first["rows"]:
        return None
    base = compare_to.get(experiments[next(iter(first["rows"]))].feature_set)
    return base if base is not None and experiments[base].model == "memf" else None


def build_curves(tables: Mapping[str, Mapping[str, Any]], c: Curves, out_dir: str | Path,
                 padded: Mapping[str, str | Path]) -> list[Path]:
    """Write every table of ``tables`` as a curves table, and ``curves_probes.*`` for the reference of the first
    table's feature set when its model has entity vectors (``padded``: feature set -> its store)."""
    out_dir = Path(out_dir)
    written: list[Path] = []
    for name, spec in tables.items():
        frame = curve_table(c, dict(spec["rows"]))
        written += write_curves(out_dir, name, frame, spec.get("title", name), c.level, c.n_boot)
    base = probed(tables, c.experiments, c.compare_to)
    if base is not None:
        frame = probe_rows(c, base, padded[c.experiments[base].feature_set])
        head = ["Training streams", "Model", "Entity", "Probe R² (test)", "Untrained", "Runs", "Contribution sd"]
        cells = [[f"{r['train_size']:,}", r["experiment"], r["entity"], _fmt(r["probe_r2"]),
                  _fmt(r["probe_r2_untrained"]), str(r["runs"]), _fmt(r["contribution_sd"])]
                 for r in frame.iter_rows(named=True)]
        note = ("Ridge probes (RidgeCV) of each entity's vector (the Multi-Entity Transformer's input) fitted on the "
                "training streams for the entity's true contribution (its contrib_ column plus its credited share "
                "of the world's signal), scored on the test streams; Untrained: the same probe of the same "
                "architecture with its initial weights (what training added is the difference).")
        written += write_table(out_dir, PROBES, frame, "What MEMF's entity vectors hold", head, cells, note)
    return written


# --- across worlds: the runs, the summary, the figure, the README block -------------------------------------------


def phases(plan: FoldPlan) -> list[list[int]]:
    """Run folds in the order a study runs them, cumulatively: the first replicate of every size but the largest,
    then every replicate of those sizes, then everything (the largest sizes cost the most)."""
    largest = max(size for size, _ in plan.runs)
    small = [k for k, (size, _) in enumerate(plan.runs) if size < largest]
    steps = [[k for k in small if plan.runs[k][1] == 0], small, list(range(plan.k))]
    out: list[list[int]] = []
    for step in steps:
        if step and (not out or step != out[-1]):
            out.append(step)
    return out


def run_curves(config: Path, out: Path, worlds: Sequence[str], cores: str, extra: Sequence[str]) -> None:
    """Run the workflow once per world and phase into ``out/<world>`` (finished jobs are kept: a rerun resumes)."""
    settings = yaml.safe_load(config.read_text())
    plan = FoldPlan.from_config({"seed": 0, **settings["split"]})
    for step in phases(plan):
        for world in worlds:
            overlay = {"simulator": {**settings.get("simulator", {}), "world": world},
                       "split": {**settings["split"], "run_folds": step}}
            run_world(config, out / world, overlay, cores, extra, f"world {world}, run folds {step}")


def load_worlds(folder: Path, name: str = TABLE) -> pl.DataFrame | None:
    """Every world's table ``name`` under ``folder`` (``<world>/results/tables/<name>.csv``) with a ``world`` column,
    or None when no world has it."""
    frames = []
    for world in WORLDS:
        path = folder / world / TABLES_DIR / f"{name}.csv"
        if path.is_file():
            frame = pl.read_csv(path, schema_overrides=SCHEMA if name == TABLE else None)
            frames.append(frame.with_columns(pl.lit(world).alias("world")))
    if not frames:
        return None
    table = pl.concat(frames, how="diagonal_relaxed")
    return table.select("world", *(c for c in table.columns if c != "world"))


def smallest_winning_size(frame: pl.DataFrame, against: Sequence[str]) -> tuple[int | None, int]:
    """The smallest training size from which MEMF is better than every one of ``against`` at every larger size run
    (the verdict of that row against MEMF is "worse"), or None ("not within" the largest size run); and that size."""
    sizes = sorted(frame["train_size"].unique().to_list())
    wins = []
    for size in sizes:
        rows = frame.filter((pl.col("train_size") == size) & pl.col("experiment").is_in(list(against)))
        wins.append(rows.height > 0 and all(v == "worse" for v in rows["verdict"].to_list()))
    first = None
    for size, won in zip(reversed(sizes), reversed(wins)):
        if not won:
            break
        first = size
    return first, sizes[-1]


def best_reference(frame: pl.DataFrame, size: int) -> str | None:
    rows = frame.filter((pl.col("train_size") == size) & pl.col("experiment").is_in(list(REFERENCE_MODELS)))
    return rows.sort("r2", descending=True)["experiment"][0] if rows.height else None


def world_sentence(world: str, frame: pl.DataFrame) -> str:
    """Per world: where MEMF beats the best reference and the modality-first order, with the largest size's
    figures, whichever way it goes."""
    sizes = sorted(frame["train_size"].unique().to_list())
    largest = frame.filter(pl.col("train_size") == sizes[-1])
    memf = largest.filter(pl.col("experiment") == REFERENCE)
    if memf.height == 0:
        return f"{world}: no MEMF row."
    parts = [f"{world}: at {sizes[-1]:,} training streams MEMF R² {memf['r2'][0]:.3f} "
             f"({memf['frac_oracle'][0]:.2f} of the oracle)"]
    for label, names in (("the best reference", [best_reference(frame, s) for s in sizes]), ("modality-first", [ORDER])):
        names = sorted({n for n in names if n})
        first, last = smallest_winning_size(frame, names)
        row = largest.filter(pl.col("experiment").is_in(names)).sort("r2", descending=True)
        if row.height:
            r = row.row(0, named=True)
            parts.append(f"{label} ({r['label']}) {r['r2']:.3f}, Δ vs MEMF {r['r2_diff']:+.3f} "
                         f"[{r['r2_lo']:+.3f}, {r['r2_hi']:+.3f}] ({r['verdict']}); MEMF better "
                         + (f"from {first:,} streams" if first is not None else f"not within {last:,} streams"))
    tuned = frame.filter(pl.col("budget") == "under-tuned")
    parts.append(f"{tuned.height} of {frame.height} rows under-tuned")
    capped = frame.filter(pl.col("cap_bound").is_not_null())
    if capped.height:
        share = float((capped["cap_bound"] * capped["runs"]).sum() / capped["runs"].sum())
        parts.append(f"the epoch cap bound {share:.0%} of the neural models' final runs")
    return "; ".join(parts) + "."


def draw_curves(frame: pl.DataFrame, out: Path) -> None:
    """R² against training streams (log axis), a panel per world, each model's bootstrap band, the oracle line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from memf.core.io import atomic_path

    worlds = [w for w in WORLDS if w in set(frame["world"].to_list())]
    fig, axes = plt.subplots(1, len(worlds), figsize=(4.2 * len(worlds), 4), sharey=True, squeeze=False)
    for ax, world in zip(axes[0], worlds):
        part = frame.filter(pl.col("world") == world).sort("train_size")
        for name in dict.fromkeys(part["experiment"].to_list()):
            rows = part.filter(pl.col("experiment") == name)
            x = rows["train_size"].to_numpy()
            (line,) = ax.plot(x, rows["r2"].to_numpy(), marker="o", markersize=3, label=rows["label"][0],
                              linewidth=2 if name == REFERENCE else 1)
            ax.fill_between(x, rows["r2_ci_lo"].to_numpy(), rows["r2_ci_hi"].to_numpy(), alpha=0.15,
                            color=line.get_color())
        ax.axhline(part["oracle_r2"][0], color="black", linestyle="--", linewidth=1, label="Oracle")
        ax.set_xscale("log")
        sizes = sorted(part["train_size"].unique().to_list())
        ax.set_xticks(sizes, [f"{s:,}" for s in sizes])
        ax.minorticks_off()
        ax.set_title(world)
        ax.set_xlabel("training streams")
    axes[0][0].set_ylabel("test R² (95% bootstrap band)")
    axes[0][0].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def summarise(folder: Path, out: Path, figures: Path, readme: Path | None = None, marker: str = TABLE) -> list[str]:
    """Write ``curves.{csv,md,html}`` under ``out`` and, where a world has two sizes or more, the figure
    ``<marker>.png`` under ``figures`` from every world under ``folder`` (and, given ``readme``, its block between
    the ``marker`` comments); return the per-world sentences."""
    table = load_worlds(folder)
    if table is None:
        raise DataError(f"{folder}: no world has a curves table ({', '.join(WORLDS)}; run the curves config)")
    sentences = [world_sentence(w, table.filter(pl.col("world") == w)) for w in dict.fromkeys(table["world"])]
    write_curves(out, TABLE, table, "Learning curves in every world", 0.95, None)
    probes = load_worlds(folder, PROBES)
    if probes is not None:
        write_csv(out / f"{PROBES}.csv", probes)
    curve = table.group_by("world").agg(pl.col("train_size").n_unique().alias("sizes"))["sizes"].max() > 1
    figure = figures / f"{marker}.png" if curve else None
    if figure is not None:
        draw_curves(table, figure)
    if readme is not None:
        link = Path(os.path.relpath(figure.resolve(), readme.resolve().parent)).as_posix() if figure else None
        update_readme(readme, readme_section(table, sentences, probes, link, marker), marker=marker)
    return sentences


def probe_lines(probes: pl.DataFrame) -> list[str]:
    """World x entity: the probe R² of MEMF's trained entity vectors (of its untrained ones in brackets)."""
    entities = list(dict.fromkeys(probes["entity"].to_list()))
    lines = ["| world | streams | " + " | ".join(entities) + " |", "|---" * (len(entities) + 2) + "|"]
    for world in dict.fromkeys(probes["world"].to_list()):
        part = probes.filter(pl.col("world") == world)
        cells = {r["entity"]: f"{r['probe_r2']:.2f} ({r['probe_r2_untrained']:.2f})" for r in part.iter_rows(named=True)}
        lines.append(f"| `{world}` | {part['train_size'][0]:,} | " + " | ".join(cells.get(e, "") for e in entities)
                     + " |")
    return lines


def readme_section(table: pl.DataFrame, sentences: Sequence[str], probes: pl.DataFrame | None = None,
                   figure: str | None = f"{FIGURES_DIR}/curves.png", marker: str = TABLE) -> str:
    """The figure (``figure``: its path from the README; None: no figure), per world and size each model's R² with
    its difference from MEMF and verdict, the sentences, and the probes of MEMF's entity vectors at the largest size.
    ``marker`` names the README block in the command the note quotes."""
    worlds = list(dict.fromkeys(table["world"].to_list()))
    lines = [f"![Learning curves]({figure})", ""] if figure else []
    lines += ["| world | training streams | " + " | ".join(dict.fromkeys(table["label"].to_list())) + " | oracle |",
              "|---" * (len(dict.fromkeys(table["label"].to_list())) + 3) + "|"]
    for world in worlds:
        part = table.filter(pl.col("world") == world)
        for size in sorted(part["train_size"].unique().to_list()):
            rows = part.filter(pl.col("train_size") == size)
            cells = []
            for label in dict.fromkeys(table["label"].to_list()):
                r = rows.filter(pl.col("label") == label)
                if r.height == 0:
                    cells.append("")
                    continue
                r = r.row(0, named=True)
                text = f"{r['r2']:.3f}"
                if r["r2_diff"] is not None:
                    text += f" ({r['r2_diff']:+.3f} [{r['r2_lo']:+.3f}, {r['r2_hi']:+.3f}], {r['verdict']})"
                elif r["budget"] == "under-tuned":
                    text += " (under-tuned)"
                cells.append(text)
            reps = rows["replicates"][0]
            lines.append(f"| `{world}` | {size:,}{f' ×{reps}' if reps > 1 else ''} | " + " | ".join(cells)
                         + f" | {rows['oracle_r2'][0]:.3f} |")
    note = (f"Test R² on the same {table['n_test'][0]:,} streams at every size (mean over replicates ×R); in brackets "
            "the difference "
            "from MEMF with its paired bootstrap 95% interval and verdict ('under-tuned': the losing side, or either "
            "side of an undecided verdict, still gained more than 0.005 validation R² from its last doubling of "
            "trials). Generated by `python -m memf.report.curves summary ... --readme README.md"
            f"{'' if marker == TABLE else f' --marker {marker}'}` from the curves.csv it writes under `--tables` "
            "(every column: signal coefficients, budgets, epoch caps).")
    out = [note, "", *lines, "", *(f"- {s}" for s in sentences)]
    if probes is not None:
        out += ["", "What MEMF's entity vectors hold at the largest size run: the test R² of a ridge probe of each "
                "entity's vector for that entity's true contribution (its credited share of the world's signal "
                "included); in brackets the same probe of the untrained architecture.", "", *probe_lines(probes)]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the workflow once per world and phase, then summarise")
    add_run_arguments(run, ROOT / "config.curves.yaml", CURVES_DIR)
    summary = sub.add_parser("summary", help="summarise finished world runs")
    summary.add_argument("folder", type=Path)
    for command in (run, summary):
        command.add_argument("--tables", type=Path, default=Path(TABLES_DIR))
        command.add_argument("--figures", type=Path, default=Path(FIGURES_DIR))
        command.add_argument("--readme", type=Path, help="also rewrite this README's curves block")
        command.add_argument("--marker", default=TABLE, help="the README block (<!-- MARKER:begin --> ... end) and "
                             "the figure's name (default: curves)")
    args = parser.parse_args(argv)
    if args.command == "run":
        run_curves(args.config, args.out, args.worlds, args.cores, args.snakemake_args)
    try:
        for sentence in summarise(args.out if args.command == "run" else args.folder, args.tables, args.figures,
                                  args.readme, args.marker):
            print(sentence)
    except DataError as exc:
        raise SystemExit(f"memf curves: {exc}") from None


if __name__ == "__main__":
    main()
