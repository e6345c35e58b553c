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
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

MAX_MESSAGE = 240


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
        return f"config key '{key}': {error.instance!r} is not accepted (accepted: {', '.join(map(str, error.validator_value))})"
    if error.validator == "propertyNames":
        return f"config key '{key}': a name does not match {error.validator_value.get('pattern', error.validator_value)}"
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


def _check_experiments(config: Mapping[str, Any]) -> list[str]:
    from memf.models.options import MODEL_OPTIONS, accepted_options, model_config
    from memf.training.matrix import (
        LATENT_FEATURE_SET,
        REFERENCE_MODELS,
        REFERENCE_OPTIONS,
        experiments_from_config,
        reference_options,
    )
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
    models = [*MODEL_OPTIONS, *REFERENCE_MODELS]
    for name, exp in experiments.items():
        where = f"experiments.{name}"
        if exp.model not in models:
            out.append(f"config key '{where}.model': '{exp.model}' is not a model (accepted: {', '.join(models)})")
            continue
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
                model_config(exp.model, {**config["model"], **exp.options})
        except ValueError as exc:
            out.append(f"config key '{where}.options': {exc}")
        if exp.search is not None:
            if exp.search not in config["search_spaces"]:
                out.append(f"config key '{where}.search': '{exp.search}' is not a search space (known: "
                           f"{', '.join(sorted(config['search_spaces'])) or 'none'})")
            elif exp.search in spaces:
                space = spaces[exp.search]
                accepted = frozenset(REFERENCE_OPTIONS[exp.model]) if exp.is_reference else accepted_options(exp.model)
                out += _check_space(exp.search, space, exp.model, accepted, where)
                if exp.is_reference and any(p.scope == "train" for p in space):
                    out.append(f"config key '{where}.search': space '{exp.search}' tunes training settings, which a "
                               f"reference model ({exp.model}) does not have")
                fixed = sorted({p.name for p in space if p.scope == "model"} & set(exp.options))
                if fixed:
                    out.append(f"config key '{where}.options.{fixed[0]}': also searched by space '{exp.search}'; "
                               "set it in one place")
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
    run_folds = config["split"]["run_folds"]
    if run_folds is not None and any(not 0 <= k < config["split"]["folds"] for k in run_folds):
        out.append(f"config key 'split.run_folds': {run_folds} has folds outside 0..{config['split']['folds'] - 1}")
    return out


def _check_predict(config: Mapping[str, Any], workdir: Path) -> list[str]:
    """``predict``: the bundle (a trained experiment on extractor features, or a bundle folder), the fold and seeds
    it keeps, and the datasets' folders (the simulated dataset may be named before the simulator wrote it)."""
    from memf.training.matrix import LATENT_FEATURE_SET, REFERENCE_MODELS

    section = config["predict"]
    ref, out = section["bundle"], []
    experiments = config["experiments"]

    def folder(path: str) -> Path:
        return Path(path) if Path(path).is_absolute() else workdir / path

    if ref is None:
        if section["datasets"]:
            out.append("config key 'predict.bundle': null, but predict.datasets names datasets to predict; set it to "
                       "a trained experiment (e.g. memf) or a bundle folder")
    elif ref in experiments:
        entry = experiments[ref]
        if entry.get("model") in REFERENCE_MODELS:
            out.append(f"config key 'predict.bundle': '{ref}' is a reference model ({entry['model']}), which has no "
                       "weights to bundle; name a trained experiment")
        elif entry.get("feature_set") == LATENT_FEATURE_SET:
            out.append(f"config key 'predict.bundle': '{ref}' reads the simulator's latent factors, which new data "
                       "does not have; name an experiment on extracted features")
        folds = list(config["split"]["run_folds"] or range(config["split"]["folds"]))
        if section["fold"] is not None and section["fold"] not in folds:
            out.append(f"config key 'predict.fold': {section['fold']} is not a fold that runs (folds: "
                       f"{', '.join(map(str, folds))})")
        seeds = entry.get("seeds", config["seeds"])
        if section["seeds"] is not None and not set(section["seeds"]) <= set(seeds):
            out.append(f"config key 'predict.seeds': {section['seeds']} are not all seeds of experiment '{ref}' "
                       f"(its seeds: {', '.join(map(str, seeds))})")
    elif not (folder(ref) / "bundle.json").is_file():
        out.append(f"config key 'predict.bundle': '{ref}' is neither an experiment (known: "
                   f"{', '.join(sorted(experiments))}) nor a bundle folder (no {folder(ref) / 'bundle.json'})")
    simulated = config["dataset"]["root"] if config["dataset"]["simulate"] else None
    for name, root in section["datasets"].items():
        if root == simulated:
            continue
        missing = [t for t in ("streams", "anchors", "items", "clips") if not (folder(root) / f"{t}.parquet").is_file()]
        if not folder(root).is_dir():
            out.append(f"config key 'predict.datasets.{name}': '{root}' is not a folder (looked in {folder(root)})")
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
        *_check_predict(config, workdir),
        *_check_media_free(config),
    ]


def load_config(config: dict[str, Any], schema_path: str | os.PathLike[str], workdir: str | os.PathLike[str]) -> None:
    """Validate ``config`` in place (defaults filled) and check it.

    Raises:
        ConfigError: one line per problem.
    """
    with open(schema_path, encoding="utf-8") as fh:
        schema = yaml.safe_load(fh)
    problems = validate_schema(config, schema)
    if problems:
        raise ConfigError(problems)
    problems = check_config(config, Path(workdir))
    if problems:
        raise ConfigError(problems)


def evaluation_plan(config: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The evaluation section restricted to the experiments that exist, and one note per thing left out.

    A smaller matrix (a user's config with a few experiments) gets the table rows, comparisons, ceilings and figures
    it has: a table keeps the rows whose experiments exist (a table left with fewer than two rows compares nothing and
    is not written), a comparison or
    a ceiling naming an absent experiment is dropped, and the run figures are drawn only for an existing experiment.
    """
    experiments = config["experiments"]
    evaluation = copy.deepcopy(dict(config["evaluation"]))
    notes = []
    tables = {}
    for name, spec in evaluation["tables"].items():
        rows = {e: label for e, label in spec["rows"].items() if e in experiments}
        gone = [e for e in spec["rows"] if e not in experiments]
        if gone and len(rows) > 1:
            notes.append(f"evaluation.tables.{name}: rows without an experiment left out: {', '.join(gone)}")
        elif gone:
            notes.append(f"evaluation.tables.{name}: {len(rows)} of its rows have an experiment; not written")
        if len(rows) > 1:
            tables[name] = {**spec, "rows": rows}
    evaluation["tables"] = tables
    compare = {fs: e for fs, e in evaluation["compare_to"].items() if e in experiments}
    if len(compare) < len(evaluation["compare_to"]):
        notes.append("evaluation.compare_to: comparisons with absent experiments left out: "
                     + ", ".join(e for e in evaluation["compare_to"].values() if e not in experiments))
    evaluation["compare_to"] = compare
    latent = [e for e in evaluation["ceilings"]["latent"] if e in experiments]
    if len(latent) < len(evaluation["ceilings"]["latent"]):
        notes.append("evaluation.ceilings.latent: absent experiments left out: "
                     + ", ".join(e for e in evaluation["ceilings"]["latent"] if e not in experiments))
    evaluation["ceilings"] = {**evaluation["ceilings"], "latent": latent}
    figure = evaluation["figures"]["experiment"]
    if figure is not None and figure not in experiments:
        notes.append(f"evaluation.figures.experiment: '{figure}' is not an experiment; Figs. 3, 4 and 6 are not drawn")
        evaluation["figures"] = {**evaluation["figures"], "experiment": None}
    importance = evaluation["importance"]["table"]
    if importance is not None and importance not in tables:
        notes.append(f"evaluation.importance.table: '{importance}' is not written; the importance check is skipped")
        evaluation["importance"] = {**evaluation["importance"], "table": None}
    return evaluation, notes


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
