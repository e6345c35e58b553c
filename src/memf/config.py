"""The pipeline configuration, checked completely when the workflow loads (docs/configuration.md).

:func:`load_config` validates the user's config against the JSON schema (``workflow/schemas/config.schema.yaml``),
fills the schema's defaults into what the user left out, and then checks everything the schema cannot express:
model names and options (through the torch-free model catalog), reference options, search spaces, the experiment,
feature-set and extractor cross-references, and the dataset root. Each problem is one line naming the config key,
the bad value and what is accepted; all problems are reported at once.

Nothing here imports torch: the workflow runs this at every load, and a cluster job loads the workflow again.
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

MAX_MESSAGE = 240
#: Named catalogs whose entries in a config are added to the defaults (an entry of a default's name replaces that
#: entry whole): a config that defines one extractor keeps the others the default feature sets name. Unused entries
#: cost nothing (only what experiments use is built). Every other mapping a config writes replaces its default.
EXTENDED_CATALOGS: tuple[str, ...] = ("extractors", "feature_sets", "tiny_models", "search_spaces")


class ConfigError(ValueError):
    """One or more mistakes in the config; ``problems`` holds one line per mistake."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def _default_filling_validator(schema: Mapping[str, Any]) -> Any:
    """A Draft 2020-12 validator that writes each property's ``default`` into the instance as it validates."""
    from jsonschema import Draft202012Validator, validators

    base = Draft202012Validator.VALIDATORS["properties"]

    def properties(validator: Any, props: Mapping[str, Any], instance: Any, schema: Mapping[str, Any]) -> Any:
        if isinstance(instance, dict):
            for name, sub in props.items():
                if "default" in sub and name not in instance:
                    instance[name] = copy.deepcopy(sub["default"])
        yield from base(validator, props, instance, schema)

    cls = validators.extend(Draft202012Validator, {"properties": properties})
    return cls(schema)


def _key(path: Any) -> str:
    return ".".join(str(p) for p in path) or "(top level)"


def _schema_problem(error: Any) -> str:
    """One line for one schema error: the key, the bad value and what is accepted; never the schema itself."""
    key = _key(error.absolute_path)
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        allowed = sorted(error.schema.get("properties", {}))
        unknown = sorted(set(error.instance) - set(allowed))
        if allowed:
            where = "" if key == "(top level)" else f"{key}."
            return f"config key '{where}{unknown[0]}': unknown key (accepted: {', '.join(allowed)})"
    if error.validator == "enum":
        accepted = ", ".join(map(str, error.validator_value))
        return f"config key '{key}': {error.instance!r} is not accepted (accepted: {accepted})"
    if error.validator == "propertyNames":
        pattern = error.validator_value.get("pattern", error.validator_value)
        return f"config key '{key}': a name does not match {pattern}"
    value = repr(error.instance)
    value = value if len(value) <= 60 else value[:57] + "..."
    message = error.message if len(error.message) <= MAX_MESSAGE else f"{value} does not satisfy '{error.validator}'"
    return f"config key '{key}': {message}"


def validate_schema(config: dict[str, Any], schema: Mapping[str, Any]) -> list[str]:
    """Fill defaults into ``config`` (in place) and return one line per schema violation."""
    validator = _default_filling_validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: (list(map(str, e.absolute_path)), e.validator))
    seen, out = set(), []
    for error in errors:
        line = _schema_problem(error)
        if line not in seen:
            seen.add(line)
            out.append(line)
    return out


# --- cross-references ------------------------------------------------------------------------------------------


def _check_dataset(config: Mapping[str, Any], workdir: Path) -> list[str]:
    root = Path(config["dataset"]["root"])
    if config["dataset"]["simulate"]:
        return []
    full = root if root.is_absolute() else workdir / root
    if not full.is_dir():
        return [f"config key 'dataset.root': '{root}' is not a folder (looked in {full}); set it to your dataset "
                "(docs/data-format.md) or set dataset.simulate: true"]
    missing = [t for t in ("streams", "anchors", "items", "clips") if not (full / f"{t}.parquet").is_file()]
    if missing:
        return [f"config key 'dataset.root': '{root}' has no {', '.join(f'{t}.parquet' for t in missing)} "
                "(docs/data-format.md)"]
    return []


def _check_feature_sets(config: Mapping[str, Any]) -> list[str]:
    """The feature sets experiments use name existing extractors of the right modality (unused ones are not built)."""
    from memf.features.spec import kind_modality

    out = []
    extractors = config["extractors"]
    used = {e.get("feature_set") for e in config["experiments"].values()}
    for fs, chosen in config["feature_sets"].items():
        if fs not in used:
            continue
        for modality, name in chosen.items():
            if name not in extractors:
                out.append(f"config key 'feature_sets.{fs}.{modality}': '{name}' is not an extractor "
                           f"(known: {', '.join(sorted(extractors))})")
            elif kind_modality(extractors[name]["kind"]) != modality:
                out.append(f"config key 'feature_sets.{fs}.{modality}': extractor '{name}' is a "
                           f"{kind_modality(extractors[name]['kind'])} extractor, expected a {modality} one")
    return out


def _check_extractors(config: Mapping[str, Any]) -> list[str]:
    from memf.features import spec
    from memf.features.layout import model_dir

    problems = spec.check_extractors(config["extractors"], built_models={model_dir(n) for n in config["tiny_models"]})
    out = []
    for line in problems:
        key, sep, message = line.partition(": ")
        out.append(f"config key '{key}': {message}" if sep else f"config key 'extractors': {line}")
    return out


def _check_space(name: str, space: Any, model: str, accepted: frozenset[str], where: str) -> list[str]:
    out = []
    for param in space:
        if param.scope == "model" and param.name not in accepted:
            out.append(f"config key 'search_spaces.{name}.{param.key}': not an option of model '{model}' "
                       f"(used by {where}; accepted: {', '.join(sorted(accepted))})")
    by_key = {p.key: p for p in space}
    width, heads = by_key.get("model.width"), by_key.get("model.heads")
    if width and heads and width.distribution == heads.distribution == "choice":
        bad = [(w, h) for w in width.args for h in heads.args if w % h]
        if bad:
            out.append(f"config key 'search_spaces.{name}': model.width {bad[0][0]} is not divisible by model.heads "
                       f"{bad[0][1]}; every width choice must divide by every heads choice")
    return out


def _check_model_section(section: Mapping[str, Any], neural: Mapping[str, list[str]]) -> tuple[list[str], set[str]]:
    """The top-level ``model:`` options go to every neural experiment: each mistake there is one line naming
    ``model.<key>`` (not one line per experiment). Returns the problems and the keys they concern, which the check
    of each experiment's own options leaves out.

    ``neural``: model -> the experiments of the matrix that use it."""
    import dataclasses
    import difflib

    from memf.models.options import ModelConfig, accepted_options

    fields = sorted(f.name for f in dataclasses.fields(ModelConfig))
    # Options every neural model of the matrix takes (with none, the section is unused: any known option will do).
    shared = frozenset.intersection(*map(accepted_options, neural)) if neural else frozenset(fields)
    out, bad = [], set()
    for key in section:
        if key not in fields:
            close = difflib.get_close_matches(str(key), fields, n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            out.append(f"config key 'model.{key}': unknown option ({hint}options under model go to every neural "
                       f"experiment; accepted: {', '.join(sorted(shared))})")
        elif key not in shared:
            users = sorted(e for m, exps in neural.items() if key not in accepted_options(m) for e in exps)
            out.append(f"config key 'model.{key}': the models of experiments {', '.join(users)} do not take it, and "
                       "options under model go to every neural experiment; set it in the options of the experiments "
                       "whose model takes it")
        else:
            continue
        bad.add(key)
    for key, value in section.items():
        if key in bad:
            continue
        try:  # the value alone; how it combines with the other options (width and heads) is each experiment's check
            ModelConfig.from_options("model", {key: value}, frozenset(fields))
        except ValueError as exc:
            message = str(exc).removeprefix("model 'model': ")
            if re.search(rf"option '{re.escape(str(key))}'", message):
                out.append(f"config key 'model.{key}': {message}")
                bad.add(key)
    return out, bad


def _check_search(exp: Any, spaces: Mapping[str, Any], config: Mapping[str, Any], where: str) -> list[str]:
    """An experiment's search space exists, tunes only what its model has, and fixes nothing it searches."""
    from memf.models.options import accepted_options
    from memf.training.matrix import REFERENCE_OPTIONS

    if exp.search not in config["search_spaces"]:
        return [f"config key '{where}.search': '{exp.search}' is not a search space (known: "
                f"{', '.join(sorted(config['search_spaces'])) or 'none'})"]
    if exp.search not in spaces:
        return []  # the space itself is wrong, and reported
    space = spaces[exp.search]
    accepted = frozenset(REFERENCE_OPTIONS[exp.model]) if exp.is_reference else accepted_options(exp.model)
    out = _check_space(exp.search, space, exp.model, accepted, where)
    if exp.is_reference and any(p.scope == "train" for p in space):
        out.append(f"config key '{where}.search': space '{exp.search}' tunes training settings, which a "
                   f"reference model ({exp.model}) does not have")
    fixed = sorted({p.name for p in space if p.scope == "model"} & set(exp.options))
    if fixed:
        out.append(f"config key '{where}.options.{fixed[0]}': also searched by space '{exp.search}'; set it in one "
                   "place")
    return out


def _check_experiment(name: str, exp: Any, shared: Mapping[str, Any], spaces: Mapping[str, Any],
                      config: Mapping[str, Any]) -> list[str]:
    """One experiment of the matrix: its model, feature set, options (with the ``model:`` options that are right,
    ``shared``) and search space."""
    from memf.models.options import MODEL_OPTIONS, model_config
    from memf.training.matrix import LATENT_FEATURE_SET, REFERENCE_MODELS, reference_options

    where, out = f"experiments.{name}", []
    models = [*MODEL_OPTIONS, *REFERENCE_MODELS]
    if exp.model not in models:
        return [f"config key '{where}.model': '{exp.model}' is not a model (accepted: {', '.join(models)})"]
    if exp.feature_set == LATENT_FEATURE_SET:
        if not config["dataset"]["simulate"]:
            out.append(f"config key '{where}.feature_set': '{LATENT_FEATURE_SET}' (the simulator's true latent "
                       "factors) needs dataset.simulate: true")
    elif exp.feature_set not in config["feature_sets"]:
        out.append(f"config key '{where}.feature_set': '{exp.feature_set}' is not a feature set (known: "
                   f"{', '.join(sorted([*config['feature_sets'], LATENT_FEATURE_SET]))})")
    try:
        if exp.is_reference:
            reference_options(exp.model, exp.options)
        else:
            model_config(exp.model, {**shared, **exp.options})
    except ValueError as exc:
        out.append(f"config key '{where}.options': {exc}")
    if exp.search is not None:
        out += _check_search(exp, spaces, config, where)
    return out


def _check_experiments(config: Mapping[str, Any]) -> list[str]:
    from memf.models.options import MODEL_OPTIONS
    from memf.training.matrix import experiments_from_config
    from memf.training.settings import parse_space

    out: list[str] = []
    spaces = {}
    for name, spec in config["search_spaces"].items():
        try:
            spaces[name] = parse_space(name, spec)
        except ValueError as exc:
            out.append(f"config key {exc}")
    try:
        experiments = experiments_from_config(config["experiments"], config["seeds"])
    except ValueError as exc:
        return [*out, f"config key {exc}"]
    neural: dict[str, list[str]] = {}
    for name, exp in experiments.items():
        if exp.model in MODEL_OPTIONS:
            neural.setdefault(exp.model, []).append(name)
    problems, bad = _check_model_section(config["model"], neural)
    shared = {k: v for k, v in config["model"].items() if k not in bad}
    out += problems
    for name, exp in experiments.items():
        out += _check_experiment(name, exp, shared, spaces, config)
    return out


def _check_evaluation(config: Mapping[str, Any]) -> list[str]:
    """What the evaluation section can get wrong beyond naming absent experiments (those are filtered, see
    :func:`evaluation_plan`)."""
    from memf.training.matrix import REFERENCE_MODELS

    out = []
    experiments = config["experiments"]
    figure = config["evaluation"]["figures"]["experiment"]
    if figure in experiments and experiments[figure]["model"] in REFERENCE_MODELS:
        out.append(f"config key 'evaluation.figures.experiment': '{figure}' is a reference model; Figs. 3, 4 and 6 "
                   "need a trained one")
    run_folds, k = config["split"]["run_folds"], run_fold_count(config)
    if run_folds is not None and any(not 0 <= fold < k for fold in run_folds):
        out.append(f"config key 'split.run_folds': {run_folds} has folds outside 0..{k - 1}")
    return out


def run_fold_count(config: Mapping[str, Any]) -> int:
    """How many run folds the config's ``split`` has (K, or the fixed protocol's (size, replicate) pairs)."""
    from memf.data.folds import FoldPlan

    return FoldPlan.from_config(config["split"]).k


def _check_split(config: Mapping[str, Any]) -> list[str]:
    """The fixed protocol: one replicate count per training size, and room for them in a simulated dataset."""
    split = config["split"]
    if split["mode"] != "fixed":
        return []
    out = []
    if len(split["replicates"]) != len(split["train_sizes"]):
        out.append(f"config key 'split.replicates': {split['replicates']}; one count per entry of split.train_sizes "
                   f"({len(split['train_sizes'])} entries)")
    need = max(split["train_sizes"]) + split["validation"] + split["test"]
    if config["dataset"]["simulate"] and config["simulator"]["n_streams"] < need:
        out.append(f"config key 'simulator.n_streams': {config['simulator']['n_streams']}; the fixed protocol needs at "
                   f"least {need} (largest split.train_sizes + split.validation + split.test)")
    return out


def _check_ensemble(config: Mapping[str, Any]) -> list[str]:
    """``ensemble``: its feature set and candidates name what the matrix has; no experiment takes its names."""
    from memf.training.matrix import BEST, ENSEMBLE, LATENT_FEATURE_SET

    section, experiments, out = config["ensemble"], config["experiments"], []
    for name in (ENSEMBLE, BEST):
        if name in experiments:
            out.append(f"config key 'experiments.{name}': the name is the ensemble's; name the experiment otherwise")
    feature_set = section["feature_set"]
    if feature_set not in config["feature_sets"] and feature_set != LATENT_FEATURE_SET:
        out.append(f"config key 'ensemble.feature_set': '{feature_set}' is not a feature set (known: "
                   f"{', '.join(sorted(config['feature_sets']))})")
    on_it = [n for n, e in experiments.items() if e["feature_set"] == feature_set]
    for name in section["candidates"] or []:
        if name not in on_it:
            out.append(f"config key 'ensemble.candidates': '{name}' is not an experiment on feature set "
                       f"'{feature_set}' (those: {', '.join(on_it) or 'none'})")
    return out


def _check_predict_bundle(config: Mapping[str, Any], workdir: Path) -> list[str]:
    """``predict.bundle``: a trained experiment on extractor features (:func:`memf.predict.plan.why_not_exportable`)
    with the fold and seeds it keeps, or a bundle folder."""
    from memf.predict.plan import why_not_exportable
    from memf.training.matrix import BEST

    section = config["predict"]
    ref, out = section["bundle"], []
    experiments = config["experiments"]
    if ref is None:
        if section["datasets"]:
            out.append("config key 'predict.bundle': null, but predict.datasets names datasets to predict; set it to "
                       "a trained experiment (e.g. memf) or a bundle folder")
    elif ref == BEST:
        why = why_not_exportable(config, ref)
        out += [f"config key 'predict.bundle': {why}"] if why else []
        out += [f"config key 'predict.{key}': {section[key]}; the bundle {BEST} keeps every fold and seed of its "
                "members (their weights are per fold), so only null is accepted" for key in ("fold", "seeds")
                if section[key] is not None]
    elif ref in experiments:
        why = why_not_exportable(config, ref)
        if why:
            out.append(f"config key 'predict.bundle': {why}")
        folds = list(config["split"]["run_folds"] or range(run_fold_count(config)))
        if section["fold"] is not None and section["fold"] not in folds:
            out.append(f"config key 'predict.fold': {section['fold']} is not a fold that runs (folds: "
                       f"{', '.join(map(str, folds))})")
        seeds = experiments[ref].get("seeds", config["seeds"])
        if section["seeds"] is not None and not set(section["seeds"]) <= set(seeds):
            out.append(f"config key 'predict.seeds': {section['seeds']} are not all seeds of experiment '{ref}' "
                       f"(its seeds: {', '.join(map(str, seeds))})")
    elif not (_folder(ref, workdir) / "bundle.json").is_file():
        record = _folder(ref, workdir) / "bundle.json"
        out.append(f"config key 'predict.bundle': '{ref}' is neither an experiment (known: "
                   f"{', '.join(sorted(experiments))}) nor a bundle folder (no {record})")
    return out


def _folder(path: str, workdir: Path) -> Path:
    return Path(path) if Path(path).is_absolute() else workdir / path


def _check_predict(config: Mapping[str, Any], workdir: Path) -> list[str]:
    """``predict``: the bundle, and the datasets' folders (the simulated dataset may be named before the simulator
    wrote it)."""
    out = _check_predict_bundle(config, workdir)
    for name, path in config["predict"]["whatif"].items():
        if name not in config["predict"]["datasets"]:
            out.append(f"config key 'predict.whatif.{name}': '{name}' is not a dataset of predict.datasets (known: "
                       f"{', '.join(config['predict']['datasets']) or 'none'})")
        elif Path(path).suffix not in (".csv", ".parquet", ".yaml", ".yml"):
            out.append(f"config key 'predict.whatif.{name}': '{path}'; a variants file is .csv, .parquet, .yaml or .yml")
        elif not _folder(path, workdir).is_file():
            out.append(f"config key 'predict.whatif.{name}': '{path}' is not a file")
    simulated = config["dataset"]["root"] if config["dataset"]["simulate"] else None
    for name, root in config["predict"]["datasets"].items():
        if root == simulated:
            continue
        folder = _folder(root, workdir)
        missing = [t for t in ("streams", "anchors", "items", "clips") if not (folder / f"{t}.parquet").is_file()]
        if not folder.is_dir():
            out.append(f"config key 'predict.datasets.{name}': '{root}' is not a folder (looked in {folder})")
        elif missing:
            out.append(f"config key 'predict.datasets.{name}': '{root}' has no "
                       f"{', '.join(f'{t}.parquet' for t in missing)} (docs/data-format.md)")
    return out


#: The defect switches that damage media files (``memf.simulate.params.MEDIA_DEFECT_KEYS``, repeated here so that
#: loading the workflow does not import the simulator; tests/test_config.py keeps the two equal).
MEDIA_DEFECTS: tuple[str, ...] = ("corrupt_image", "truncated_video", "corrupt_audio", "no_audio_stream")


def _check_media_free(config: Mapping[str, Any]) -> list[str]:
    """With ``simulator.media: false`` the simulated dataset has tables, ground truth and latents only: no experiment
    (hence no table row) may use a feature set extracted from media, no dataset to predict may be the simulated one,
    and no defect may damage media."""
    from memf.training.matrix import LATENT_FEATURE_SET

    if not config["dataset"]["simulate"] or config["simulator"]["media"]:
        return []
    why = "simulator.media is false (no media are written)"
    out = [f"config key 'experiments.{name}.feature_set': '{entry.get('feature_set')}'; {why}, so only the feature "
           f"set '{LATENT_FEATURE_SET}' is accepted"
           for name, entry in config["experiments"].items() if entry.get("feature_set") != LATENT_FEATURE_SET]
    out += [f"config key 'predict.datasets.{name}': '{root}'; {why}, so only datasets other than the simulated one "
            f"(dataset.root) are accepted"
            for name, root in config["predict"]["datasets"].items() if root == config["dataset"]["root"]]
    defects = config["simulator"]["defects"]
    out += [f"config key 'simulator.defects.{key}': {defects[key]}; {why}, so only 0 is accepted"
            for key in MEDIA_DEFECTS if defects[key] > 0]
    return out


def check_config(config: Mapping[str, Any], workdir: Path) -> list[str]:
    """Every cross-reference problem of a schema-valid, default-filled config, one line each."""
    return [
        *_check_dataset(config, workdir),
        *_check_feature_sets(config),
        *_check_extractors(config),
        *_check_experiments(config),
        *_check_evaluation(config),
        *_check_split(config),
        *_check_ensemble(config),
        *_check_predict(config, workdir),
        *_check_media_free(config),
    ]


def extend_catalogs(config: dict[str, Any], schema: Mapping[str, Any]) -> None:
    """Add the schema's default entries to each catalog of :data:`EXTENDED_CATALOGS` that ``config`` writes (in
    place); an entry the config writes under a default's name replaces that entry."""
    for key in EXTENDED_CATALOGS:
        if isinstance(config.get(key), dict):
            config[key] = {**copy.deepcopy(schema["properties"][key]["default"]), **config[key]}


def load_config(config: dict[str, Any], schema_path: str | os.PathLike[str], workdir: str | os.PathLike[str]) -> None:
    """Validate ``config`` in place (defaults filled, the catalogs of :data:`EXTENDED_CATALOGS` extended) and check it.

    Raises:
        ConfigError: one line per problem.
    """
    with open(schema_path, encoding="utf-8") as fh:
        schema = yaml.safe_load(fh)
    extend_catalogs(config, schema)
    problems = validate_schema(config, schema)
    if problems:
        raise ConfigError(problems)
    problems = check_config(config, Path(workdir))
    if problems:
        raise ConfigError(problems)


def _kept_tables(tables: Mapping[str, Any], experiments: Mapping[str, Any],
                 default: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The tables that are written, and the notes on the user's own tables (those that differ from the default).

    A table keeps the rows whose experiments exist; with fewer than two it compares nothing and is not written. A
    default table whose rows all appear in another written table (Table 10 with only the demo feature set's rows,
    which Table 9 has) repeats it and is not written either."""
    kept, notes = {}, []
    for name, spec in tables.items():
        rows = {e: label for e, label in spec["rows"].items() if e in experiments}
        gone = [e for e in spec["rows"] if e not in experiments]
        own = spec != default.get(name)
        if own and gone and len(rows) > 1:
            notes.append(f"evaluation.tables.{name} leaves out the rows {', '.join(gone)}")
        elif own and gone:
            notes.append(f"evaluation.tables.{name} is not written ({len(rows)} of its rows has an experiment)")
        if len(rows) > 1:
            kept[name] = {**spec, "rows": rows}
    for name in list(kept):
        if tables[name] == default.get(name) and any(
                set(kept[name]["rows"]) <= set(other["rows"]) for o, other in kept.items() if o != name):
            del kept[name]  # a default table repeating rows another written table shows
    return kept, notes


def _kept_references(evaluation: Mapping[str, Any], experiments: Mapping[str, Any],
                     default: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The comparisons, ceilings and run figures whose experiments exist; notes on those the user set."""
    out, notes = {}, []
    out["compare_to"] = {fs: e for fs, e in evaluation["compare_to"].items() if e in experiments}
    gone = [f"{fs}: {e}" for fs, e in evaluation["compare_to"].items()
            if e not in experiments and default["compare_to"].get(fs) != e]
    if gone:
        notes.append(f"evaluation.compare_to leaves out {', '.join(gone)}")
    latent = evaluation["ceilings"]["latent"]
    out["ceilings"] = {**evaluation["ceilings"], "latent": [e for e in latent if e in experiments]}
    gone = [e for e in latent if e not in experiments and e not in default["ceilings"]["latent"]]
    if gone:
        notes.append(f"evaluation.ceilings.latent leaves out {', '.join(gone)}")
    figure = evaluation["figures"]["experiment"]
    out["figures"] = evaluation["figures"]
    if figure is not None and figure not in experiments:
        out["figures"] = {**evaluation["figures"], "experiment": None}
        if figure != default["figures"]["experiment"]:
            notes.append(f"evaluation.figures.experiment '{figure}' is not an experiment, so Figs. 3, 4 and 6 are not "
                         "drawn")
    return out, notes


def evaluation_plan(config: Mapping[str, Any], defaults: Mapping[str, Any] | None = None) -> tuple[dict[str, Any],
                                                                                                  list[str]]:
    """The evaluation section restricted to the experiments that exist, and a note per change to what the user set.

    A smaller matrix (a user's config with a few experiments) gets the table rows, comparisons, ceilings and figures
    it has: a table keeps the rows whose experiments exist (a table left with fewer than two rows compares nothing and
    is not written), a default table whose rows another written table shows is not written, a comparison or a ceiling
    naming an absent experiment is dropped, and the run figures are drawn only for an existing experiment.

    Notes are only for what the user set themselves: an entry equal to the schema's default (``defaults``: the
    default config, :func:`schema_defaults`; None: every entry counts as the user's) changes nothing they asked for.
    """
    from memf.training.matrix import ensemble_experiment

    experiments = {**config["experiments"], **ensemble_experiment(config)}  # the ensemble is a row like any other
    evaluation = copy.deepcopy(dict(config["evaluation"]))
    default = (defaults or {}).get("evaluation") or {
        "tables": {}, "compare_to": {}, "ceilings": {"latent": []}, "figures": {"experiment": None},
        "importance": {"table": None}}
    tables, notes = _kept_tables(evaluation["tables"], experiments, default["tables"])
    references, more = _kept_references(evaluation, experiments, default)
    evaluation.update(tables=tables, **references)
    notes += more
    importance = evaluation["importance"]["table"]
    if importance is not None and importance not in tables:
        evaluation["importance"] = {**evaluation["importance"], "table": None}
        if importance != default["importance"]["table"]:
            notes.append(f"evaluation.importance.table '{importance}' is not written, so the importance check is "
                         "skipped")
    return evaluation, notes


def note_line(notes: list[str]) -> str | None:
    """The notes of :func:`evaluation_plan` as one console line (None: nothing to say)."""
    if not notes:
        return None
    return "memf config note: experiments absent from your matrix: " + "; ".join(notes)


def schema_defaults(schema_path: str | os.PathLike[str]) -> dict[str, Any]:
    """The config a config file without any key gets: the schema's defaults (the shipped demo's)."""
    with open(schema_path, encoding="utf-8") as fh:
        schema = yaml.safe_load(fh)
    defaults: dict[str, Any] = {}
    validate_schema(defaults, schema)
    return defaults


# --- keeping the schema's defaults equal to the shipped config --------------------------------------------------

#: The one default that differs from the shipped demo config: a config without its own matrix runs MEMF alone.
DEFAULT_EXPERIMENTS: dict[str, Any] = {"memf": {"model": "memf", "feature_set": "demo", "search": "memf-demo"}}
SCHEMA_HEADER = (
    "# JSON schema of the memf config (config.yaml; docs/configuration.md). Defaults fill what a config leaves out and\n"
    "# equal the shipped config.yaml (tests/test_config.py), except `experiments`. After editing config.yaml, rewrite\n"
    "# the defaults with: python -m memf.config workflow/schemas/config.schema.yaml config.yaml\n"
)


def _sync(node: dict[str, Any], cfg: Mapping[str, Any], path: str) -> None:
    props = node.get("properties", {})
    for key, value in cfg.items():
        if not path and key == "experiments":
            continue
        if key not in props:
            raise ConfigError([f"config key '{path}{key}' is in the config but not in the schema"])
        sub = props[key]
        if "properties" in sub and isinstance(value, dict) and sub.get("additionalProperties") is False:
            _sync(sub, value, f"{path}{key}.")
            sub.setdefault("default", {})
        else:
            sub["default"] = copy.deepcopy(value)


def schema_with_defaults(schema: dict[str, Any], config: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``schema`` whose defaults are the values of ``config`` (and :data:`DEFAULT_EXPERIMENTS`)."""
    out = copy.deepcopy(schema)
    _sync(out, config, "")
    out["properties"]["experiments"]["default"] = copy.deepcopy(DEFAULT_EXPERIMENTS)
    return out


def dump_schema(schema: Mapping[str, Any]) -> str:
    """The schema as YAML: short mappings and scalar lists in flow style, everything else in block style."""

    class Dumper(yaml.SafeDumper):
        pass

    def mapping(dumper: yaml.SafeDumper, data: dict[str, Any]) -> Any:
        flat = all(not isinstance(v, (dict, list)) or (isinstance(v, list) and all(not isinstance(x, (dict, list))
                                                                                   for x in v)) for v in data.values())
        return dumper.represent_mapping("tag:yaml.org,2002:map", data, flow_style=flat and len(data) <= 8)

    def sequence(dumper: yaml.SafeDumper, data: list[Any]) -> Any:
        return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=all(not isinstance(x, dict)
                                                                                        for x in data))

    Dumper.add_representer(dict, mapping)
    Dumper.add_representer(list, sequence)
    return SCHEMA_HEADER + yaml.dump(dict(schema), Dumper=Dumper, sort_keys=False, width=118, allow_unicode=True)


if __name__ == "__main__":
    import sys

    from memf.core.io import write_text

    if len(sys.argv) != 3:
        sys.exit("usage: python -m memf.config SCHEMA CONFIG  (rewrites SCHEMA's defaults from CONFIG)")
    with open(sys.argv[1], encoding="utf-8") as fh:
        current = yaml.safe_load(fh)
    with open(sys.argv[2], encoding="utf-8") as fh:
        shipped = yaml.safe_load(fh)
    write_text(sys.argv[1], dump_schema(schema_with_defaults(current, shipped)))
