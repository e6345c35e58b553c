"""The structure a newcomer relies on: the layers and their contracts (import-linter), the linter, one registry per
kind of thing with its torch-free catalog equal to it, code versions derived from imports, and one owner per path."""

import ast
import re
import shutil
import subprocess
import sys
import tokenize
from pathlib import Path

import pytest
import yaml

from memf.core.version import STAGE_ENTRIES, code_version, import_closure, modules_version

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _tool(name: str) -> str:
    path = BIN / name
    if not path.exists():
        pytest.fail(f"{name} is not installed in {BIN}: it is a test dependency (pyproject.toml, extra 'test')")
    return str(path)


def test_layers_and_import_contracts_hold():
    out = subprocess.run([_tool("lint-imports"), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert "0 broken" in out.stdout


def test_the_code_passes_the_linter():
    # pyproject.toml [tool.ruff]: line length, imports, unused names, and functions kept short and simple.
    out = subprocess.run([_tool("ruff"), "check", "--no-cache", "src", "tests", "bench", "workflow/scripts"], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]


# --- one registry per kind of thing, and the catalogs the workflow reads at load equal to it -----------------------


def test_model_and_fusion_registries_equal_their_catalogs():
    from memf.models import ENTITY_FUSIONS, MODEL_OPTIONS, MODELS
    from memf.models.options import ENTITY_FUSION_NAMES

    assert list(MODELS) == list(MODEL_OPTIONS)
    assert list(ENTITY_FUSIONS) == list(ENTITY_FUSION_NAMES)
    assert {f"memf_{f}" for f in ENTITY_FUSIONS if f != "transformer"} <= set(MODELS)


def test_extractor_registry_equals_its_catalog():
    from memf.features.base import EXTRACTORS, extractor_class
    from memf.features.spec import KINDS

    for kind, (modality, _) in KINDS.items():
        assert extractor_class(kind).modality == modality
    assert sorted(EXTRACTORS) == sorted(KINDS)


def test_reference_registry_equals_its_catalog():
    from memf.training.matrix import REFERENCE_MODELS
    from memf.training.references import REFERENCES

    assert list(REFERENCES) == list(REFERENCE_MODELS)


def test_world_registry_is_the_one_list_of_worlds():
    from memf.report.worlds import WORLDS as REPORTED
    from memf.simulate.worlds import WORLDS

    schema = yaml.safe_load((ROOT / "workflow/schemas/config.schema.yaml").read_text())
    assert schema["properties"]["simulator"]["properties"]["world"]["enum"] == list(WORLDS)
    assert REPORTED == tuple(WORLDS)
    assert {name: cls.name for name, cls in WORLDS.items()} == {name: name for name in WORLDS}


def test_a_registry_refuses_a_second_registration_and_names_what_it_knows():
    from memf.core.registry import Registry

    things: Registry[int] = Registry("thing")
    things.register("a")(1)
    with pytest.raises(ValueError, match="thing 'a' is already registered"):
        things.register("a")(2)
    with pytest.raises(ValueError, match=r"unknown thing 'b' \(known: a\)"):
        things.lookup("b")


# --- code versions follow the imports ------------------------------------------------------------------------------


@pytest.fixture()
def package_copy(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "src" / "memf", tmp_path / "memf", ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def test_a_module_a_stage_starts_to_import_changes_its_version(package_copy):
    root = package_copy
    before = {stage: modules_version(entries, root) for stage, entries in STAGE_ENTRIES.items()}
    assert before == {stage: code_version(stage) for stage in STAGE_ENTRIES}
    (root / "memf/padding/helper.py").write_text("FACTOR = 2\n")
    assert modules_version(STAGE_ENTRIES["pad"], root) == before["pad"], "a module nobody imports changes nothing"
    pad = root / "memf/padding/pad.py"
    helper = "import logging\n\nfrom memf.padding.helper import FACTOR  # noqa: F401\n"
    pad.write_text(pad.read_text().replace("import logging\n", helper, 1))
    after = {stage: modules_version(entries, root) for stage, entries in STAGE_ENTRIES.items()}
    assert after["pad"] != before["pad"]
    assert "memf.padding.helper" in import_closure(STAGE_ENTRIES["pad"], root)
    # Only the stages that import the padding code see it (fit reads padded files, it does not pad).
    changed = {stage for stage in STAGE_ENTRIES if after[stage] != before[stage]}
    assert "pad" in changed and not changed & {"fit", "fit_reference", "report", "simulate", "validate"}
    # An import inside a function (a lazy one) counts too, and the module's own edits then change that stage.
    tables = root / "memf/report/tables.py"
    tables.write_text(tables.read_text() + "\n\ndef _factor() -> int:\n    from memf.padding.helper import FACTOR\n\n"
                      "    return FACTOR\n")
    with_lazy = modules_version(STAGE_ENTRIES["report"], root)
    assert with_lazy != after["report"]
    (root / "memf/padding/helper.py").write_text("FACTOR = 3\n")
    assert modules_version(STAGE_ENTRIES["report"], root) != with_lazy


def test_placement_code_is_in_no_version_and_model_code_in_the_trainings_only(package_copy):
    root = package_copy
    before = {stage: modules_version(entries, root) for stage, entries in STAGE_ENTRIES.items()}
    with open(root / "memf/core/isolate.py", "a") as fh:
        fh.write("# workers decide how fast, not what\n")
    # Nor does the table of stages: a stage added to it reruns no other stage.
    version = root / "memf/core/version.py"
    version.write_text(version.read_text().replace('    "whatif": ("memf.whatif.core",),\n',
                                                   '    "whatif": ("memf.whatif.core",),\n    "new": ("memf.core.io",),\n'))
    assert "\"new\": (" in version.read_text()
    assert {stage: modules_version(entries, root) for stage, entries in STAGE_ENTRIES.items()} == before
    with open(root / "memf/models/blocks.py", "a") as fh:
        fh.write("# a change of the model code\n")
    changed = {stage for stage, entries in STAGE_ENTRIES.items() if modules_version(entries, root) != before[stage]}
    # not the reference models' stages; the report rebuilds MEMF to probe its entity vectors (memf.report.curves)
    assert changed == {"fit", "model", "export", "predict", "whatif", "report"}


def test_every_stage_entry_and_every_import_resolves():
    for stage, entries in STAGE_ENTRIES.items():
        modules = import_closure(entries)
        assert set(entries) <= set(modules), stage
        assert "memf.core.logs" not in modules and "memf.core.isolate" not in modules


# --- every output path spelled once ----------------------------------------------------------------------------------

#: A fragment of an output path -> the layout modules allowed to spell it (the feature store's shards and the data
#: stage's probe records are both named shard-{k}).
OWNERS = {
    "results/": "src/memf/data/layout.py",
    "shard-": ("src/memf/features/layout.py", "src/memf/data/layout.py"),
    "manifest.json": "src/memf/features/layout.py",
    "/padded": "src/memf/padding/layout.py",
    "padded/": "src/memf/padding/layout.py",
    "/runs/": "src/memf/training/matrix.py",
    "/tuning/": "src/memf/training/matrix.py",
    "/bundles": "src/memf/predict/plan.py",
    "bundles/": "src/memf/predict/plan.py",
    "/predict/": "src/memf/predict/plan.py",
}


def _python_strings(path: Path) -> list[str]:
    """String constants of a Python file's code, f-string parts included, docstrings left out."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    return [node.value for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings]


def _rule_strings(path: Path) -> list[str]:
    """String literals of a rule file (tokenised as Python), docstrings included: rule files keep none of paths."""
    with open(path, encoding="utf-8") as fh:
        return [tok.string for tok in tokenize.generate_tokens(fh.readline) if tok.type == tokenize.STRING]


def test_each_output_path_is_spelled_by_its_owner_only():
    """Paths are built by the layout functions; other code names them in messages only (text with spaces)."""
    spelled: dict[str, set[str]] = {fragment: set() for fragment in OWNERS}
    files = [(p, _python_strings(p)) for p in sorted((ROOT / "src").rglob("*.py"))]
    files += [(p, _rule_strings(p)) for p in sorted((ROOT / "workflow/rules").glob("*.smk"))]
    for path, strings in files:
        for text in strings:
            if re.search(r"\s", text):
                continue  # a message or a docstring, not a path
            for fragment in OWNERS:
                if fragment in text:
                    spelled[fragment].add(path.relative_to(ROOT).as_posix())
    owners = {f: {o} if isinstance(o, str) else set(o) for f, o in OWNERS.items()}
    assert {f: places - owners[f] for f, places in spelled.items()} == {f: set() for f in OWNERS}
