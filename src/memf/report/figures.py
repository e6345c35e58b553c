"""The paper's figures, drawn with matplotlib (Agg backend) from the runs and the tables.

- Fig. 3: training loss and the test metrics per epoch of one run (from ``history.parquet``; validation dashed).
- Fig. 4: predicted versus true log(sales) on the run's test part, as a density (hexbin) with the 1:1 line.
- Fig. 6: the Multi-Entity Transformer's attention for 9 random test streams (from ``attention.parquet``).
- Fig. 5 and Table 9: bars of each pooled metric with the sd over folds x seeds as error bars (none for one run).
- The tuning budget: the expected best validation R² against the number of trials, per tuned experiment (Dodge et
  al., "Show Your Work", EMNLP 2019), from the trials of every fold.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import polars as pl  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from memf.core.io import DataError, atomic_path, read_json  # noqa: E402
from memf.core.metrics import METRIC_LABELS, METRICS, regression_metrics  # noqa: E402
from memf.report.budget import expected_max, trial_scores  # noqa: E402
from memf.training.matrix import ATTENTION_FILE, HISTORY_FILE, METRICS_FILE  # noqa: E402
from memf.training.runs import read_predictions  # noqa: E402

DPI = 120


def _save(fig: plt.Figure, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=DPI, bbox_inches="tight")
    plt.close(fig)


def training_curves(run_dir: str | Path, seed: int, out: str | Path, title: str) -> None:
    """Fig. 3: train loss and the test metrics per epoch of one seed; validation dashed; the selected epoch marked."""
    run_dir = Path(run_dir)
    hist = pl.read_parquet(run_dir / HISTORY_FILE).filter(pl.col("seed") == seed)
    if hist.height == 0:
        raise DataError(f"{run_dir}/{HISTORY_FILE}: no epochs of seed {seed}")
    chosen = read_json(run_dir / METRICS_FILE)["seeds"][str(seed)]["epoch"]
    fig, axes = plt.subplots(2, 4, figsize=(15, 6.5), sharex=True)
    epochs = hist["epoch"].to_numpy()
    panels = [("train_loss", "Train loss (MSE)")] + [(m, METRIC_LABELS[m]) for m in METRICS]
    for ax, (key, label) in zip(axes.flat, panels, strict=False):
        if key == "train_loss":
            ax.plot(epochs, hist["train_loss"], color="black", label="train")
        else:
            ax.plot(epochs, hist[f"test_{key}"], color="tab:blue", label="test")
            ax.plot(epochs, hist[f"val_{key}"], color="tab:orange", linestyle="--", label="validation")
        ax.axvline(chosen, color="grey", linewidth=0.8, linestyle=":")
        ax.set_title(label)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    axes.flat[1].legend()
    fig.suptitle(f"{title} (dotted line: epoch selected on validation)")
    fig.tight_layout()
    _save(fig, out)


def scatter_density(predictions: str | Path, seed: int, out: str | Path, title: str) -> None:
    """Fig. 4: hexbin density of predicted against true test log(sales), with the 1:1 line and R^2 in the title."""
    test = read_predictions(predictions).filter((pl.col("split") == "test") & (pl.col("seed") == seed))
    y, p = test["y_true"].to_numpy(), test["y_pred"].to_numpy()
    lo, hi = float(min(y.min(), p.min())), float(max(y.max(), p.max()))
    fig, ax = plt.subplots(figsize=(5.5, 5))
    hb = ax.hexbin(y, p, gridsize=25, cmap="viridis", mincnt=1, extent=(lo, hi, lo, hi))
    fig.colorbar(hb, ax=ax, label="streams")
    ax.plot([lo, hi], [lo, hi], color="red", linewidth=1, label="1:1")
    ax.set_xlabel("true log(sales)")
    ax.set_ylabel("predicted log(sales)")
    ax.set_title(f"{title}: R² = {regression_metrics(y, p)['r2']:.3f} (n = {len(y)})")
    ax.legend(loc="upper left")
    _save(fig, out)


def attention_heatmaps(run_dir: str | Path, run_seed: int, out: str | Path, n: int, seed: int, title: str) -> None:
    """Fig. 6: entity-level attention of ``n`` test streams drawn at random (seeded), on a square grid."""
    attn = pl.read_parquet(Path(run_dir) / ATTENTION_FILE).filter(pl.col("seed") == run_seed)
    if attn.height == 0:
        raise DataError(f"{run_dir}/{ATTENTION_FILE}: no attention for seed {run_seed}; the model returns none")
    streams = sorted(attn["stream_id"].unique().to_list())
    rng = np.random.default_rng(seed)
    chosen = sorted(rng.choice(streams, size=min(n, len(streams)), replace=False).tolist())
    title = title.format(n=len(chosen))
    labels = list(dict.fromkeys(attn["query"].to_list()))
    e = len(labels)
    side = int(np.ceil(np.sqrt(len(chosen))))
    weights = {sid: attn.filter(pl.col("stream_id") == sid)["weight"].to_numpy().reshape(e, e) for sid in chosen}  # [query, key]
    vmax = max(float(w.max()) for w in weights.values())
    fig, axes = plt.subplots(side, side, figsize=(3.4 * side, 3.2 * side), squeeze=False, layout="constrained")
    for ax in axes.flat[len(chosen):]:
        ax.axis("off")
    for ax, sid in zip(axes.flat, chosen, strict=False):
        im = ax.imshow(weights[sid], vmin=0, vmax=vmax, cmap="magma")
        ax.set_xticks(range(e), labels, rotation=45, ha="right", fontsize=7)
        ax.set_yticks(range(e), labels, fontsize=7)
        ax.set_title(sid, fontsize=8)
    fig.colorbar(im, ax=axes, shrink=0.6, label="attention weight (query row -> key column)")
    fig.suptitle(title)
    _save(fig, out)


def metric_bars(table_csv: str | Path, out: str | Path, title: str) -> None:
    """Bars of each pooled metric with the sd over folds x seeds as error bars, one panel per metric (Fig. 5,
    Table 9); a row of a single run has no spread and gets no error bar."""
    floats = {m: pl.Float64 for m in METRICS} | {f"{m}_sd": pl.Float64 for m in METRICS}  # an empty sd column reads as text
    frame = pl.read_csv(table_csv, schema_overrides=floats).filter(pl.col("experiment") != "oracle")
    labels = frame["label"].to_list()
    fig, axes = plt.subplots(1, len(METRICS), figsize=(3.0 * len(METRICS), 3.8))
    colors = plt.get_cmap("tab10")(np.arange(len(labels)) % 10)
    for ax, m in zip(axes, METRICS, strict=True):
        sd = frame[f"{m}_sd"]
        yerr = None if sd.null_count() == len(sd) else sd.fill_null(0).to_numpy()
        ax.bar(range(len(labels)), frame[m], yerr=yerr, color=colors, capsize=3)
        ax.set_xticks(range(len(labels)), labels, rotation=60, ha="right", fontsize=8)
        ax.set_title(METRIC_LABELS[m])
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(f"{title} (pooled over folds; error bars: sd over folds × seeds)")
    fig.tight_layout()
    _save(fig, out)


def tuning_budget(records: list[str | Path], out: str | Path) -> None:
    """The expected best validation R² against the number of trials, per tuned experiment (mean over folds).

    Trials without a validation score (failed ones) are left out. A curve still rising at the budget says the budget
    was not enough for that model; curves that cross say the ranking depends on the budget.
    """
    curves: dict[str, list[np.ndarray]] = {}
    for path in records:
        path = Path(path)
        scores = trial_scores(path)
        if len(scores):
            name = path.parent.parent.name
            curves.setdefault(name, []).append(np.array([expected_max(scores, n) for n in range(1, len(scores) + 1)]))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, per_fold in sorted(curves.items()):
        length = min(len(c) for c in per_fold)
        mean = np.mean([c[:length] for c in per_fold], axis=0)
        ax.plot(np.arange(1, length + 1), mean, marker="o", markersize=3, label=f"{name} ({len(per_fold)} folds)")
    ax.set_xlabel("trials")
    ax.set_ylabel("expected best validation R²")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    ax.set_title("Tuning budget (Dodge et al. 2019): expected best validation R² after n trials")
    fig.tight_layout()
    _save(fig, out)


def draw_figures(
    out_dir: str | Path,
    *,
    run_dir: str | Path | None,
    run_seed: int,
    run_label: str,
    bars: dict[str, tuple[str | Path, str]],
    tuning_records: list[str | Path] = (),
    attention_streams: int = 9,
    sample_seed: int = 0,
) -> list[Path]:
    """Draw every figure: Figs. 3, 4 and 6 from seed ``run_seed`` of ``run_dir`` (when given), each bar chart of
    ``bars`` (figure name -> (table CSV, title)), and the tuning budget. Returns the PNG paths written."""
    out_dir = Path(out_dir)
    written = []
    if run_dir is not None:
        run_dir = Path(run_dir)
        training_curves(run_dir, run_seed, out_dir / "fig3_training_curves.png",
                        f"Fig. 3: training and test metrics, {run_label}")
        scatter_density(run_dir / "predictions.parquet", run_seed, out_dir / "fig4_scatter_density.png",
                        f"Fig. 4: {run_label}")
        attention_heatmaps(
            run_dir, run_seed, out_dir / "fig6_attention.png", attention_streams, sample_seed,
            f"Fig. 6: entity-level attention of {{n}} random test streams, {run_label}",
        )
        written += [out_dir / f"{n}.png" for n in ("fig3_training_curves", "fig4_scatter_density", "fig6_attention")]
    for name, (csv, title) in bars.items():
        metric_bars(csv, out_dir / f"{name}.png", title)
        written.append(out_dir / f"{name}.png")
    if tuning_records:
        tuning_budget(list(tuning_records), out_dir / "tuning_budget.png")
        written.append(out_dir / "tuning_budget.png")
    return written
