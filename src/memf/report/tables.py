"""The paper's result tables (7, 8, 9, 10 and Fig. 5), recomputed from the runs' ``predictions.parquet``.

Each table lists experiments (config ``evaluation.tables.<name>.rows``: experiment -> label). For every row: the mean
and standard deviation over seeds of each metric on the test split, and the paired comparison against the MEMF run of
the same feature set (``evaluation.compare_to``): the difference of seed-averaged metrics and its bootstrap interval
(:mod:`memf.report.bootstrap`). On simulated data each table gets an oracle row (the simulator's noiseless expected log
sales as the prediction), and :func:`entity_importance` compares the leave-one-entity-out ranking with the simulator's
true entity importance.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from scipy.stats import spearmanr

from memf.data.contract import ENTITIES
from memf.core.io import DataError, atomic_path, read_json, read_parquet_checked, write_json, write_text
from memf.core.metrics import METRIC_LABELS, METRICS, regression_metrics
from memf.report.bootstrap import paired_difference, resample_indices
from memf.report.experiments import RUNS_DIR, Experiment, RunSet, load_runset

log = logging.getLogger(__name__)

ORACLE_LABEL = "Oracle (simulator's expected log sales)"


def summarise(runs: RunSet) -> dict[str, float | None]:
    """Mean and sd (ddof 1; None for one seed) over seeds of each test metric: ``{metric}_mean``, ``{metric}_sd``."""
    per_seed = [regression_metrics(runs.y_true, p) for p in runs.preds]
    out: dict[str, float | None] = {}
    for name in METRICS:
        values = np.array([m[name] for m in per_seed])
        out[f"{name}_mean"] = float(values.mean())
        out[f"{name}_sd"] = float(values.std(ddof=1)) if len(values) > 1 else None
    return out


def expected_log_sales(ground_truth: str | Path, stream_id: np.ndarray) -> np.ndarray:
    """The simulator's ``expected_log_sales`` for ``stream_id``, in that order (DataError if any is missing)."""
    table = pl.from_arrow(read_parquet_checked(ground_truth, {"stream_id": "string", "expected_log_sales": "float"}))
    assert isinstance(table, pl.DataFrame)
    lookup = dict(zip(table["stream_id"].to_list(), table["expected_log_sales"].to_list(), strict=True))
    missing = [s for s in stream_id if s not in lookup]
    if missing:
        raise DataError(f"{ground_truth}: no row for {len(missing)} test streams (first: {missing[0]})")
    return np.array([lookup[s] for s in stream_id], dtype=np.float64)


class TableBuilder:
    """Builds tables from runs, caching each experiment's runs and the bootstrap resamples (shared by all rows)."""

    def __init__(
        self,
        experiments: dict[str, Experiment],
        compare_to: dict[str, str],
        n_boot: int,
        boot_seed: int,
        level: float,
        runs_root: Path = RUNS_DIR,
        ground_truth: str | Path | None = None,
    ) -> None:
        self.experiments = experiments
        self.compare_to = compare_to
        self.n_boot, self.boot_seed, self.level = n_boot, boot_seed, level
        self.runs_root = Path(runs_root)
        self.ground_truth = ground_truth
        self._runs: dict[str, RunSet] = {}
        for fs, name in compare_to.items():
            if name not in experiments:
                raise ValueError(f"evaluation.compare_to.{fs}: experiment '{name}' is not in experiments")

    def runs(self, name: str) -> RunSet:
        if name not in self.experiments:
            raise ValueError(f"table row '{name}' is not an experiment (known: {', '.join(self.experiments)})")
        if name not in self._runs:
            self._runs[name] = load_runset(self.experiments[name], self.runs_root)
        return self._runs[name]

    def _idx(self, n: int) -> np.ndarray:
        return resample_indices(n, self.n_boot, self.boot_seed)

    def row(self, name: str, label: str) -> dict[str, Any]:
        """One table row: the experiment's seed summary and its paired comparison with the feature set's MEMF run."""
        runs = self.runs(name)
        exp = runs.experiment
        row: dict[str, Any] = {
            "label": label, "experiment": name, "model": exp.model, "feature_set": exp.feature_set,
            "n_seeds": len(exp.seeds), "n_test": len(runs.y_true),
        }
        row.update(summarise(runs))
        base_name = self.compare_to.get(exp.feature_set)
        row["compared_to"] = base_name
        if base_name is None or base_name == name:
            row.update({f"{m}_{k}": None for m in METRICS for k in ("diff", "lo", "hi")})
            return row
        base = self.runs(base_name)
        if base.stream_id.tolist() != runs.stream_id.tolist():
            raise DataError(f"experiments {name} and {base_name}: different test streams, cannot pair them")
        diffs = paired_difference(runs.y_true, runs.preds, base.preds, self._idx(len(runs.y_true)), self.level)
        for m, iv in diffs.items():
            row.update({f"{m}_diff": iv.diff, f"{m}_lo": iv.lo, f"{m}_hi": iv.hi})
        return row

    def oracle_row(self, runs: RunSet) -> dict[str, Any]:
        """The simulator's expected log sales scored as a prediction on the same test streams."""
        assert self.ground_truth is not None
        scores = regression_metrics(runs.y_true, expected_log_sales(self.ground_truth, runs.stream_id))
        row: dict[str, Any] = {
            "label": ORACLE_LABEL, "experiment": "oracle", "model": "oracle", "feature_set": None,
            "n_seeds": 0, "n_test": len(runs.y_true), "compared_to": None,
        }
        for m in METRICS:
            row.update({f"{m}_mean": scores[m], f"{m}_sd": None, f"{m}_diff": None, f"{m}_lo": None, f"{m}_hi": None})
        return row

    def table(self, rows: dict[str, str]) -> pl.DataFrame:
        """All rows of one table (experiment -> label), plus the oracle row on simulated data."""
        if not rows:
            raise ValueError("a table needs at least one row")
        out = [self.row(name, label) for name, label in rows.items()]
        if self.ground_truth is not None:
            out.append(self.oracle_row(self.runs(next(iter(rows)))))
        return pl.DataFrame(out, schema=_schema(), orient="row")


def _schema() -> dict[str, pl.DataType]:
    schema: dict[str, pl.DataType] = {
        "label": pl.String(), "experiment": pl.String(), "model": pl.String(), "feature_set": pl.String(),
        "n_seeds": pl.Int64(), "n_test": pl.Int64(),
    }
    schema.update({f"{m}_{k}": pl.Float64() for m in METRICS for k in ("mean", "sd")})
    schema["compared_to"] = pl.String()
    schema.update({f"{m}_{k}": pl.Float64() for m in METRICS for k in ("diff", "lo", "hi")})
    return schema


def write_csv(path: Path, frame: pl.DataFrame) -> None:
    """Write ``frame`` as CSV, atomically."""
    with atomic_path(path) as tmp:
        frame.write_csv(tmp)


def _fmt(x: float | None, digits: int = 4) -> str:
    return "" if x is None else f"{x:.{digits}f}"


def markdown_table(frame: pl.DataFrame, title: str, level: float) -> str:
    """The table for people: mean ± sd per metric, then each difference from MEMF with its interval."""
    head = ["Method", "Features", "Seeds"] + [METRIC_LABELS[m] for m in METRICS]
    head += [f"Δ{METRIC_LABELS[m]} vs {{ref}} [{level:.0%} CI]" for m in METRICS]
    refs = sorted({r for r in frame["compared_to"].to_list() if r})
    head = [h.replace("{ref}", "/".join(refs) if refs else "MEMF") for h in head]
    lines = [f"# {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in frame.iter_rows(named=True):
        cells = [r["label"], r["feature_set"] or "", str(r["n_seeds"] or "")]
        for m in METRICS:
            sd = r[f"{m}_sd"]
            cells.append(_fmt(r[f"{m}_mean"]) + ("" if sd is None else f" ± {_fmt(sd)}"))
        for m in METRICS:
            d = r[f"{m}_diff"]
            cells.append("" if d is None else f"{d:+.4f} [{r[f'{m}_lo']:+.4f}, {r[f'{m}_hi']:+.4f}]")
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        f"Test split, log(sales). Mean ± sd over seeds; Δ = (row - reference) of seed-averaged metrics on the same test "
        f"streams, with a paired bootstrap {level:.0%} percentile interval over test streams (docs/training.md). "
        "Every number is recomputed from the runs' predictions.parquet.",
        "",
    ]
    return "\n".join(lines)


def entity_importance(
    builder: TableBuilder, rows: dict[str, str], truth_json: str | Path, truth_key: str
) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Leave-one-entity-out R^2 drops (Table 8) against the simulator's true entity importance.

    The drop for entity e is mean R^2 of the table's full model (the row without ``drop_entities``) minus that of the
    row dropping e alone. The truth is ``importance.<truth_key>`` of ``ground_truth.json``.

    Returns:
        one row per entity (drop, rank, true share, true rank), and a summary with Spearman's rho and a statement.
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
    r2_full = summarise(builder.runs(full[0]))["r2_mean"]
    entities = [e for e in ENTITIES if e in single]
    missing = [e for e in entities if e not in truth]
    if missing:
        raise DataError(f"{truth_json}: importance.{truth_key} lacks entities {missing}")
    drops = np.array([r2_full - summarise(builder.runs(single[e]))["r2_mean"] for e in entities])
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
    verdict = "agree exactly" if loo_order == true_order else ("agree on the most important entity" if loo_order[0] == true_order[0] else "disagree on the most important entity")
    statement = (
        f"Leave-one-out ranking {' > '.join(loo_order)}; simulator's {truth_key} ranking {' > '.join(true_order)}; "
        f"Spearman rho = {rho:.2f} over {len(entities)} entities; the rankings {verdict}."
    )
    summary = {
        "full_experiment": full[0], "r2_full": r2_full, "truth": truth_key, "spearman_rho": rho,
        "loo_ranking": loo_order, "true_ranking": true_order, "statement": statement,
    }
    return frame, summary


def build_tables(
    tables: dict[str, dict[str, Any]],
    experiments: dict[str, Experiment],
    out_dir: str | Path,
    *,
    compare_to: dict[str, str],
    n_boot: int = 1000,
    boot_seed: int = 0,
    level: float = 0.95,
    runs_root: str | Path = RUNS_DIR,
    ground_truth: str | Path | None = None,
    ground_truth_json: str | Path | None = None,
    importance_table: str | None = None,
    importance_key: str = "entity_covariance_share",
) -> list[Path]:
    """Write ``{name}.csv`` and ``{name}.md`` for every table, and on simulated data ``entity_importance.*``.

    Args:
        tables: name -> {title, rows: {experiment: label}} (config ``evaluation.tables``).
        experiments: the parsed matrix.
        out_dir: ``results/tables``.
        compare_to: feature set -> the experiment every row of that feature set is compared with.
        n_boot, boot_seed, level: bootstrap settings.
        runs_root: ``results/runs``.
        ground_truth, ground_truth_json: the simulator's files, or None on real data (no oracle, no importance).
        importance_table: the leave-one-out table compared with the truth (needs ``ground_truth_json``).
        importance_key: which ``importance`` mapping of ground_truth.json is the truth.
    """
    out_dir = Path(out_dir)
    builder = TableBuilder(experiments, compare_to, n_boot, boot_seed, level, Path(runs_root), ground_truth)
    written: list[Path] = []
    for name, spec in tables.items():
        frame = builder.table(dict(spec["rows"]))
        write_csv(out_dir / f"{name}.csv", frame)
        write_text(out_dir / f"{name}.md", markdown_table(frame, spec.get("title", name), level))
        written += [out_dir / f"{name}.csv", out_dir / f"{name}.md"]
        log.info("table %s: %d rows", name, frame.height)
    if importance_table is not None and ground_truth_json is not None:
        frame, summary = entity_importance(builder, dict(tables[importance_table]["rows"]), ground_truth_json, importance_key)
        write_csv(out_dir / "entity_importance.csv", frame)
        md = [
            "# Leave-one-entity-out importance vs the simulator's truth", "",
            "| Entity | Experiment | R² drop | LOO rank | True importance | True rank |", "|---|---|---|---|---|---|",
        ]
        md += [
            f"| {r['entity']} | {r['experiment']} | {r['r2_drop']:+.4f} | {r['loo_rank']} | {r['true_importance']:.3f} | {r['true_rank']} |"
            for r in frame.iter_rows(named=True)
        ]
        md += ["", summary["statement"], ""]
        write_text(out_dir / "entity_importance.md", "\n".join(md))
        write_json(out_dir / "entity_importance.json", summary)
        written += [out_dir / "entity_importance.csv", out_dir / "entity_importance.md", out_dir / "entity_importance.json"]
        log.info("%s", summary["statement"])
    return written
