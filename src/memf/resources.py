"""Memory and runtime of every rule, from what the workflow knows when it plans (docs/cluster.md, "Resources follow
the data").

Every rule's ``resources:`` call :meth:`ResourcePlan.mem_mb` and :meth:`ResourcePlan.runtime`, locally and under
SLURM (where they become ``--mem`` and ``--time``). What a job is planned with:

- **n, the streams**: ``simulator.n_streams`` for simulated data, else the raw streams table's row count from its
  Parquet footer (no data is read); an upper bound of the validated streams, since validation only drops. A dataset
  to predict: its own raw table.
- **bytes per stream of a padded feature set** (:func:`padded_dims`, :func:`padded_bytes`): the fields of config
  ``columns``, the caps of config ``padding`` (the padded file holds the longest item and clip lists, at most the
  caps) and each extractor's output width (:func:`planned_dimension`: a torchvision architecture's, a tiny model's
  ``hidden``, a local or cached Hugging Face checkpoint's ``hidden_size``, else :data:`UNKNOWN_DIMENSION` with a note).
- the reference experiments' model features (the pooled width after the reduction rule,
  :func:`memf.training.matrix.reduced_widths`), and the config's trials, seeds, epochs, patience, folds, bootstrap.

Each rule's need is a measured base plus measured costs per stream (:data:`COST`, from ``bench/resources_bench.py``
on the 2-core development machine, or carried from the scale notes where the rule was not re-measured; docs/cluster.md
lists which), times :data:`MEMORY_MARGIN` and :data:`RUNTIME_MARGIN`. A retried job (``snakemake --retries N``) asks
for ``attempt`` times both. Standard library only (pyarrow only to read a raw table's row count): the workflow
computes these when it plans.
"""

from __future__ import annotations

import functools
import json
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from memf.features.layout import model_dir
from memf.features.spec import HF_KINDS, TINY_SIZES, TORCHVISION_DIMS
from memf.training.matrix import REFERENCE_OPTIONS, experiments_from_config, pooled_widths, reduced_widths

MIB = 1 << 20
#: Peak memory requested over the modelled peak, and wall time over the modelled time (cluster CPUs differ more
#: than memory does).
MEMORY_MARGIN = 1.25
RUNTIME_MARGIN = 2.0
MIN_MEM_MB = 1000
MIN_RUNTIME_MIN = 10
#: Output width assumed for an extractor whose width cannot be read when planning (a hub id not in the cache).
UNKNOWN_DIMENSION = 1024
#: Bytes per stream of the latent feature set (rule pad_latent) at caps M, C: the default world's layout (26 values
#: of anchor and room, 42 per item, 3 per clip; measured from results/padded/latent.h5 of the demo).
LATENT_VALUES = (26, 42, 3)


@dataclass(frozen=True)
class Cost:
    """A rule's measured costs: ``base_mib`` and ``base_s`` whatever the data; ``per_unit`` bytes of peak memory and
    ``seconds`` of CPU per unit of its work (what a unit is: see :data:`COST`)."""

    base_mib: float
    per_unit: float
    base_s: float
    seconds: float


#: Rule -> measured costs (bench/resources_measured.json; docs/cluster.md, "Measured coefficients", says which were
#: measured and which carried). Units: simulate, validate: a stream; tiny_model, features_manifest, predict_truth,
#: figures: nothing (constants); extract_*: memory per byte of the shard's features, seconds per stream; pad,
#: pad_latent, export, predict: memory per stream, fit: memory per padded byte of every stream (beside the bounded
#: blocks of the padded store: :func:`pad_need`, :func:`fit_need`); pad seconds per padded byte; fit seconds per
#: training stream and epoch (:func:`fit_need`); fit_reference: see :func:`reference_need`; tables: memory per
#: stream and seed-run held, seconds per stream, resample and compared row.
COST: dict[str, Cost] = {
    # simulate writes the tables, truth and latents; simulate_render rebuilds that world and renders its shard's media
    # (the per-stream memory is the world's, the seconds its shard's streams'); probe_media decodes its shard's media
    # headers with two workers (validate's probing cost).
    "simulate": Cost(base_mib=375, per_unit=13_700, base_s=5, seconds=9.4e-4),
    "simulate_render": Cost(base_mib=340, per_unit=13_700, base_s=5, seconds=0.042),
    "probe_media": Cost(base_mib=505, per_unit=0, base_s=5, seconds=0.015),
    "validate": Cost(base_mib=505, per_unit=107_000, base_s=5, seconds=0.015),
    "tiny_model": Cost(base_mib=1400, per_unit=0, base_s=60, seconds=0),
    "features_manifest": Cost(base_mib=400, per_unit=0, base_s=10, seconds=0),
    # GPU jobs: base memory is the paper-sized model with its batch (the previous profile's requests without the
    # margin, not measured here); seconds per stream of the shard from the demo run (tiny models on the CPU).
    "extract_video": Cost(base_mib=16000 / MEMORY_MARGIN, per_unit=3.0, base_s=120, seconds=0.9),
    "extract_audio": Cost(base_mib=8000 / MEMORY_MARGIN, per_unit=3.0, base_s=120, seconds=0.5),
    "extract_image": Cost(base_mib=8000 / MEMORY_MARGIN, per_unit=3.0, base_s=120, seconds=0.9),
    "extract_text": Cost(base_mib=8000 / MEMORY_MARGIN, per_unit=3.0, base_s=120, seconds=0.2),
    "extract_numeric": Cost(base_mib=4000 / MEMORY_MARGIN, per_unit=3.0, base_s=30, seconds=0.01),
    "pad": Cost(base_mib=460, per_unit=9_700, base_s=10, seconds=1e-8),
    "pad_latent": Cost(base_mib=215, per_unit=2_700, base_s=10, seconds=3e-8),
    "fit": Cost(base_mib=930, per_unit=0.16, base_s=15, seconds=8.5e-4),
    "fit_reference": Cost(base_mib=830, per_unit=0.4, base_s=10, seconds=0),
    "tables": Cost(base_mib=300, per_unit=40, base_s=10, seconds=2e-7),
    "figures": Cost(base_mib=700, per_unit=0, base_s=60, seconds=0),
    # export: the neutral reference over the training part read by batches, as predict's (measured together).
    "export": Cost(base_mib=1230, per_unit=19_300, base_s=60, seconds=0),
    "predict": Cost(base_mib=1230, per_unit=19_300, base_s=60, seconds=0.002),
    "predict_truth": Cost(base_mib=700, per_unit=0, base_s=30, seconds=0),
    # whatif: as predict_truth (not measured): the variants' padded rows and one forward pass per member.
    "whatif": Cost(base_mib=1210, per_unit=0, base_s=60, seconds=0),
    # ensemble: not measured; the candidates' predictions of one fold as polars frames and one float64 matrix, a few
    # hundred bytes per stream and candidate (the interpreter with polars and scipy is the base).
    "ensemble": Cost(base_mib=400, per_unit=4_000, base_s=10, seconds=1e-5),
}
#: fit: CPU seconds per padded byte of a training stream and epoch, beside COST["fit"].seconds per stream and epoch.
FIT_SECONDS_PER_BYTE = 4.2e-9
#: fit_reference: peak bytes per stream and model feature (the float32 matrix and the copies the model's fit makes),
#: CPU seconds per training stream and model feature of one fit, by reference model; seconds per padded byte of one
#: pooling pass; seconds per training stream and pooled feature of the reduction (IncrementalPCA).
REFERENCE_FEATURE_BYTES = {"mean": 0.0, "ridge": 16.6, "hgb": 8.8}
REFERENCE_FIT_SECONDS = {"mean": 0.0, "ridge": 1.1e-7, "hgb": 1.2e-6}
POOLING_SECONDS_PER_BYTE = 1e-8
REDUCTION_SECONDS = 2e-7
#: Streams of a block pad writes (memf.padding.pad.PAD_BLOCK), streams of a block fit reads
#: (memf.padding.batches.BLOCK_ROWS) and ``train.cache_mb``'s default (memf.padding.batches): the bounds of what the
#: store's writers and readers hold, repeated here because planning imports no numpy (tested equal).
PAD_BLOCK_ROWS = 256
BLOCK_ROWS = 256
DEFAULT_CACHE_MB = 256
#: Rows of a reduction batch at most (memf.training.references.PCA_BATCH: batches of 1,024 to 2,047 training streams).
REDUCTION_BATCH = 2047
#: tables: working memory of a chunk of resamples (memf.report.bootstrap.CHUNK_ELEMENTS indices: the resampled
#: targets, predictions, errors and ranks with their temporaries, about 30 float64 arrays of the chunk).
BOOTSTRAP_CHUNK_BYTES = 30 * 8 * (1 << 20)


@dataclass(frozen=True)
class Need:
    """What one job asks for."""

    mem_mb: int
    runtime: int  # minutes


def need(peak_bytes: float, seconds: float) -> Need:
    """The request for a modelled peak and CPU time: with the margins, memory rounded up to 100 MB."""
    mem = max(MIN_MEM_MB, math.ceil(peak_bytes * MEMORY_MARGIN / MIB / 100) * 100)
    return Need(mem, max(MIN_RUNTIME_MIN, math.ceil(seconds * RUNTIME_MARGIN / 60)))


def linear_need(rule: str, units: float, time_units: float | None = None) -> Need:
    """``base + units x per_unit`` bytes, ``base_s + time_units x seconds`` (``time_units`` defaults to ``units``)."""
    c = COST[rule]
    time_units = units if time_units is None else time_units
    return need(c.base_mib * MIB + units * c.per_unit, c.base_s + time_units * c.seconds)


# --- what a padded stream holds ------------------------------------------------------------------------------------


def padded_dims(fields: Mapping[str, Mapping[str, int]], dims: Mapping[str, int], max_items: int,
                max_clips: int) -> dict[str, tuple[int, ...]]:
    """Per-stream shape of every array of a padded file (docs/architecture.md): ``fields`` entity -> modality ->
    number of columns, ``dims`` modality -> vector width (text, image, video, audio), the caps of config ``padding``."""
    out: dict[str, tuple[int, ...]] = {}
    for entity in ("anchor", "room", "commodity"):
        lead = (max_items,) if entity == "commodity" else ()
        for modality in ("text", "image"):
            out[f"{entity}/{modality}"] = (*lead, fields[entity].get(modality, 0), dims[modality])
        out[f"{entity}/numeric"] = (*lead, fields[entity].get("numeric", 0))
    out["commodity/mask"] = (max_items,)
    for clip in ("video", "audio"):
        out[f"{clip}/x"] = (max_clips, dims[clip])
        out[f"{clip}/mask"] = (max_clips,)
    return out


def padded_bytes(dims: Mapping[str, tuple[int, ...]]) -> int:
    """Bytes of one stream in a padded file: float32 arrays, bool masks."""
    return sum(math.prod(shape) * (1 if key.endswith("/mask") else 4) for key, shape in dims.items())


def latent_bytes(max_items: int, max_clips: int) -> int:
    anchor_room, item, clip = LATENT_VALUES
    return 4 * (anchor_room + max_items * item + max_clips * clip) + max_items + 2 * max_clips


def _hf_config(model: str) -> Path | None:
    """config.json of a Hugging Face checkpoint: a local folder's, or the hub cache's snapshot of a hub id."""
    local = Path(model) / "config.json"
    if local.is_file():
        return local
    hub = os.environ.get("HF_HUB_CACHE") or (Path(os.environ["HF_HOME"]) / "hub" if "HF_HOME" in os.environ else
                                             Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
                                             / "huggingface" / "hub")
    snapshots = sorted((Path(hub) / f"models--{model.replace('/', '--')}" / "snapshots").glob("*/config.json"))
    return snapshots[0] if snapshots else None


def planned_dimension(entry: Mapping[str, Any], tiny_models: Mapping[str, Any]) -> int | None:
    """The output width an extractor (config ``extractors`` entry) will write, or None when it cannot be known yet."""
    kind, model = entry["kind"], str(entry.get("model"))
    if kind == "torchvision":
        return TORCHVISION_DIMS.get(model)
    if kind not in HF_KINDS:
        return None
    for name, tiny in tiny_models.items():
        if Path(model) == Path(model_dir(name)):
            return int((tiny.get("settings") or {}).get("hidden", TINY_SIZES[tiny["kind"]]["hidden"]))
    config = _hf_config(model)
    if config is None:
        return None
    values = json.loads(config.read_text())
    width = values.get("hidden_size", values.get("d_model"))
    return int(width) if width is not None else None


@functools.cache
def _parquet_rows(path: str, mtime: float) -> int:
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:  # an environment with Snakemake alone, planning a raw dataset
        raise RuntimeError(f"memf resources: reading the stream count of {path} needs pyarrow next to Snakemake "
                           "(pip install pyarrow)") from exc
    return int(pq.read_metadata(path).num_rows)


# --- the plan of one config ----------------------------------------------------------------------------------------


class ResourcePlan:
    """The needs of every rule's jobs under one checked, default-filled config (:func:`memf.config.load_config`)."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        from memf.predict.plan import predict_plan  # the bundle's extractors and columns, for the predict rules

        self.config = config
        self.experiments = experiments_from_config(config["experiments"], config["seeds"])
        self.plan = predict_plan(config)
        self.notes: list[str] = []
        self._dims: dict[str, int] = {}
        self.caps = (int(config["padding"]["max_items"]), int(config["padding"]["max_clips"]))
        for chosen in config["feature_sets"].values():  # every width known now, or noted when the workflow loads
            for modality, name in chosen.items():
                if modality != "numeric":
                    self.dimension(name, config["extractors"][name])

    # -- what a job is planned with --

    def streams(self, prefix: str = "") -> int:
        """Streams of the training data (``prefix`` empty) or of a dataset to predict (``predict/{name}/``)."""
        root = Path(self.config["dataset"]["root"])
        if prefix:
            root = Path(self.config["predict"]["datasets"][prefix.removesuffix("/").rsplit("/", 1)[-1]])
        if self.config["dataset"]["simulate"] and root == Path(self.config["dataset"]["root"]):
            return int(self.config["simulator"]["n_streams"])
        path = root / "streams.parquet"
        if not path.is_file():
            raise RuntimeError(f"memf resources: {path} does not exist; the stream count of {root} is read from it")
        return _parquet_rows(str(path), path.stat().st_mtime)

    def dimension(self, name: str, entry: Mapping[str, Any]) -> int:
        """An extractor's planned output width (:func:`planned_dimension`; :data:`UNKNOWN_DIMENSION` with a note)."""
        if name not in self._dims:
            width = planned_dimension(entry, self.config["tiny_models"])
            if width is None:
                width = UNKNOWN_DIMENSION
                self.notes.append(f"resources: the output width of extractor '{name}' ({entry.get('model')}) is not "
                                  f"known before it runs (not a local folder nor in the Hugging Face cache); "
                                  f"memory is planned with {UNKNOWN_DIMENSION}")
            self._dims[name] = width
        return self._dims[name]

    def feature_dims(self, extractors: Mapping[str, Mapping[str, Any]], columns: Mapping[str, Any]
                     ) -> dict[str, tuple[int, ...]]:
        """Per-stream shapes of the padded file of ``extractors`` (modality -> {name, kind, model, ...})."""
        fields = {e: {m: len(cols) for m, cols in mods.items()} for e, mods in columns.items()}
        dims = {m: self.dimension(str(e["name"]), e) for m, e in extractors.items() if m != "numeric"}
        return padded_dims(fields, dims, *self.caps)

    def feature_set_dims(self, feature_set: str) -> dict[str, tuple[int, ...]]:
        chosen = self.config["feature_sets"][feature_set]
        extractors = {m: {"name": name, **self.config["extractors"][name]} for m, name in chosen.items()}
        return self.feature_dims(extractors, self.config["columns"])

    def padded_bytes(self, feature_set: str) -> int:
        if feature_set not in self.config["feature_sets"]:  # the latent feature set
            return latent_bytes(*self.caps)
        return padded_bytes(self.feature_set_dims(feature_set))

    def modality_bytes(self, modality: str, extractor: str, prefix: str) -> int:
        """Bytes per stream of one modality's features (what an extraction job holds for its shard)."""
        entry = self.plan.extractor_config(extractor) if prefix and self.plan else self.config["extractors"][extractor]
        if modality in ("video", "audio"):
            return self.caps[1] * self.dimension(extractor, entry) * 4
        width = 1 if modality == "numeric" else self.dimension(extractor, entry)
        columns = self.plan.columns if prefix and self.plan else self.config["columns"]
        values = sum(len(mods.get(modality, [])) * (self.caps[0] if entity == "commodity" else 1)
                     for entity, mods in columns.items())
        return values * width * 4

    # -- the rules --

    def need(self, rule: str, wildcards: Mapping[str, str]) -> Need:
        """What one job of ``rule`` with ``wildcards`` needs (one attempt)."""
        if rule.startswith("extract_"):
            return self._extract(rule, wildcards)
        if rule not in RULE_NEEDS:
            raise ValueError(f"memf resources: no model for rule '{rule}' (modelled: {', '.join(sorted(RULES))})")
        return RULE_NEEDS[rule](self, wildcards)

    def mem_mb(self, rule: str) -> Callable[..., int]:
        """A rule's ``resources: mem_mb=``: the job's need, times the attempt."""
        def mem_mb(wildcards: Mapping[str, str], attempt: int) -> int:
            return self.need(rule, wildcards).mem_mb * attempt
        return mem_mb

    def runtime(self, rule: str) -> Callable[..., int]:
        """A rule's ``resources: runtime=`` (minutes): the job's need, times the attempt."""
        def runtime(wildcards: Mapping[str, str], attempt: int) -> int:
            return self.need(rule, wildcards).runtime * attempt
        return runtime

    def _extract(self, rule: str, w: Mapping[str, str]) -> Need:
        modality = rule.removeprefix("extract_")
        per_shard = math.ceil(self.streams(w["prefix"]) / int(self.config["extraction"]["shards"]))
        return linear_need(rule, per_shard * self.modality_bytes(modality, w["extractor"], w["prefix"]), per_shard)

    def fits(self, experiment: str) -> int:
        """Fits one (experiment, fold) job makes: its tuning trials (when it has a search) and its seeds."""
        exp = self.experiments[experiment]
        return (int(self.config["tuning"]["trials"]) if exp.search else 0) + len(exp.seeds)

    def n_train(self, n: int) -> int:
        """Training streams of a fold (the largest training size in the fixed protocol)."""
        split = self.config["split"]
        if split.get("mode") == "fixed":
            return min(n, max(split["train_sizes"]))
        k = int(split["folds"])
        return math.ceil(n * (k - 2) / k)


# --- the needs, as functions of numbers (tested at 1k and 100k streams against the measurements) -------------------


def pad_need(rule: str, n: int, padded: int) -> Need:
    """pad, pad_latent: the store is written block by block, so a job holds one block of :data:`PAD_BLOCK_ROWS`
    padded streams beside its per-stream bookkeeping (``per_unit`` bytes a stream: ids, offsets, the tables read);
    time per padded byte."""
    c = COST[rule]
    return need(c.base_mib * MIB + min(n, PAD_BLOCK_ROWS) * padded + n * c.per_unit, c.base_s + n * padded * c.seconds)


def fit_need(n: int, padded: int, fits: int, epochs: int, n_train: int, cache_mb: float = DEFAULT_CACHE_MB,
             eval_batch: int = 512) -> Need:
    """fit: mini-batches read from the store: at most ``cache_mb`` of blocks kept between reads (the whole file when
    it is smaller), the padded rows of a block in use and the one read ahead (:data:`BLOCK_ROWS` each) and of an
    evaluation batch as read and as tensors (``eval_batch``, train.eval_batch_size, each), and ``per_unit`` of each
    stream's padded bytes (measured: 4 KB a stream at demo dimensions, 40 KB at the paper's), while ``fits`` trials
    and seeds train ``epochs`` epochs each; an epoch costs ``seconds`` per training stream and
    :data:`FIT_SECONDS_PER_BYTE` per padded byte of it (the input projections; measured at config.yaml's width on the
    CPU)."""
    c = COST["fit"]
    held = min(n * padded, cache_mb * MIB) + padded * (2 * BLOCK_ROWS + 2 * eval_batch) + n * padded * c.per_unit
    epoch = n_train * (c.seconds + padded * FIT_SECONDS_PER_BYTE)
    return need(c.base_mib * MIB + held, c.base_s + fits * epochs * epoch)


def reduction_bytes(n_train: int, pooled: int, widest: int, components: int) -> int:
    """Working memory of the reduction (0 when nothing is reduced): a batch of standardised pooled rows twice (the
    blocks and their concatenation) and, per block, IncrementalPCA's float64 stack of components and batch and its
    SVD (three matrices of the widest block's width)."""
    if widest == 0:
        return 0
    batch = min(n_train, REDUCTION_BATCH)
    return 2 * batch * pooled * 4 + 3 * (components + batch) * widest * 8


def reference_need(model: str, n: int, padded: int, features: int, fits: int, n_train: int,
                   reduced: tuple[int, int, int] = (0, 0, 0)) -> Need:
    """fit_reference: ``per_unit`` bytes per padded byte of every stream (the store is read by blocks; beside the
    model features, a job grew by 0.3 of the padded bytes a stream at demo dimensions, 0.4 at the paper's), the
    model features (``features`` float32 per stream with the copies the model's fit makes) and, when ``reduced`` =
    (pooled width, widest reduced block, components), the reduction's working memory; time: the pooling passes (one,
    or three with a reduction), the reduction and ``fits`` fits on the training streams."""
    c = COST["fit_reference"]
    pooled, widest, components = reduced
    peak = (c.base_mib * MIB + n * (padded * c.per_unit + features * REFERENCE_FEATURE_BYTES[model])
            + reduction_bytes(n_train, pooled, widest, components))
    passes = 3 if widest else 1
    seconds = (c.base_s + passes * n * padded * POOLING_SECONDS_PER_BYTE + n_train * pooled * REDUCTION_SECONDS
               + fits * n_train * features * REFERENCE_FIT_SECONDS[model])
    return need(peak, seconds)


def tables_need(n: int, seed_runs: int, compared: int, n_boot: int) -> Need:
    """tables: every seed's test predictions of every experiment read (``seed_runs``), one chunk of resamples;
    time: ``compared`` rows, each on ``n_boot`` resamples of ``n`` streams."""
    c = COST["tables"]
    return need(c.base_mib * MIB + n * seed_runs * c.per_unit + BOOTSTRAP_CHUNK_BYTES,
                c.base_s + compared * n * n_boot * c.seconds)


# --- rule and wildcards -> the numbers -----------------------------------------------------------------------------


def _fit(plan: ResourcePlan, w: Mapping[str, str]) -> Need:
    """Each fit assumed to run until early stopping ends it, about twice the patience plus 20 epochs (at most
    ``train.epochs``; the demo's runs stop after 30-40 of 40)."""
    exp = plan.experiments[w["experiment"]]
    n, train = plan.streams(), plan.config["train"]
    epochs = min(int(train["epochs"]), 2 * int(train["patience"]) + 20)
    return fit_need(n, plan.padded_bytes(exp.feature_set), plan.fits(w["experiment"]), epochs, plan.n_train(n),
                    float(train["cache_mb"]), int(train["eval_batch_size"]))


def model_features(plan: ResourcePlan, experiment: str) -> tuple[int, tuple[int, int, int]]:
    """A reference experiment's model features (0 for the mean: the pooled width after the reduction rule) and its
    reduction (pooled width, widest reduced block, components; zeros when nothing is reduced)."""
    exp = plan.experiments[experiment]
    if exp.model == "mean":
        return 0, (0, 0, 0)
    opts = {**REFERENCE_OPTIONS[exp.model], **exp.options}
    if exp.feature_set in plan.config["feature_sets"]:
        dims = plan.feature_set_dims(exp.feature_set)
    else:  # latent: the default world's layout at the caps
        dims = padded_dims({"anchor": {"text": 1, "image": 1, "numeric": 2}, "room": {"text": 1, "image": 1,
                            "numeric": 1}, "commodity": {"text": 1, "image": 1, "numeric": 2}},
                           {"text": 20, "image": 20, "video": 1, "audio": 2}, *plan.caps)
    widths = pooled_widths(dims, str(opts["pooling"]))
    reduced = reduced_widths(widths, int(opts["reduce_above"]), int(opts["components"]))
    shrunk = [w for (_, w), (_, r) in zip(widths, reduced) if r < w]
    reduction = (sum(w for _, w in widths), max(shrunk), int(opts["components"])) if shrunk else (0, 0, 0)
    return sum(w for _, w in reduced), reduction


def _fit_reference(plan: ResourcePlan, w: Mapping[str, str]) -> Need:
    exp = plan.experiments[w["experiment"]]
    n = plan.streams()
    features, reduction = model_features(plan, w["experiment"])
    return reference_need(exp.model, n, plan.padded_bytes(exp.feature_set), features, plan.fits(w["experiment"]),
                          plan.n_train(n), reduction)


def table_plan(plan: ResourcePlan) -> tuple[int, int]:
    """(seed-runs the tables hold: every seed of every experiment a table reads; rows compared with a reference)."""
    from memf.config import evaluation_plan
    from memf.training.matrix import ensemble_experiment

    evaluation, _ = evaluation_plan(plan.config)
    rows = {**plan.experiments, **ensemble_experiment(plan.config)}
    names = {row for spec in evaluation["tables"].values() for row in spec["rows"]}
    bases = {evaluation["compare_to"].get(rows[n].feature_set) for n in names}
    names |= {b for b in bases if b}
    compared = sum(1 for spec in evaluation["tables"].values() for row in spec["rows"]
                   if evaluation["compare_to"].get(rows[row].feature_set) not in (None, row))
    return sum(len(rows[n].seeds) for n in names), compared


def _tables(plan: ResourcePlan, w: Mapping[str, str]) -> Need:
    return tables_need(plan.streams(), *table_plan(plan), int(plan.config["evaluation"]["bootstrap"]["n"]))


def _export_best(plan: ResourcePlan, w: Mapping[str, str]) -> Need:
    """As one export (the member bundles are written one after the other, each reading the store by blocks)."""
    return linear_need("export", plan.streams() * plan.padded_bytes(plan.config["ensemble"]["feature_set"]), 0)


def _export(plan: ResourcePlan, w: Mapping[str, str]) -> Need:
    """The neutral reference and the calibration read the store by batches: memory per stream of the training data."""
    return linear_need("export", plan.streams(), 0)


def _predict(plan: ResourcePlan, w: Mapping[str, str]) -> Need:
    """Every member predicts the dataset's store batch by batch: memory per stream (the predictions and drivers
    kept for every stream), time per stream."""
    return linear_need("predict", plan.streams(f"predict/{w['name']}/"))


def _constant(rule: str) -> Callable[[ResourcePlan, Mapping[str, str]], Need]:
    return lambda plan, w: linear_need(rule, 0)


#: Rule -> its need (the extraction rules, one per modality, share :meth:`ResourcePlan._extract`).
RULE_NEEDS: dict[str, Callable[[ResourcePlan, Mapping[str, str]], Need]] = {
    "simulate": lambda plan, w: linear_need("simulate", plan.streams()),
    "simulate_render": lambda plan, w: linear_need("simulate_render", plan.streams(),
                                                   plan.streams() / plan.config["extraction"]["shards"]),
    "probe_media": lambda plan, w: linear_need("probe_media", 0, plan.streams(w["prefix"])
                                               / max(1, plan.config["validation"]["probe_shards"])),
    "validate": lambda plan, w: linear_need("validate", plan.streams(w["prefix"])),
    "tiny_model": _constant("tiny_model"),
    "features_manifest": _constant("features_manifest"),
    "pad": lambda plan, w: pad_need("pad", plan.streams(), plan.padded_bytes(w["feature_set"])),
    "pad_latent": lambda plan, w: pad_need("pad_latent", plan.streams(), latent_bytes(*plan.caps)),
    "fit": _fit,
    "fit_reference": _fit_reference,
    "tables": _tables,
    "figures": _constant("figures"),
    "export": _export,
    "export_best": _export_best,
    "predict": _predict,
    "predict_truth": _constant("predict_truth"),
    "whatif": _constant("whatif"),
    "ensemble": lambda plan, w: linear_need("ensemble", plan.streams()),
    # Planning stops with the reason before this rule could run (workflow/rules/predict.smk): the least a job asks.
    "refuse_export": lambda plan, w: need(0, 0),
}
#: Every rule with a model.
RULES: frozenset[str] = frozenset(RULE_NEEDS) | {f"extract_{m}" for m in ("text", "image", "numeric", "video", "audio")}
