"""Predicting a new dataset with a bundle (docs/predict.md): the same validation, extraction and padding functions as
training data, then every member of the bundle, the interval and the drivers.

:func:`predict_dataset` runs the whole chain in this process (the API and the CLI); the workflow runs validation and
extraction as its own jobs (rules ``validate`` and ``extract_{modality}`` on ``results/predict/{name}/``) and calls
:func:`predict_features` for the rest, so both write the same files:

::

    {out}/data/                   the validated dataset (excluded.csv: every dropped object and why)
    {out}/features/{modality}/{extractor}/shard-{k}.*   its features, made by the bundle's extractors
    {out}/padded.h5               the padded store, cut to the models' item and clip axes; padded.truncated.parquet
    {out}/predictions.parquet     one row per predicted stream (PREDICTION_COLUMNS, then one column per member model)
    {out}/drivers.parquet         stream_id, entity, contribution, attention
    {out}/unpredicted.csv         every input stream without a prediction: stream_id, stage, reason
    {out}/metrics.json            counts, the interval, and with known sales the metrics and the coverage
    {out}/drivers.png             the drivers of a few streams
    {out}/drivers_vs_truth.{json,md,png}   on simulated data (the dataset holds ground_truth.parquet): the
                                  contributions against the simulator's truth (:func:`truth_report`)
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
from tqdm import tqdm

from memf.core.io import DataError, read_json, write_json, write_parquet, write_text
from memf.core.metrics import regression_metrics
from memf.data.contract import ENTITIES, MODALITY_LIMITS
from memf.data.layout import VALIDATED
from memf.features.layout import STORE, failures_path, shard_path
from memf.features.spec import FEATURE_MODALITIES
from memf.padding.batches import BatchReader
from memf.padding.store import PaddedStore
from memf.predict.bundle import Bundle, EnsembleBundle
from memf.predict.bundle import load_bundle as load_checked_bundle
from memf.predict.drivers import (
    chosen_streams,
    compare_with_truth,
    draw_drivers,
    draw_truth,
    drivers_frame,
    true_entity_contributions,
    truth_markdown,
)
from memf.predict.intervals import coverage
from memf.predict.neutral import neutralise
from memf.predict.plan import PREDICT_FILES, TRUTH_FILES, extractor_signature

log = logging.getLogger(__name__)

PREDICTION_COLUMNS: tuple[str, ...] = (
    "stream_id", "log_sales_pred", "sales_pred", "log_sales_lower", "log_sales_upper", "sales_lower", "sales_upper",
    "log_sales", "sales",
)
UNPREDICTED_SCHEMA = {"stream_id": pl.String, "stage": pl.String, "reason": pl.String}


def member_column(fold: int, seed: int) -> str:
    return f"pred_fold{fold}_seed{seed}"


# --- checks between the bundle and the new features ------------------------------------------------------------------


def check_features(bundle: Bundle, shards: Mapping[str, Sequence[str | os.PathLike[str]]]) -> None:
    """Refuse shards whose extractor differs from the bundle's record of it (kind, options, weights, dimension,
    preprocessing, code version: :func:`memf.predict.plan.extractor_signature`).

    Raises:
        DataError: one line naming the modality, the file and the first difference.
    """
    from memf.features.store import read_shard_meta

    for modality, paths in shards.items():
        record = bundle.meta["extractors"][modality]
        want = extractor_signature(record)
        for path in paths:
            meta = read_shard_meta(path)
            got = extractor_signature({**meta["identity"], "weights_id": meta["weights_id"], "dim": meta["dim"]})
            diff = next((k for k in want if want[k] != got[k]), None)
            if diff is not None:
                raise DataError(f"{path}: made by extractor {meta['identity']['name']} with {diff} {got[diff]!r}, but "
                                f"the bundle's {modality} extractor {record['name']} has {want[diff]!r}: these "
                                "features do not fit the bundle's model; extract them with the bundle's extractors")


def check_fits(dims: Mapping[str, Sequence[int]], model_dims: Mapping[str, Sequence[int]], where: str) -> None:
    """Refuse data whose per-stream shapes the model cannot read: every axis must agree, except the item and clip
    axes, which may be shorter than the model's (each batch is padded to its own longest lists; padding is cut to
    the model's axes, so they are never longer).

    Raises:
        DataError: a per-stream shape the model cannot read (another number of fields, another feature size).
    """
    for key, shape in dims.items():
        have, want = tuple(int(d) for d in shape), tuple(int(d) for d in model_dims[key])
        set_axis = key.startswith(("commodity/", "video/", "audio/"))
        if len(have) != len(want) or have[1:] != want[1:] or (have[0] != want[0] and not set_axis) or have[0] > want[0]:
            raise DataError(f"{where}: '{key}' has per-stream shape {have}, the bundle's model reads {want}: the data "
                            "does not fit the model (another column mapping or extractor)")


# --- the members -----------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class MemberOutputs:
    pred: dict[tuple[int, int], np.ndarray]  # (fold, seed) -> [S] log(sales)
    contribution: np.ndarray  # [S, 5] mean over members, ENTITIES order
    attention: np.ndarray | None  # [S, 5] mean over members and queries (NaN: an entity the model leaves out)
    by_fold: dict[int, np.ndarray]  # fold -> [S, 5] contributions, the mean over that fold's seeds


def _forward(model: torch.nn.Module, batch: Mapping[str, np.ndarray], device: str, mean: float, sd: float
             ) -> tuple[np.ndarray, np.ndarray | None]:
    """One model's prediction on the original scale [B] and its attention [B, E, E] or None. A reference model
    (scikit-learn, :class:`memf.training.references.ReferenceModel`) pools the same padded inputs itself and has no
    attention."""
    if not isinstance(model, torch.nn.Module):
        return model.predict([batch]) * sd + mean, None
    out = model({k: torch.from_numpy(np.ascontiguousarray(v)).to(device) for k, v in batch.items()})
    attention = None if out.attention is None else out.attention.float().cpu().numpy()
    return out.pred.float().cpu().numpy() * sd + mean, attention


class _Drivers:
    """Running sums of every member's predictions, contributions and attention over the streams."""

    def __init__(self, bundle: Bundle, n: int) -> None:
        self.pred = {(m.fold, seed): np.zeros(n) for m in bundle.members for seed in m.models}
        self.by_fold = {m.fold: np.zeros((n, len(ENTITIES))) for m in bundle.members}
        self.attention_sum = np.zeros((n, len(ENTITIES)))
        self.with_attention = {key: True for key in self.pred}

    def attention(self, rows: slice, key: tuple[int, int], attention: np.ndarray | None,
                  labels: Sequence[str] | None) -> None:
        if attention is None:
            self.with_attention[key] = False
            return
        weights = attention.mean(axis=1)  # [B, E]: the mean over query entities
        for j, entity in enumerate(ENTITIES):
            self.attention_sum[rows, j] += weights[:, list(labels or []).index(entity)] if entity in (labels or []) \
                else np.nan


def run_members(bundle: Bundle, store: PaddedStore, batch_size: int = 512) -> MemberOutputs:
    """Every member model's prediction of every stream of ``store``, and the drivers averaged over the members: per
    batch (read from the store, padded to its own longest lists) and model, one pass on the inputs and one with each
    entity neutralised (memf.predict.drivers). For the ensemble's bundle, each member experiment's outputs combined
    with the fold's weights (:func:`run_ensemble`)."""
    if isinstance(bundle, EnsembleBundle):
        return run_ensemble(bundle, store, batch_size)
    return _run_models(bundle, store, batch_size)


def run_ensemble(bundle: EnsembleBundle, store: PaddedStore, batch_size: int = 512) -> MemberOutputs:
    """The ensemble's prediction per fold, ``sum_e w[k][e] * (seed mean of experiment e's fold-k models)``, keyed
    (fold, 0) as its run folders are; its contributions the same combination of the members' (the neutral-reference
    contribution is linear in the prediction), averaged over the folds; no attention."""
    outputs = {name: _run_models(component, store, batch_size) for name, component in bundle.components.items()}
    pred, by_fold = {}, {}
    for fold, weights in sorted(bundle.weights.items()):
        pred[(fold, 0)] = sum(w * _seed_mean(outputs[e], fold) for e, w in weights.items())
        by_fold[fold] = sum(w * outputs[e].by_fold[fold] for e, w in weights.items())
    contribution = np.mean(np.stack(list(by_fold.values())), axis=0)
    return MemberOutputs(pred, contribution, None, by_fold)


@torch.no_grad()
def predict_arrays(bundle: Bundle, arrays: Mapping[str, np.ndarray]) -> dict[tuple[int, int], np.ndarray]:
    """Every member's prediction [B] (log sales) of a padded batch ``arrays`` (as the store holds it: numeric inputs
    not standardised; each member standardises with its fold's scaler), keyed (fold, seed); for the ensemble's
    bundle, each fold's weighted ensemble keyed (fold, 0). What-if variants are predicted with it
    (:mod:`memf.whatif`)."""
    if isinstance(bundle, EnsembleBundle):
        parts = {name: predict_arrays(c, arrays) for name, c in bundle.components.items()}
        return {(k, 0): sum(w * np.mean([p for (f, _), p in sorted(parts[e].items()) if f == k], axis=0)
                            for e, w in ws.items()) for k, ws in sorted(bundle.weights.items())}
    out = {}
    for member in bundle.members:
        part = member.scaler.apply(dict(arrays))
        for seed, model in member.models.items():
            mean, sd = member.scaling[seed]
            out[(member.fold, seed)] = _forward(model, part, bundle.device, mean, sd)[0]
    return out


def _seed_mean(outputs: MemberOutputs, fold: int) -> np.ndarray:
    return np.mean(np.stack([p for (k, _), p in sorted(outputs.pred.items()) if k == fold]), axis=0)


@torch.no_grad()
def _run_models(bundle: Bundle, store: PaddedStore, batch_size: int) -> MemberOutputs:
    """:func:`run_members` for one experiment's bundle."""
    n = len(store)
    out = _Drivers(bundle, n)
    bar = tqdm(total=bundle.n_models * n, desc="predict (models x streams)", unit="stream")
    for positions, arrays in BatchReader(store, np.arange(n), block_rows=batch_size).batches(batch_size):
        rows = slice(int(positions[0]), int(positions[-1]) + 1)
        for member in bundle.members:
            part = member.scaler.apply(arrays)
            for seed, model in member.models.items():
                mean, sd = member.scaling[seed]
                pred, attention = _forward(model, part, bundle.device, mean, sd)
                out.pred[(member.fold, seed)][rows] = pred
                for j, entity in enumerate(ENTITIES):
                    other, _ = _forward(model, neutralise(part, entity, member.neutral), bundle.device, mean, sd)
                    out.by_fold[member.fold][rows, j] += (pred - other) / len(member.models)
                out.attention(rows, (member.fold, seed), attention, member.attention_labels)
                bar.update(len(positions))
    bar.close()
    attention = out.attention_sum / bundle.n_models if all(out.with_attention.values()) else None
    contribution = sum(len(m.models) * out.by_fold[m.fold] for m in bundle.members) / bundle.n_models
    return MemberOutputs(out.pred, contribution, attention, out.by_fold)


# --- one dataset's features -> the prediction files ------------------------------------------------------------------


def _unpredicted(data_dir: Path, truncated: Path) -> pl.DataFrame:
    excluded = pl.read_parquet(data_dir / "excluded.parquet").filter(pl.col("level") == "stream")
    padded = pl.read_parquet(truncated).filter(pl.col("entity") == "stream")
    return pl.concat([
        excluded.select(pl.col("object_id").alias("stream_id"), pl.lit("validate").alias("stage"), "reason"),
        padded.select("stream_id", pl.lit("pad").alias("stage"), "reason"),
    ]).cast(UNPREDICTED_SCHEMA).sort("stream_id")


def predict_features(
    bundle: Bundle,
    data_dir: str | os.PathLike[str],
    shards: Mapping[str, Sequence[str | os.PathLike[str]]],
    out_dir: str | os.PathLike[str],
    *,
    figure_streams: int | Sequence[str] = 6,
    batch_size: int = 512,
    name: str | None = None,
) -> pl.DataFrame:
    """Pad a validated dataset's features, predict it with every member, and write the prediction files.

    Args:
        bundle: the loaded bundle.
        data_dir: the dataset validated with the bundle's contract (``validate_dataset(..., folds=0)``).
        shards: modality -> every shard of the bundle's extractor for that modality, made from ``data_dir``.
        out_dir: where the files go (``results/predict/{name}``).
        figure_streams: the streams of ``drivers.png``: their ids, or how many to spread over the predicted range.
        batch_size: streams per forward pass.
        name: the dataset's name in titles (the folder's name by default).

    Returns:
        The predictions (the columns of ``predictions.parquet``).
    """
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    name = name or out_dir.name
    files = {role: out_dir / file for role, file in PREDICT_FILES.items()}
    stream_id, y, outputs = _pad_and_run(bundle, data_dir, shards, files, batch_size)
    calib = bundle.meta["intervals"]
    frame = _predictions(bundle, stream_id, y, outputs)
    drivers = drivers_frame(stream_id, ENTITIES, outputs.contribution, outputs.attention)
    unpredicted = _unpredicted(data_dir, files["truncated"])
    write_parquet(files["predictions"], frame)
    write_parquet(files["drivers"], drivers)
    write_text(files["unpredicted"], unpredicted.write_csv())

    mean = frame["log_sales_pred"].to_numpy()
    lower, upper = mean - calib["q"], mean + calib["q"]
    known = ~np.isnan(y)
    dataset = read_json(data_dir / "dataset.json")
    metrics: dict[str, Any] = {
        "dataset": dataset["root"], "bundle": str(bundle.path), "experiment": bundle.meta["experiment"],
        "members": bundle.member_summary(),
        "streams_in": dataset["streams_in"], "streams_predicted": int(len(mean)), "unpredicted": unpredicted.height,
        "sales_known": int(known.sum()),
        "interval": {"level": calib["level"], "q_log": calib["q"], "width_log": 2 * calib["q"],
                     "coverage": coverage(y, lower, upper) if known.any() else None,
                     "bundle_test_coverage": calib["test_coverage"]},
        "test": regression_metrics(y[known], mean[known]) if known.sum() >= 2 else None,
    }
    write_json(files["metrics"], metrics)
    draw_drivers(drivers, frame, chosen_streams(frame, figure_streams), files["figure"],
                 f"{name}: what drives each prediction ({bundle.meta['experiment']})")
    log.info("%s: %d streams predicted, %d not (unpredicted.csv); interval +-%.3f log at %.0f%%%s", name, len(mean),
             unpredicted.height, calib["q"], 100 * calib["level"],
             f", coverage {metrics['interval']['coverage']:.3f} on {known.sum()} known" if known.any() else "")
    return frame


def _pad_and_run(bundle: Bundle, data_dir: Path, shards: Mapping[str, Sequence[str | os.PathLike[str]]],
                 files: Mapping[str, Path], batch_size: int) -> tuple[np.ndarray, np.ndarray, MemberOutputs]:
    """Pad the features to the bundle's axes and precision, and run every member on the store, a batch at a time:
    the stream ids [S], the known targets [S] (NaN where sales are unknown) and the members' outputs."""
    from memf.padding.pad import pad_feature_set

    check_features(bundle, shards)
    max_items, max_clips = bundle.model_axes()
    pad_feature_set(data_dir=data_dir, feature_set=bundle.meta["feature_set"], shards=shards, columns=bundle.columns,
                    max_items=max_items, max_clips=max_clips, out=files["padded"], truncated_out=files["truncated"],
                    model_axes=True, dtype=bundle.meta["dtype"])
    with PaddedStore(files["padded"]) as store:
        if store.attrs["fields"] != bundle.meta["fields"]:
            raise DataError(f"{data_dir}: fields {store.attrs['fields']} differ from the bundle's "
                            f"{bundle.meta['fields']}")
        check_fits(store.dims(), bundle.meta["dims"], str(files["padded"]))
        return store.stream_id, store.target.astype(np.float64), run_members(bundle, store, batch_size)


def _predictions(bundle: Bundle, stream_id: np.ndarray, y: np.ndarray, outputs: MemberOutputs) -> pl.DataFrame:
    """The columns of ``predictions.parquet``: the members' mean, its interval, the known sales, each member."""
    offset, q = bundle.target_offset, bundle.meta["intervals"]["q"]
    members = np.stack([outputs.pred[key] for key in sorted(outputs.pred)])  # [models, S]
    mean = members.mean(axis=0)
    lower, upper = mean - q, mean + q

    def to_sales(v: np.ndarray) -> np.ndarray:
        return np.maximum(np.exp(v) - offset, 0.0)

    return pl.DataFrame({
        "stream_id": stream_id.astype(str), "log_sales_pred": mean, "sales_pred": to_sales(mean),
        "log_sales_lower": lower, "log_sales_upper": upper, "sales_lower": to_sales(lower),
        "sales_upper": to_sales(upper), "log_sales": y, "sales": np.exp(y) - offset,
        **{member_column(f, s): outputs.pred[(f, s)] for f, s in sorted(outputs.pred)},
    }).with_columns(pl.col("log_sales", "sales").fill_nan(None))


def truth_report(out_dir: str | os.PathLike[str], ground_truth: str | os.PathLike[str],
                 ground_truth_json: str | os.PathLike[str] | None, name: str, experiment: str) -> dict[str, Any]:
    """On simulated data: ``drivers_vs_truth.{json,md,png}`` from ``{out_dir}/drivers.parquet`` and the simulator's
    ground truth of the predicted streams (memf.predict.drivers.compare_with_truth)."""
    out_dir = Path(out_dir)
    drivers = pl.read_parquet(out_dir / PREDICT_FILES["drivers"])
    truth = true_entity_contributions(pl.read_parquet(ground_truth),
                                      read_json(ground_truth_json) if ground_truth_json else None)
    result = compare_with_truth(drivers, truth)
    write_json(out_dir / TRUTH_FILES["json"], result)
    write_text(out_dir / TRUTH_FILES["md"], truth_markdown(result, name))
    draw_truth(drivers, truth, result, out_dir / TRUTH_FILES["figure"],
               f"{name}: measured against true entity contributions ({experiment})")
    return result


# --- the whole chain in this process ---------------------------------------------------------------------------------


@contextlib.contextmanager
def _out_folder(out: str | os.PathLike[str] | None) -> Iterator[Path]:
    if out is not None:
        Path(out).mkdir(parents=True, exist_ok=True)
        yield Path(out)
        return
    with tempfile.TemporaryDirectory(prefix="memf-predict-") as tmp:
        yield Path(tmp)


def predict_dataset(
    bundle: Bundle,
    dataset_root: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    *,
    shards: int | None = None,
    workers: int = 2,
    device: str = "cpu",
    batch_size: int = 16,
    timeout_s: float = 60.0,
    max_drop_fraction: float = 0.25,
    figure_streams: int | Sequence[str] = 6,
    eval_batch_size: int = 512,
) -> pl.DataFrame:
    """Validate, extract and predict the raw dataset at ``dataset_root`` with ``bundle`` (the workflow's predict chain
    run in this process, with the same functions: the same files for the same settings).

    Args:
        out: folder for every file (see the module docstring); None keeps them in a temporary folder.
        shards: extraction shards (the batches follow them; None: the bundle's training shard count, as the workflow).
        workers: decoding workers of extraction and of the media probe.
        device: where the extractors run (``cpu``, ``cuda``, ``auto``); the bundle's models run where it was loaded.
        batch_size: extraction batch size unless an extractor's options set one.
        timeout_s: longest decode of one file before it is a recorded failure.
        max_drop_fraction: more dropped streams than this fails (``validation.max_drop_fraction``, 0.25 by default).
        figure_streams: the streams of ``drivers.png``.
        eval_batch_size: streams per model forward pass.
    """
    from memf.core.gpu import claim_device
    from memf.data.validate import validate_dataset
    from memf.features.extract import extract_shard

    root = Path(dataset_root)
    n_shards = int(shards or bundle.meta["extraction"]["shards"])
    with _out_folder(out) as folder:
        data_dir = folder / VALIDATED
        log.info("validating %s with the bundle's contract", root)
        validate_dataset(root, data_dir, columns=bundle.columns, target_offset=bundle.target_offset,
                         max_drop_fraction=max_drop_fraction, split_seed=0, folds=0, probe_workers=workers,
                         probe_timeout_s=timeout_s, numeric_accepts=bundle.meta["numeric"]["accepts"],
                         limits=bundle.meta["limits"])
        extractors = bundle.extractor_configs()
        extraction = {"shards": n_shards, "device": device, "workers": workers, "timeout_s": timeout_s,
                      "batch_size": batch_size, "precision": bundle.meta["extraction"]["precision"]}
        store = folder / STORE
        shard_files: dict[str, list[str]] = {}
        with claim_device(device) as claimed:
            for modality in FEATURE_MODALITIES:
                name = bundle.meta["extractors"][modality]["name"]
                shard_files[modality] = [shard_path(store, modality, name, k) for k in range(n_shards)]
                for k, path in enumerate(shard_files[modality]):
                    extract_shard(data_dir=data_dir, extractors=extractors, name=name, columns=bundle.columns,
                                  extraction=extraction, shard=k, out=path,
                                  failures_out=failures_path(store, modality, name, k), device=claimed,
                                  threads=workers, numeric=bundle.numeric_policy() if modality == "numeric" else None,
                                  limits={key: bundle.meta["limits"][key] for key in MODALITY_LIMITS[modality]})
        frame = predict_features(bundle, data_dir, shard_files, folder, figure_streams=figure_streams,
                                 batch_size=eval_batch_size, name=root.name)
        truth, truth_json = root / "ground_truth.parquet", root / "ground_truth.json"
        if truth.is_file():
            truth_report(folder, truth, truth_json if truth_json.is_file() else None, root.name,
                         bundle.meta["experiment"])
        return frame


class Predictor(Bundle):
    """A loaded bundle that predicts raw datasets: ``memf.load_bundle(path).predict(root)``."""

    def predict(self, dataset_root: str | os.PathLike[str], out: str | os.PathLike[str] | None = None,
                **options: Any) -> pl.DataFrame:
        """Predict every stream of the raw dataset at ``dataset_root`` (docs/data-format.md; ``sales`` optional).

        Runs what the workflow's predict chain runs, in this process: validation with the bundle's contract,
        extraction with the bundle's extractors, padding, the members, the interval and the drivers. With ``out``,
        every file the workflow writes to ``results/predict/{name}/`` is written there. Options: see
        :func:`predict_dataset`.

        Returns:
            One row per predicted stream (the columns of ``predictions.parquet``).
        """
        return predict_dataset(self, dataset_root, out, **options)


class EnsemblePredictor(EnsembleBundle, Predictor):
    """The ensemble's bundle (``best``), predicting raw datasets as :class:`Predictor` does."""


def load_bundle(path: str | os.PathLike[str], device: str = "cpu", builder: Any = None) -> Predictor:
    """Load and check the bundle folder ``path`` (:func:`memf.predict.bundle.load_bundle`), ready to predict.

    Raises:
        DataError: one line for a missing file, another format or code version, a changed model file.
    """
    bundle = load_checked_bundle(path, device, builder)
    if isinstance(bundle, EnsembleBundle):
        return EnsemblePredictor(bundle.path, bundle.meta, bundle.components, bundle.device)
    return Predictor(bundle.path, bundle.meta, bundle.members, bundle.device)
