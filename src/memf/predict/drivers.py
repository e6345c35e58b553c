"""What drives each prediction: the Multi-Entity Transformer's attention over the five entities, and each entity's
contribution measured against a neutral reference (docs/predict.md, "Drivers").

**Neutral reference**: see :mod:`memf.predict.neutral` (each member fold's training part; one entity's inputs are
replaced by it, the others left as they are).

**Contribution** of entity ``e`` to a stream's prediction: ``f(x) - f(x with e neutral)`` in log(sales), averaged
over the bundle's members (folds and seeds). It answers "how much higher or lower is this stream predicted because
of its own anchor (its commodities, ...) rather than an average one". The contributions need not add up to the
prediction minus the reference prediction: entities interact.

**Attention**: the model's entity-level attention (last layer, averaged over heads) averaged over the query
entities, so each stream's five weights sum to 1; models without entity-level attention leave it null.

On simulated data :func:`compare_with_truth` ranks these contributions against the simulator's true per-stream
contributions (``contrib_<entity>`` of ``ground_truth.parquet``; the anchor x commodity interaction half to each, a
world's signal as ``ground_truth.json`` credits it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from memf.data.contract import ENTITIES

DRIVER_SCHEMA = {"stream_id": pl.String, "entity": pl.String, "contribution": pl.Float64, "attention": pl.Float64}


def drivers_frame(stream_id: np.ndarray, labels: Sequence[str], contribution: np.ndarray,
                  attention: np.ndarray | None) -> pl.DataFrame:
    """Long format, one row per (stream, entity): contribution [S, E] and attention [S, E] (or None) by ``labels``."""
    n, e = contribution.shape
    return pl.DataFrame({
        "stream_id": np.repeat(np.asarray(stream_id).astype(str), e),
        "entity": np.tile(np.asarray(labels), n),
        "contribution": contribution.reshape(-1).astype(np.float64),
        "attention": (attention.reshape(-1).astype(np.float64) if attention is not None
                      else np.full(n * e, np.nan)),
    }, schema=DRIVER_SCHEMA).with_columns(pl.col("attention").fill_nan(None))


# --- against the simulator's truth ---------------------------------------------------------------------------------


def true_entity_contributions(ground_truth: pl.DataFrame, truth_json: Mapping[str, Any] | None) -> pl.DataFrame:
    """Per stream, each entity's true contribution to log(sales): ``contrib_<entity>`` plus its credited share of the
    anchor x commodity interaction (half each) and of a world's signal (``world.credit`` of ``ground_truth.json``).

    Columns: stream_id and one column per entity.
    """
    credit: dict[str, dict[str, float]] = {"interaction": {"anchor": 0.5, "commodity": 0.5}}
    credit.update(((truth_json or {}).get("world") or {}).get("credit") or {})
    cols = {e: pl.col(f"contrib_{e}") for e in ENTITIES}
    for signal, shares in credit.items():
        if f"contrib_{signal}" not in ground_truth.columns:
            continue
        for entity, share in shares.items():
            cols[entity] = cols[entity] + share * pl.col(f"contrib_{signal}")
    return ground_truth.select("stream_id", *[expr.alias(e) for e, expr in cols.items()])


def compare_with_truth(drivers: pl.DataFrame, truth: pl.DataFrame) -> dict[str, Any]:
    """Spearman rank correlations of the model's contributions with the true ones.

    ``per_entity``: for each entity, across streams (does the model rank the streams by, say, their anchor's
    effect as the truth does). ``per_stream``: for each stream, across the five entities (does it name the right
    driver), summarised by the mean and median over streams, and how often the entity with the largest contribution
    in size is the one with the largest true contribution in size.
    ``attention_vs_size``: the attention weights against the size ``|true contribution|`` (attention has no sign),
    per entity across streams and per stream across entities (mean); None for a model without attention.
    """
    from scipy.stats import spearmanr

    wide = drivers.pivot(on="entity", index="stream_id", values="contribution")
    entities = [e for e in ENTITIES if e in wide.columns]
    weights = drivers.pivot(on="entity", index="stream_id", values="attention").rename({e: f"{e}_att" for e in entities})
    joined = wide.join(weights, on="stream_id").join(truth, on="stream_id", how="inner", suffix="_true")
    model = joined.select(entities).to_numpy()
    true = joined.select([f"{e}_true" for e in entities]).to_numpy()
    per_entity = {entity: _rho(model[:, j], true[:, j]) for j, entity in enumerate(entities)}
    per_stream = np.array([spearmanr(model[i], true[i]).statistic for i in range(joined.height)], dtype=np.float64)
    finite = per_stream[np.isfinite(per_stream)]
    attention: dict[str, Any] | None = None
    if drivers["attention"].null_count() < drivers.height:
        att = joined.select([f"{e}_att" for e in entities]).to_numpy().astype(np.float64)
        size = np.abs(true)
        rows = [spearmanr(att[i], size[i]).statistic for i in range(len(att)) if np.isfinite(att[i]).all()]
        attention = {
            "per_entity": {e: _rho(att[:, j], size[:, j]) for j, e in enumerate(entities)},
            "per_stream_mean": float(np.nanmean(rows)) if rows else None,
        }
    return {
        "streams": joined.height,
        "entities": entities,
        "per_entity": per_entity,
        "per_stream": {"mean": float(finite.mean()) if finite.size else None,
                       "median": float(np.median(finite)) if finite.size else None,
                       "top_entity_agrees": float(np.mean(np.abs(model).argmax(axis=1) == np.abs(true).argmax(axis=1)))
                       if joined.height else None},
        "attention_vs_size": attention,
        "truth": "contrib_<entity> of ground_truth.parquet, the interaction half to anchor and commodity, a world's "
                 "signal as ground_truth.json credits it",
    }


def _rho(x: np.ndarray, y: np.ndarray) -> float | None:
    from scipy.stats import spearmanr

    keep = np.isfinite(x) & np.isfinite(y)
    if keep.sum() < 3:
        return None
    rho = spearmanr(x[keep], y[keep]).statistic
    return None if np.isnan(rho) else float(rho)


def truth_markdown(result: Mapping[str, Any], name: str) -> str:
    def fmt(v: float | None) -> str:
        return "-" if v is None else f"{v:+.3f}"
    att = result.get("attention_vs_size")
    rows = "".join(f"| {e} | {fmt(r)} | {fmt(att['per_entity'][e]) if att else '-'} |\n"
                   for e, r in result["per_entity"].items())
    ps = result["per_stream"]
    attention = ("" if att is None else f"\nAttention against the size of the true contribution, per stream across the "
                 f"entities: mean {fmt(att['per_stream_mean'])}.\n")
    return (f"# Drivers of the predictions of '{name}' against the simulator's truth\n\n"
            f"{result['streams']} streams. Spearman rank correlation of each entity's measured contribution (prediction "
            "minus the prediction with that entity neutral) with its true contribution to log(sales).\n\n"
            "| entity | contribution vs truth, across streams | attention vs size of the truth |\n|---|---|---|\n" + rows +
            f"\nPer stream, across the entities: mean {fmt(ps['mean'])}, median {fmt(ps['median'])}; the entity with the "
            f"largest contribution in size is the truly largest for {ps['top_entity_agrees']:.0%} of the streams.\n"
            + attention)


# --- figures -------------------------------------------------------------------------------------------------------


def chosen_streams(predictions: pl.DataFrame, choice: int | Sequence[str]) -> list[str]:
    """The streams a figure shows: the ids given, or ``n`` streams spread evenly from the lowest to the highest
    predicted sales (so both ends and the middle are seen)."""
    if not isinstance(choice, int):
        unknown = sorted(set(choice) - set(predictions["stream_id"].to_list()))
        if unknown:
            raise ValueError(f"predict.figure_streams: no prediction for {unknown[:3]}")
        return list(choice)
    ranked = predictions.sort("log_sales_pred")["stream_id"].to_list()
    if choice >= len(ranked):
        return ranked
    return [ranked[int(i)] for i in np.linspace(0, len(ranked) - 1, choice).round().astype(int)]


def draw_drivers(drivers: pl.DataFrame, predictions: pl.DataFrame, streams: Sequence[str], out: str | Path,
                 title: str) -> None:
    """Two heat maps for ``streams``: each entity's contribution (log sales) and its attention weight."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from memf.core.io import atomic_path

    part = drivers.filter(pl.col("stream_id").is_in(list(streams)))
    entities = [e for e in ENTITIES if e in part["entity"].unique().to_list()]

    def grid(column: str) -> np.ndarray:
        wide = part.pivot(on="entity", index="stream_id", values=column)
        lookup = {r[0]: r[1:] for r in wide.select("stream_id", *entities).iter_rows()}
        return np.array([[np.nan if v is None else v for v in lookup[s]] for s in streams], dtype=np.float64)

    contribution, attention = grid("contribution"), grid("attention")
    pred = dict(predictions.select("stream_id", "sales_pred").iter_rows())
    labels = [f"{s}\n{pred[s]:,.0f} predicted" for s in streams]
    fig, axes = plt.subplots(1, 2, figsize=(11, 0.55 * len(streams) + 2.0))
    lim = float(np.nanmax(np.abs(contribution))) if np.isfinite(contribution).any() else 1.0
    panels = ((contribution, "RdBu_r", -lim, lim, "contribution to log(sales)", "{:+.2g}"),
              (attention, "Greens", 0.0, 1.0, "attention (mean over queries)", "{:.2f}"))
    for ax, (values, cmap, low, high, label, fmt) in zip(axes, panels, strict=True):
        image = ax.imshow(values, cmap=cmap, vmin=low, vmax=high, aspect="auto")
        ax.set_xticks(range(len(entities)), entities)
        ax.set_yticks(range(len(streams)), labels if ax is axes[0] else [""] * len(streams), fontsize=8)
        for i in range(len(streams)):
            for j in range(len(entities)):
                if np.isfinite(values[i, j]):
                    dark = abs(values[i, j] - (low + high) / 2) > 0.35 * (high - low)
                    ax.text(j, i, fmt.format(values[i, j]), ha="center", va="center", fontsize=8,
                            color="white" if dark else "black")
        ax.set_title(label)
        fig.colorbar(image, ax=ax, shrink=0.8)
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)


def draw_truth(drivers: pl.DataFrame, truth: pl.DataFrame, result: Mapping[str, Any], out: str | Path,
               title: str) -> None:
    """One scatter per entity: measured contribution against the true one, with Spearman's rho."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from memf.core.io import atomic_path

    entities = list(result["entities"])
    joined = drivers.pivot(on="entity", index="stream_id", values="contribution").join(
        truth, on="stream_id", how="inner", suffix="_true")
    fig, axes = plt.subplots(1, len(entities), figsize=(3.0 * len(entities), 3.2), squeeze=False)
    for ax, entity in zip(axes[0], entities, strict=True):
        ax.scatter(joined[f"{entity}_true"], joined[entity], s=12, alpha=0.7)
        rho = result["per_entity"][entity]
        ax.set_title(f"{entity}: rho {'-' if rho is None else f'{rho:+.2f}'}")
        ax.set_xlabel("true contribution")
        ax.axhline(0, color="grey", lw=0.5)
        ax.axvline(0, color="grey", lw=0.5)
    axes[0][0].set_ylabel("measured contribution")
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
