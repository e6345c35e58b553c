"""Snakemake adapter: rules fit and fit_reference -> memf.training.fit.fit_experiment for one (experiment, fold)."""

from pathlib import Path

import torch
from threadpoolctl import threadpool_limits

from memf.core.io import read_json
from memf.core.logs import job_log
from memf.training.fit import JobSpec, fit_experiment
from memf.training.neural import NeuralFitter
from memf.training.reference_fit import ReferenceFitter
from memf.training.settings import PLACEMENT_KEYS, Param, TrainConfig, TuningSettings

sm = snakemake  # noqa: F821 (injected by Snakemake)
# The job's cores are its Snakemake threads: torch's and the BLAS/OpenMP pools scikit-learn uses (an uncapped
# gradient-boosting fit next to other jobs was several times slower).
with job_log(sm.log[0]), threadpool_limits(sm.threads):
    torch.set_num_threads(sm.threads)
    spec = sm.params.spec
    space = tuple(Param(p["scope"], p["name"], p["distribution"], tuple(p["args"])) for p in spec["space"] or [])
    # Placement settings come from the config, not the params: changing them reruns nothing.
    train = {**sm.params.get("train", {}), **{k: sm.config["train"][k] for k in PLACEMENT_KEYS}}
    fit_experiment(
        sm.input.padded,
        sm.params.out_dir,
        JobSpec(
            experiment=sm.wildcards.experiment, model=spec["model"], feature_set=spec["feature_set"],
            fold=int(sm.wildcards.fold), seeds=tuple(spec["seeds"]), options=spec["options"], space=space or None,
            tuned=read_json(sm.input.tuned)["params"] if "tuned" in sm.input.keys() else None,
            source=spec["search"] or (f"tuned_as {spec['tuned_as']}" if spec["tuned_as"] else "fixed"),
        ),
        TrainConfig.from_dict(train),
        fitter=ReferenceFitter if sm.rule == "fit_reference" else NeuralFitter,
        tuning=TuningSettings.from_dict(sm.params.tuning),
        tuning_dir=Path(sm.output.best).parent,
        ground_truth=sm.input.get("ground_truth"),
    )
