"""The result tables (the paper's Tables 7-10 and Fig. 5, the references, the ceilings), recomputed from the runs'
``predictions.parquet``, and the tuning record.

Each table lists experiments (config ``evaluation.tables.<name>.rows``: experiment -> label). For every row:

- **pooled** metrics: the test predictions of all folds pooled (every stream once), each metric computed per seed
  and averaged over seeds; ``n_streams`` is the number of streams pooled;
- the **spread**: mean and sd of each metric over the folds x seeds runs;
- the **ceilings** (simulated data): the fraction of the oracle R² (the simulator's noiseless expected log sales on
  the same streams) and of the latent ceiling (the best pooled R² of the models fed the simulator's true latent
  factors, ``evaluation.ceilings.latent``);
- the **paired comparison** with the feature set's reference run (``evaluation.compare_to``): the difference of the
  pooled metrics and its bootstrap interval, resampling streams within folds (:mod:`memf.report.bootstrap`), and a
  plain verdict on R²: better, worse, borderline (an interval end within the rerun tolerance of 0,
  :data:`memf.report.bootstrap.VERDICT_TOLERANCE`), or not separable;
- the settings the tuning chose per fold, and the model's parameter count.

:func:`entity_importance` compares the leave-one-entity-out ranking with the simulator's true entity importance;
:func:`ensemble_comparison` compares the ensemble (memf.training.ensemble) with the best single model among its
candidates.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from scipy.stats import spearmanr

from memf.core.html import table_page
from memf.core.io import DataError, atomic_path, read_json, write_json, write_text
from memf.core.metrics import METRIC_LABELS, METRICS, regression_metrics
from memf.data.contract import ENTITIES
from memf.report.bootstrap import VERDICT_TOLERANCE, Interval, paired_differences, verdict
from memf.report.budget import BUDGET_TOLERANCE, budget_state, budget_verdict, doubling_gain, study_gain, trial_scores
from memf.report.experiments import RunSet, load_runset
from memf.training.matrix import ENSEMBLE, MODEL_JSON, RUNS_DIR, Experiment
from memf.training.runs import expected_log_sales

log = logging.getLogger(__name__)

ORACLE_LABEL = "Oracle (simulator's expected log sales)"
LATENT_LABEL = "Latent ceiling (best model on the true latent factors)"


def pooled(runs: RunSet) -> dict[str, float]:
    """Each metric of the pooled test predictions, computed per seed and averaged over seeds."""
    per_seed = [regression_metrics(runs.y_true, p) for p in runs.preds]
    return {m: float(np.mean([s[m] for s in per_seed])) for m in METRICS}


def sales_scale(y_true: np.ndarray, preds: np.ndarray, offset: float) -> dict[str, float]:
    """MAE and MAPE of predicted sales (``exp(prediction) - offset``, clipped at 0) against the sales, averaged over
    seeds: what a merchant planning stock reads, where the log-scale metrics weigh a miss on a small stream like a
    miss on a big one. MAPE skips streams without sales (scikit-learn's MAPE would divide by its epsilon)."""
    sales = np.exp(y_true) - offset
    sold = sales > 0
    mae, mape = [], []
    for p in preds:
        predicted = np.maximum(np.exp(p) - offset, 0.0)
        mae.append(float(np.mean(np.abs(predicted - sales))))
        mape.append(float(np.mean(np.abs(predicted[sold] - sales[sold]) / sales[sold])) if sold.any() else float("nan"))
    return {"sales_mae": float(np.mean(mae)), "sales_mape": float(np.mean(mape))}


def spread(runs: RunSet) -> dict[str, float | None]:
    """Mean and sd (ddof 1; None for a single run) of each metric over the folds x seeds runs."""
    values: dict[str, list[float]] = {m: [] for m in METRICS}
    for fold in runs.folds:
        sel = runs.fold == fold
        for p in runs.preds:
            scores = regression_metrics(runs.y_true[sel], p[sel])
            for m in METRICS:
                values[m].append(scores[m])
    out: dict[str, float | None] = {}
    for m, v in values.items():
        out[f"{m}_runs_mean"] = float(np.mean(v))
        out[f"{m}_sd"] = float(np.std(v, ddof=1)) if len(v) > 1 else None
    return out


def settings_summary(params: dict[int, dict[str, Any]]) -> str:
    """The chosen settings over folds: a number chosen on a continuous scale as its range ("lr 0.0011-0.0086"),
    anything else as its most frequent value with how many folds chose it ("width=32 (4/5)")."""
    if not any(params.values()):
        return ""
    n = len(params)
    parts = []
    for key in sorted({k for p in params.values() for k in p}):
        values = [p[key] for p in params.values() if key in p]
        name = key.split(".", 1)[1]
        if all(isinstance(v, float) for v in values):
            low, high = min(values), max(values)
            parts.append(f"{name} {low:.2g}" + ("" if low == high else f"-{high:.2g}"))
            continue
        value, count = Counter(json.dumps(v) for v in values).most_common(1)[0]
        parts.append(f"{name}={value.strip(chr(34))}" + ("" if count == n else f" ({count}/{n})"))
    return ", ".join(parts)


class TableBuilder:
    """Builds tables from runs, caching each experiment's pooled runs; each table's paired comparisons are computed
    in one chunked bootstrap pass per reference (memf.report.bootstrap.paired_differences)."""

    def __init__(
        self,
        experiments: dict[str, Experiment],
        folds: Sequence[int],
        compare_to: dict[str, str],
        n_boot: int,
        boot_seed: int,
        level: float,
        runs_root: Path = RUNS_DIR,
        ground_truth: str | Path | None = None,
        latent_ceiling: Sequence[str] = (),
        target_offset: float = 1.0,
        tuning_records: Sequence[str | Path] = (),
    ) -> None:
        self.experiments, self.folds, self.compare_to = experiments, list(folds), compare_to
        by_name: dict[str, list[Path]] = {}
        for path in map(Path, tuning_records):  # results/tuning/{experiment}/fold{k}/trials.parquet
            by_name.setdefault(path.parent.parent.name, []).append(path)
        #: experiment -> the gain of its last doubling of trials (memf.report.budget; absent: untuned)
        self.gains = {name: study_gain(paths) for name, paths in by_name.items()}
        self.target_offset = target_offset
        self.n_boot, self.boot_seed, self.level = n_boot, boot_seed, level
        self.runs_root = Path(runs_root)
        self.ground_truth = ground_truth
        self._runs: dict[str, RunSet] = {}
        for fs, name in compare_to.items():
            if name not in experiments:
                raise ValueError(f"evaluation.compare_to.{fs}: experiment '{name}' is not in experiments")
        self.latent = self._latent_ceiling(list(latent_ceiling)) if ground_truth is not None else None

    def runs(self, name: str) -> RunSet:
        if name not in self.experiments:
            raise ValueError(f"table row '{name}' is not an experiment (known: {', '.join(self.experiments)})")
        if name not in self._runs:
            self._runs[name] = load_runset(self.experiments[name], self.folds, self.runs_root)
        return self._runs[name]

    def _latent_ceiling(self, names: list[str]) -> dict[str, Any] | None:
        if not names:
            return None
        r2 = {n: pooled(self.runs(n))["r2"] for n in names}
        best = max(r2, key=r2.get)
        return {"experiment": best, "r2": r2[best], "all": r2}

    def comparisons(self, names: Sequence[str]) -> dict[str, dict[str, Interval]]:
        """Row -> metric -> the paired difference with its feature set's reference (``evaluation.compare_to``), for
        the rows that have one (not the reference itself); one bootstrap pass per reference, whose resampled metrics
        are computed once for all its rows.

        Raises:
            DataError: a row and its reference were tested on different streams.
        """
        by_base: dict[str, dict[str, np.ndarray]] = {}
        for name in names:
            base = self.compare_to.get(self.runs(name).experiment.feature_set)
            if base is None or base == name:
                continue
            runs, base_runs = self.runs(name), self.runs(base)
            if base_runs.stream_id.tolist() != runs.stream_id.tolist():
                raise DataError(f"experiments {name} and {base}: different test streams, cannot pair them")
            by_base.setdefault(base, {})[name] = runs.preds
        out: dict[str, dict[str, Interval]] = {}
        for base, rows in by_base.items():
            base_runs = self.runs(base)
            out.update(paired_differences(base_runs.y_true, base_runs.fold, rows, base_runs.preds, self.n_boot,
                                          self.boot_seed, self.level))
        return out

    def oracle_r2(self, runs: RunSet) -> float | None:
        if self.ground_truth is None:
            return None
        return regression_metrics(runs.y_true, expected_log_sales(self.ground_truth, runs.stream_id))["r2"]

    def row(self, name: str, label: str, diffs: dict[str, Interval] | None) -> dict[str, Any]:
        """One table row (see the module docstring); ``diffs``: its paired comparison (:meth:`comparisons`)."""
        runs = self.runs(name)
        exp = runs.experiment
        row: dict[str, Any] = {
            "label": label, "experiment": name, "model": exp.model, "feature_set": exp.feature_set,
            "n_seeds": len(exp.seeds), "n_folds": len(runs.folds), "n_streams": len(runs.y_true),
            "n_parameters": int(np.mean(list(runs.n_parameters.values()))) if runs.n_parameters else None,
            "settings": settings_summary(runs.params),
        }
        row.update(pooled(runs))
        row.update(spread(runs))
        row.update(sales_scale(runs.y_true, runs.preds, self.target_offset))
        oracle = self.oracle_r2(runs)
        row["frac_oracle"] = row["r2"] / oracle if oracle else None
        row["frac_latent"] = row["r2"] / self.latent["r2"] if self.latent and self.latent["r2"] > 0 else None
        base_name = self.compare_to.get(exp.feature_set)
        row["compared_to"] = base_name
        row["budget_gain"] = self.gains.get(name)
        row["budget"] = budget_state(row["budget_gain"])
        row["verdict"] = "reference" if base_name == name else None
        if base_name is None or base_name == name:
            row.update({f"{m}_{k}": None for m in METRICS for k in ("diff", "lo", "hi")})
            return row
        assert diffs is not None, name  # table() computes every row's comparison first
        for m, iv in diffs.items():
            row.update({f"{m}_diff": iv.diff, f"{m}_lo": iv.lo, f"{m}_hi": iv.hi})
        row["verdict"] = budget_verdict(verdict(diffs["r2"], higher_is_better=True), row["budget_gain"],
                                        self.gains.get(base_name))
        return row

    def oracle_row(self, runs: RunSet) -> dict[str, Any]:
        """The simulator's expected log sales scored as a prediction on the same streams."""
        assert self.ground_truth is not None
        truth = expected_log_sales(self.ground_truth, runs.stream_id)
        row: dict[str, Any] = {
            "label": ORACLE_LABEL, "experiment": "oracle", "model": "oracle", "feature_set": None, "n_seeds": 0,
            "n_folds": len(runs.folds), "n_streams": len(runs.y_true), "frac_oracle": 1.0,
        }
        row.update(regression_metrics(runs.y_true, truth))
        row.update(sales_scale(runs.y_true, truth[None, :], self.target_offset))
        for fold in runs.folds:
            sel = runs.fold == fold
            for m, v in regression_metrics(runs.y_true[sel], truth[sel]).items():
                row.setdefault(f"_{m}", []).append(v)
        for m in METRICS:
            v = row.pop(f"_{m}")
            row[f"{m}_runs_mean"], row[f"{m}_sd"] = float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else None
        row["frac_latent"] = row["r2"] / self.latent["r2"] if self.latent and self.latent["r2"] > 0 else None
        return row

    def table(self, rows: dict[str, str]) -> pl.DataFrame:
        """All rows of one table (experiment -> label), plus the oracle row on simulated data."""
        if not rows:
            raise ValueError("a table needs at least one row")
        diffs = self.comparisons(list(rows))
        out = [self.row(name, label, diffs.get(name)) for name, label in rows.items()]
        if self.ground_truth is not None:
            out.append(self.oracle_row(self.runs(next(iter(rows)))))
        return pl.DataFrame([{k: r.get(k) for k in _schema()} for r in out], schema=_schema())


def _schema() -> dict[str, pl.DataType]:
    schema: dict[str, pl.DataType] = {
        "label": pl.String(), "experiment": pl.String(), "model": pl.String(), "feature_set": pl.String(),
        "n_seeds": pl.Int64(), "n_folds": pl.Int64(), "n_streams": pl.Int64(), "n_parameters": pl.Int64(),
    }
    schema.update({m: pl.Float64() for m in METRICS})
    schema.update({f"{m}_{k}": pl.Float64() for m in METRICS for k in ("runs_mean", "sd")})
    schema.update({"sales_mae": pl.Float64(), "sales_mape": pl.Float64()})
    schema.update({"frac_oracle": pl.Float64(), "frac_latent": pl.Float64(), "compared_to": pl.String(),
                   "verdict": pl.String(), "budget_gain": pl.Float64(), "budget": pl.String()})
    schema.update({f"{m}_{k}": pl.Float64() for m in METRICS for k in ("diff", "lo", "hi")})
    schema["settings"] = pl.String()
    return schema


def write_csv(path: Path, frame: pl.DataFrame) -> None:
    """Write ``frame`` as CSV, atomically."""
    with atomic_path(path) as tmp:
        frame.write_csv(tmp)


def _fmt(x: float | None, digits: int = 3) -> str:
    return "" if x is None else f"{x:.{digits}f}"


def caption(level: float, n_boot: int, latent: dict[str, Any] | None) -> str:
    """What every table compares and how its intervals were computed (also the report's caption)."""
    ceiling = (f" Latent ceiling: R² {latent['r2']:.3f} ({latent['experiment']})." if latent else "")
    return (
        "Test predictions of every fold pooled (each stream tested once), log(sales). Each metric is computed on the "
        "pooled predictions of a seed and averaged over seeds; ± is the sd over the folds × seeds runs. "
        f"Δ = row - reference on the same streams, with a paired bootstrap {level:.0%} percentile interval "
        f"({n_boot} resamples of the streams within folds); the verdict reads the R² interval: better or worse when "
        f"it excludes 0 by more than {VERDICT_TOLERANCE:g} (how far a rerun on another machine moved an interval end), "
        "borderline when an end is within that of 0, else not separable. Sales MAE and MAPE: of predicted sales (exp "
        "of the prediction minus the target offset) against the sales, MAPE over streams with sales. Fractions: "
        "pooled R² over the oracle's (the simulator's noiseless "
        f"expected log sales on the same streams) and over the latent ceiling.{ceiling} Settings: the tuned choice "
        "per fold (value (folds choosing it/folds)). Last doubling of trials: the expected best validation R² "
        "(Dodge et al.) at the trials run minus at half of them, mean over folds; above "
        f"{BUDGET_TOLERANCE:g} the row is under-tuned, and a verdict reads under-tuned when its losing side still "
        "climbs (either side, for an undecided verdict): more trials only raise a model's expected best. Every number "
        "is recomputed from the runs' predictions.parquet."
    )


def table_cells(frame: pl.DataFrame, level: float) -> tuple[list[str], list[list[str]]]:
    """The table for people (header, rows): pooled metrics with the run spread, ceilings, the R² comparison, the
    verdict and the settings."""
    refs = sorted({r for r in frame["compared_to"].to_list() if r})
    head = ["Method", "Features", "Runs", "Params"] + [METRIC_LABELS[m] for m in METRICS]
    several = len(refs) > 1  # e.g. Table 10: each feature set's rows against its own MEMF, named in a column
    head += ["Sales MAE", "Sales MAPE", "of oracle", "of latent", *(["Compared to"] if several else []),
             f"ΔR² vs {'reference' if several else (refs or ['MEMF'])[0]} [{level:.0%} CI]", "Verdict",
             "Last doubling of trials", "Settings"]
    rows = []
    for r in frame.iter_rows(named=True):
        runs = f"{r['n_folds']}×{r['n_seeds']}" if r["n_seeds"] else ""
        params = "" if r["n_parameters"] is None else f"{r['n_parameters']:,}"
        cells = [r["label"], r["feature_set"] or "", runs, params]
        for m in METRICS:
            sd = r[f"{m}_sd"]
            cells.append(_fmt(r[m]) + ("" if sd is None else f" ± {_fmt(sd)}"))
        cells += [_fmt(r["sales_mae"], 0), _fmt(r["sales_mape"], 2), _fmt(r["frac_oracle"], 2),
                  _fmt(r["frac_latent"], 2)]
        if several:
            cells.append(r["compared_to"] or "")
        d = r["r2_diff"]
        cells.append("" if d is None else f"{d:+.3f} [{r['r2_lo']:+.3f}, {r['r2_hi']:+.3f}]")
        gain = r["budget_gain"]
        cells += [r["verdict"] or "", "" if gain is None else f"{gain:+.3f} ({r['budget']})", r["settings"] or ""]
        rows.append(cells)
    return head, rows


def markdown(title: str, head: list[str], rows: list[list[str]], note: str) -> str:
    lines = [f"# {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(cells) + " |" for cells in rows]
    return "\n".join([*lines, "", note, ""])


def write_table(out_dir: Path, name: str, frame: pl.DataFrame, title: str, head: list[str], rows: list[list[str]],
                note: str) -> list[Path]:
    """``{name}.csv`` (every number), ``{name}.md`` and ``{name}.html`` (for people)."""
    write_csv(out_dir / f"{name}.csv", frame)
    write_text(out_dir / f"{name}.md", markdown(title, head, rows, note))
    write_text(out_dir / f"{name}.html", table_page(title, head, rows, note))
    return [out_dir / f"{name}.{ext}" for ext in ("csv", "md", "html")]


def tuning_table(records: Sequence[str | Path], experiments: dict[str, Experiment]) -> pl.DataFrame:
    """One row per (tuned experiment, fold): trials counted by state, the best validation scores, seconds."""
    rows = []
    for path in records:
        path = Path(path)
        name, fold = path.parent.parent.name, int(path.parent.name.removeprefix("fold"))
        trials = pl.read_parquet(path)
        counted = trials.filter(pl.col("state") != "STALE")
        best = read_json(path.parent / "best.json")
        rows.append({
            "experiment": name, "model": experiments[name].model, "search": experiments[name].search, "fold": fold,
            "trials": counted.height, "complete": counted.filter(pl.col("state") == "COMPLETE").height,
            "pruned": counted.filter(pl.col("state") == "PRUNED").height,
            "failed": counted.filter(pl.col("state") == "FAIL").height,
            "best_val_mse": best["best_trial"]["val_mse"], "best_val_r2": best["best_trial"]["val_r2"],
            "doubling_gain": doubling_gain(trial_scores(trials)),
            "seconds": float(counted["seconds"].sum()), "chosen": json.dumps(best["params"], sort_keys=True),
        })
    return pl.DataFrame(rows).sort("experiment", "fold")


def write_tuning(out_dir: Path, records: Sequence[str | Path], experiments: dict[str, Experiment]) -> list[Path]:
    """``tuning.{csv,md,html}``: the tuning record of every tuned (experiment, fold)."""
    frame = tuning_table(records, experiments)
    head, rows, note = tuning_cells(frame)
    return write_table(Path(out_dir), "tuning", frame, "Tuning: the same trial budget for every tuned experiment",
                       head, rows, note)


def tuning_cells(frame: pl.DataFrame) -> tuple[list[str], list[list[str]], str]:
    """The tuning record for people: per tuned experiment, trials by state over its folds, and a note."""
    per = frame.group_by("experiment", maintain_order=True).agg(
        pl.col("model").first(), pl.col("search").first(), pl.col("fold").count().alias("folds"),
        pl.col("trials").sum(), pl.col("complete").sum(), pl.col("pruned").sum(), pl.col("failed").sum(),
        pl.col("best_val_r2").mean(), pl.col("doubling_gain").mean(), pl.col("seconds").sum())
    head = ["Experiment", "Model", "Search space", "Folds", "Trials", "Complete", "Pruned", "Failed",
            "Best val R² (mean over folds)", "Last doubling gain", "Budget", "Trial seconds"]
    rows = [[r["experiment"], r["model"], r["search"], str(r["folds"]), str(r["trials"]), str(r["complete"]),
             str(r["pruned"]), str(r["failed"]), _fmt(r["best_val_r2"]),
             "" if r["doubling_gain"] is None else f"{r['doubling_gain']:+.4f}", budget_state(r["doubling_gain"]) or "",
             f"{r['seconds']:.0f}"] for r in per.iter_rows(named=True)]
    per_fold = sorted(frame["trials"].unique().to_list())
    note = (f"Trials per (experiment, fold): {'equal' if len(per_fold) == 1 else 'NOT equal'} "
            f"({', '.join(map(str, per_fold))}). Each fold's study is scored on that fold's validation part only; the "
            "test part never enters a choice. Last doubling gain: the expected best validation R² (Dodge et al.) at "
            f"all trials minus at half of them, mean over folds; above {BUDGET_TOLERANCE:g} the budget was not enough "
            "(under-tuned). Per-fold choices: tuning.csv and "
            "results/tuning/{experiment}/fold{k}/trials.parquet.")
    return head, rows, note


def entity_importance(
    builder: TableBuilder, rows: dict[str, str], truth_json: str | Path, truth_key: str
) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Leave-one-entity-out pooled R² drops (Table 8) against the simulator's true entity importance.

    The drop for entity e is the pooled R² of the table's full model (the row without ``drop_entities``) minus that
    of the row dropping e alone. The truth is ``importance.<truth_key>`` of ``ground_truth.json``.
    """
    full = [n for n in rows if not builder.experiments[n].options.get("drop_entities")]
    single = {
        builder.experiments[n].options["drop_entities"][0]: n
        for n in rows
        if len(builder.experiments[n].options.get("drop_entities") or []) == 1
    }
    if len(full) != 1 or len(single) < 2:
        raise ValueError(
            f"entity importance: the table needs one row without drop_entities (found {full}) and at least two rows "
            f"dropping one entity each (found {sorted(single)})"
        )
    truth = read_json(truth_json).get("importance", {}).get(truth_key)
    if not isinstance(truth, dict):
        raise DataError(f"{truth_json}: no 'importance.{truth_key}' mapping")
    r2_full = pooled(builder.runs(full[0]))["r2"]
    entities = [e for e in ENTITIES if e in single]
    missing = [e for e in entities if e not in truth]
    if missing:
        raise DataError(f"{truth_json}: importance.{truth_key} lacks entities {missing}")
    drops = np.array([r2_full - pooled(builder.runs(single[e]))["r2"] for e in entities])
    shares = np.array([float(truth[e]) for e in entities])
    loo_rank = (-drops).argsort().argsort() + 1
    true_rank = (-shares).argsort().argsort() + 1
    frame = pl.DataFrame(
        {
            "entity": entities, "experiment": [single[e] for e in entities], "r2_drop": drops,
            "loo_rank": loo_rank, "true_importance": shares, "true_rank": true_rank,
        }
    )
    rho = float(spearmanr(drops, shares).statistic)
    loo_order = [entities[i] for i in np.argsort(-drops)]
    true_order = [entities[i] for i in np.argsort(-shares)]
    verdict_text = ("agree exactly" if loo_order == true_order else
                    "agree on the most important entity" if loo_order[0] == true_order[0] else
                    "disagree on the most important entity")
    statement = (
        f"Leave-one-out ranking {' > '.join(loo_order)}; simulator's {truth_key} ranking {' > '.join(true_order)}; "
        f"Spearman rho = {rho:.2f} over {len(entities)} entities; the rankings {verdict_text}."
    )
    summary = {
        "full_experiment": full[0], "r2_full": r2_full, "truth": truth_key, "spearman_rho": rho,
        "loo_ranking": loo_order, "true_ranking": true_order, "statement": statement,
    }
    return frame, summary


def ensemble_comparison(builder: TableBuilder) -> tuple[pl.DataFrame, dict[str, Any]]:
    """The ensemble against the best single model among its candidates (by pooled test R²: a comparison, not a
    choice; the choice of ``best`` is made on the validation parts), paired as the tables' rows: one row per fold
    with its weights, and a summary with the difference, its interval and the verdict."""
    ens = builder.runs(ENSEMBLE)
    weights = {k: read_json(builder.experiments[ENSEMBLE].run_dir(k, builder.runs_root) / MODEL_JSON)["weights"]
               for k in ens.folds}
    names = list(next(iter(weights.values())))
    r2 = {n: pooled(builder.runs(n))["r2"] for n in names}
    best = max(names, key=lambda n: (r2[n], -names.index(n)))
    other = builder.runs(best)
    if other.stream_id.tolist() != ens.stream_id.tolist():
        raise DataError(f"experiments {ENSEMBLE} and {best}: different test streams, cannot pair them")
    diffs = paired_differences(ens.y_true, ens.fold, {ENSEMBLE: ens.preds}, other.preds, builder.n_boot,
                               builder.boot_seed, builder.level)[ENSEMBLE]
    frame = pl.DataFrame([{"fold": k, **{n: float(w[n]) for n in names}} for k, w in weights.items()])
    summary = {
        "ensemble_r2": pooled(ens)["r2"], "best_single": best, "best_single_r2": r2[best], "candidates_r2": r2,
        "r2_diff": diffs["r2"].diff, "r2_lo": diffs["r2"].lo, "r2_hi": diffs["r2"].hi,
        "verdict": verdict(diffs["r2"], higher_is_better=True), "level": builder.level, "n_boot": builder.n_boot,
        "weights": {str(k): w for k, w in weights.items()},
    }
    return frame, summary


def _write_ensemble(builder: TableBuilder, out_dir: Path) -> list[Path]:
    frame, summary = ensemble_comparison(builder)
    write_csv(out_dir / "ensemble.csv", frame)
    head = ["Fold", *frame.columns[1:]]
    rows = [[str(r[0]), *(f"{v:.3f}" for v in r[1:])] for r in frame.iter_rows()]
    note = (f"Ensemble R² {summary['ensemble_r2']:.3f} against the best single model {summary['best_single']} "
            f"{summary['best_single_r2']:.3f}: difference {summary['r2_diff']:+.3f} "
            f"[{summary['r2_lo']:+.3f}, {summary['r2_hi']:+.3f}] ({100 * summary['level']:.0f}% paired bootstrap, "
            f"{summary['n_boot']} resamples), {summary['verdict']}. Weights fitted on each fold's validation part.")
    written = write_table(out_dir, "ensemble", frame, "The ensemble's weights per fold, and the ensemble against the "
                          "best single model", head, rows, note)
    write_json(out_dir / "ensemble.json", summary)
    log.info("%s", note)
    return [*written, out_dir / "ensemble.json"]


def build_tables(
    tables: dict[str, dict[str, Any]],
    experiments: dict[str, Experiment],
    out_dir: str | Path,
    *,
    folds: Sequence[int],
    compare_to: dict[str, str],
    n_boot: int = 1000,
    boot_seed: int = 0,
    level: float = 0.95,
    runs_root: str | Path = RUNS_DIR,
    ground_truth: str | Path | None = None,
    ground_truth_json: str | Path | None = None,
    latent_ceiling: Sequence[str] = (),
    importance_table: str | None = None,
    importance_key: str = "entity_covariance_share",
    tuning_records: Sequence[str | Path] = (),
    target_offset: float = 1.0,
) -> list[Path]:
    """Write ``{name}.csv`` and ``{name}.md`` for every table, ``tuning.*`` for the tuned experiments, ``ensemble.*``
    when the matrix has the ensemble (:func:`ensemble_comparison`), and on simulated data ``entity_importance.*``.

    Args:
        tables: name -> {title, rows: {experiment: label}} (config ``evaluation.tables``, rows already restricted
            to existing experiments).
        experiments: the parsed matrix.
        out_dir: ``results/tables``.
        folds: the folds run.
        compare_to: feature set -> the experiment every row of that feature set is compared with.
        n_boot, boot_seed, level: bootstrap settings.
        runs_root: ``results/runs``.
        ground_truth, ground_truth_json: the simulator's files, or None on real data (no ceilings, no importance).
        latent_ceiling: experiments fed the simulator's latents; the best pooled R² is the latent ceiling.
        importance_table: the leave-one-out table compared with the truth (needs ``ground_truth_json``).
        importance_key: which ``importance`` mapping of ground_truth.json is the truth.
        tuning_records: ``trials.parquet`` of every tuned (experiment, fold).
        target_offset: the target is log(sales + offset) (config ``target.offset``), for the sales-scale metrics.
    """
    out_dir = Path(out_dir)
    builder = TableBuilder(experiments, folds, compare_to, n_boot, boot_seed, level, Path(runs_root), ground_truth,
                           latent_ceiling, target_offset, tuning_records)
    note = caption(level, n_boot, builder.latent)
    written: list[Path] = []
    for name, spec in tables.items():
        frame = builder.table(dict(spec["rows"]))
        head, rows = table_cells(frame, level)
        n = frame["n_streams"].max()
        written += write_table(out_dir, name, frame, spec.get("title", name), head, rows, f"{n} streams. {note}")
        log.info("table %s: %d rows", name, frame.height)
    if tuning_records:
        written += write_tuning(out_dir, tuning_records, experiments)
    if ENSEMBLE in experiments:
        written += _write_ensemble(builder, out_dir)
    if importance_table is not None and ground_truth_json is not None:
        frame, summary = entity_importance(builder, dict(tables[importance_table]["rows"]), ground_truth_json,
                                           importance_key)
        write_csv(out_dir / "entity_importance.csv", frame)
        head = ["Entity", "Experiment", "R² drop (pooled)", "LOO rank", "True importance", "True rank"]
        rows = [[r["entity"], r["experiment"], f"{r['r2_drop']:+.4f}", str(r["loo_rank"]),
                 f"{r['true_importance']:.3f}", str(r["true_rank"])] for r in frame.iter_rows(named=True)]
        written += write_table(out_dir, "entity_importance", frame,
                               "Leave-one-entity-out importance vs the simulator's truth", head, rows,
                               summary["statement"])
        write_json(out_dir / "entity_importance.json", summary)
        written.append(out_dir / "entity_importance.json")
        log.info("%s", summary["statement"])
    return written
