"""Code versions of the pipeline's stages, derived from the modules each stage imports.

Snakemake reruns a rule when its ``params:`` change but not when a module its script imports changes, so every rule
carries :func:`code_version` of its stage among its params. A stage is named by its entry modules
(:data:`STAGE_ENTRIES`); its version hashes those modules and every ``memf`` module they import, at any depth: the
imports are read from the source (module-level imports and the imports inside functions, which is where the lazy
ones hide), so a module a stage starts to import is covered the moment the import is written, and no list of files
is kept by hand. A package imported only as the parent of a module contributes its ``__init__`` and what that
imports at module level (its lazy attribute hooks run only when called, and whoever calls them imports them by name).

Speed and placement code (:data:`PLACEMENT`: the decoding workers, the GPU claim, the job log, the signal handling)
is part of no version: changing it never reruns a job. Nor is this module: which stages exist and how their versions
are computed decide which jobs are stale, never what a job writes, so adding a stage reruns no other stage. A
docstring edit is treated like any other edit (tables never mix code versions). Standard library only: the workflow
computes these when it loads.
"""

from __future__ import annotations

import ast
import functools
import hashlib
from collections.abc import Iterable
from pathlib import Path

#: The folder holding the ``memf`` package.
SOURCE_ROOT = Path(__file__).resolve().parents[2]
#: Modules that decide where and how fast a job runs, never what it writes.
PLACEMENT: frozenset[str] = frozenset({"memf.core.gpu", "memf.core.isolate", "memf.core.logs", "memf.core.signals",
                                       "memf.core.version"})
#: Stage -> the modules whose code (with all they import) decides its outputs. ``model`` is what turns a padded
#: feature set into a trained member's predictions: a model bundle records its version and a checkout whose version
#: differs refuses it (memf.predict.bundle).
STAGE_ENTRIES: dict[str, tuple[str, ...]] = {
    "simulate": ("memf.simulate.writer",),
    "validate": ("memf.data.validate",),
    "tiny_model": ("memf.features.tiny",),
    "pad": ("memf.padding.pad",),
    "fit": ("memf.training.fit", "memf.training.neural"),
    "fit_reference": ("memf.training.fit", "memf.training.reference_fit"),
    "reference_model": ("memf.training.references", "memf.training.prepare", "memf.padding.padded"),
    "ensemble": ("memf.training.ensemble",),
    "report": ("memf.report.tables", "memf.report.figures", "memf.report.curves"),
    "model": ("memf.models", "memf.training.prepare", "memf.padding.padded"),
    "export": ("memf.predict.export",),
    "predict": ("memf.predict.predictor",),
    "whatif": ("memf.whatif.core",),
}


def module_file(module: str, root: Path = SOURCE_ROOT) -> Path | None:
    """The source file of ``module`` under ``root`` (a package's ``__init__.py``), or None if there is none."""
    base = root.joinpath(*module.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _imported(module: str, tree: ast.Module, root: Path, module_level_only: bool) -> set[str]:
    """The ``memf`` modules ``module``'s source names in its imports (``from X import name`` names module ``X.name``
    when that is a module)."""
    is_package = module_file(module, root) == root.joinpath(*module.split("."), "__init__.py")
    nodes = tree.body if module_level_only else ast.walk(tree)
    out: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            out |= {alias.name for alias in node.names if alias.name.split(".")[0] == "memf"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the module's package, or from the package itself for an __init__
                parts = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
                base = ".".join([*parts, *([node.module] if node.module else [])])
            else:
                base = node.module or ""
            if base.split(".")[0] != "memf":
                continue
            out.add(base)
            out |= {f"{base}.{alias.name}" for alias in node.names if module_file(f"{base}.{alias.name}", root)}
    return out


def import_closure(entries: Iterable[str], root: Path = SOURCE_ROOT) -> list[str]:
    """Every ``memf`` module ``entries`` import, directly or not, the entries and the packages above them included,
    :data:`PLACEMENT` excluded; sorted.

    Raises:
        ValueError: an entry or an imported ``memf`` module has no source file under ``root``.
    """
    named: set[str] = set()  # imported by name: every import they hold may run
    parents: set[str] = set()  # imported only as the package of a module: their module-level imports run
    todo = [(m, True) for m in entries]
    while todo:
        module, by_name = todo.pop()
        if module in PLACEMENT or module in named or (module in parents and not by_name):
            continue
        path = module_file(module, root)
        if path is None:
            raise ValueError(f"code version: no source for module '{module}' under {root}")
        (named if by_name else parents).add(module)
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        todo += [(m, True) for m in _imported(module, tree, root, module_level_only=not by_name)]
        parts = module.split(".")
        todo += [(".".join(parts[:i]), False) for i in range(1, len(parts))]
    return sorted(named | parents)


def modules_version(entries: Iterable[str], root: Path = SOURCE_ROOT) -> str:
    """sha256 (12 hex digits) over the paths and contents of :func:`import_closure` of ``entries``."""
    digest = hashlib.sha256()
    for module in import_closure(entries, root):
        path = module_file(module, root)
        assert path is not None  # import_closure checked it
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


@functools.cache
def code_version(stage: str) -> str:
    """The code version of ``stage`` (a key of :data:`STAGE_ENTRIES`)."""
    if stage not in STAGE_ENTRIES:
        raise ValueError(f"unknown stage '{stage}', expected one of {', '.join(STAGE_ENTRIES)}")
    return modules_version(STAGE_ENTRIES[stage])
