"""The paper's figures, drawn with matplotlib (Agg backend) from the runs and the tables.

- Fig. 3: training loss and the test metrics per epoch (from ``history.parquet``; validation dashed).
- Fig. 4: predicted versus true log(sales) on the test split, as a density (hexbin) with the 1:1 line.
- Fig. 6: the Multi-Entity Transformer's attention for 9 random test streams (from ``attention.parquet``).
- Fig. 5 and Table 9: bars of each metric's mean over seeds with sd error bars (from the tables' CSV files).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

from memf.core.io import DataError, atomic_path, read_json  # noqa: E402
from memf.core.metrics import METRIC_LABELS, METRICS, regression_metrics  # noqa: E402
from memf.training.runs import ATTENTION_FILE, HISTORY_FILE, METRICS_FILE, read_predictions  # noqa: E402

DPI = 120


def _save(fig: plt.Figure, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=DPI, bbox_inches="tight")
    plt.close(fig)


def training_curves(run_dir: str | Path, out: str | Path, title: str) -> None:
    """Fig. 3: train loss and the five test metrics per epoch; validation dashed; the selected epoch marked."""
    run_dir = Path(run_dir)
    hist = pl.read_parquet(run_dir / HISTORY_FILE)
    chosen = read_json(run_dir / METRICS_FILE)["epoch"]
    fig, axes = plt.subplots(2, 3, figsize=(12, 6.5), sharex=True)
    epochs = hist["epoch"].to_numpy()
    panels = [("train_loss", "Train loss (MSE)")] + [(m, METRIC_LABELS[m]) for m in METRICS]
    for ax, (key, label) in zip(axes.flat, panels, strict=True):
        if key == "train_loss":
            ax.plot(epochs, hist["train_loss"], color="black", label="train")
        else:
            ax.plot(epochs, hist[f"test_{key}"], color="tab:blue", label="test")
            ax.plot(epochs, hist[f"val_{key}"], color="tab:orange", linestyle="--", label="validation")
        ax.axvline(chosen, color="grey", linewidth=0.8, linestyle=":")
        ax.set_title(label)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes.flat[1].legend()
    fig.suptitle(f"{title} (dotted line: epoch selected on validation)")
    fig.tight_layout()
    _save(fig, out)


def scatter_density(predictions: str | Path, out: str | Path, title: str) -> None:
    """Fig. 4: hexbin density of predicted against true test log(sales), with the 1:1 line and R^2 in the title."""
    test = read_predictions(predictions).filter(pl.col("split") == "test")
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


def attention_heatmaps(run_dir: str | Path, out: str | Path, n: int, seed: int, title: str) -> None:
    """Fig. 6: entity-level attention of ``n`` test streams drawn at random (seeded), on a square grid."""
    attn = pl.read_parquet(Path(run_dir) / ATTENTION_FILE)
    if attn.height == 0:
        raise DataError(f"{run_dir}/{ATTENTION_FILE}: empty; the model returns no attention")
    streams = sorted(attn["stream_id"].unique().to_list())
    rng = np.random.default_rng(seed)
    chosen = sorted(rng.choice(streams, size=min(n, len(streams)), replace=False).tolist())
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
    """Bars of each metric's mean over seeds with sd error bars, one panel per metric (Fig. 5, Table 9)."""
    floats = {f"{m}_{k}": pl.Float64 for m in METRICS for k in ("mean", "sd")}  # an all-empty sd column reads as text
    frame = pl.read_csv(table_csv, schema_overrides=floats).filter(pl.col("experiment") != "oracle")
    labels = frame["label"].to_list()
    fig, axes = plt.subplots(1, len(METRICS), figsize=(3.0 * len(METRICS), 3.8))
    colors = plt.get_cmap("tab10")(np.arange(len(labels)) % 10)
    for ax, m in zip(axes, METRICS, strict=True):
        ax.bar(range(len(labels)), frame[f"{m}_mean"], yerr=frame[f"{m}_sd"].fill_null(0), color=colors, capsize=3)
        ax.set_xticks(range(len(labels)), labels, rotation=60, ha="right", fontsize=8)
        ax.set_title(METRIC_LABELS[m])
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(f"{title} (mean ± sd over seeds, test split)")
    fig.tight_layout()
    _save(fig, out)


def draw_figures(
    out_dir: str | Path,
    *,
    run_dir: str | Path | None,
    run_label: str,
    bars: dict[str, tuple[str | Path, str]],
    attention_streams: int = 9,
    sample_seed: int = 0,
) -> list[Path]:
    """Draw every figure: Figs. 3, 4 and 6 from ``run_dir`` (when given), and each bar chart of ``bars``
    (figure name -> (table CSV, title)). Returns the PNG paths written under ``out_dir``."""
    out_dir = Path(out_dir)
    written = []
    if run_dir is not None:
        run_dir = Path(run_dir)
        training_curves(run_dir, out_dir / "fig3_training_curves.png", f"Fig. 3: training and test metrics, {run_label}")
        scatter_density(run_dir / "predictions.parquet", out_dir / "fig4_scatter_density.png", f"Fig. 4: {run_label}")
        attention_heatmaps(
            run_dir, out_dir / "fig6_attention.png", attention_streams, sample_seed,
            f"Fig. 6: entity-level attention of {attention_streams} random test streams, {run_label}",
        )
        written += [out_dir / f"{n}.png" for n in ("fig3_training_curves", "fig4_scatter_density", "fig6_attention")]
    for name, (csv, title) in bars.items():
        metric_bars(csv, out_dir / f"{name}.png", title)
        written.append(out_dir / f"{name}.png")
    return written
