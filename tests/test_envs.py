"""Software environments: the conda environment pins what pyproject.toml pins and its post-deploy script installs the
checkout; run.sh installs only when its setup stamp is stale."""

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
POST_DEPLOY = ROOT / "envs" / "memf.post-deploy.sh"


def test_conda_env_matches_pyproject_pins():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    env = yaml.safe_load((ROOT / "envs" / "memf.yaml").read_text())
    pip_pins = next(dep["pip"] for dep in env["dependencies"] if isinstance(dep, dict))
    assert sorted(pip_pins) == sorted(project)
    assert all("==" in pin for pin in project), "every dependency is pinned exactly"
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    assert "python=3.11" in conda and "pip" in conda
    # The post-deploy script builds memf without build isolation: the env carries a setuptools with bdist_wheel.
    assert "setuptools>=70.1" in conda


def test_post_deploy_script_is_where_snakemake_looks_for_it():
    # Snakemake 9 runs <env>.post-deploy.sh beside <env>.yaml, with the interpreter its shebang names.
    assert POST_DEPLOY.is_file() and os.access(POST_DEPLOY, os.X_OK)
    assert POST_DEPLOY.read_text().startswith("#!/usr/bin/env bash\n")


@pytest.fixture(scope="module")
def bare_venv(tmp_path_factory):
    """A plain venv standing in for a fresh conda env of memf.yaml: pip and setuptools>=70.1 (memf.yaml's conda
    dependencies), nothing of memf's."""
    venv = tmp_path_factory.mktemp("env") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    got = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "setuptools>=70.1"],
                         capture_output=True, text=True, timeout=300)
    if got.returncode != 0:
        pytest.skip(f"no package index reachable to put setuptools>=70.1 into a test venv: {got.stderr[-500:]}")
    return venv


def test_post_deploy_installs_the_checkout_editable_without_dependencies(bare_venv, tmp_path):
    checkout = tmp_path / "a checkout"  # a path with a space, away from this repository
    checkout.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, checkout / name)
    shutil.copytree(ROOT / "src", checkout / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    # As Snakemake runs it: the env activated (its bin first on PATH), from another working directory; no index,
    # so any attempt to install a dependency would fail.
    env = {"PATH": f"{bare_venv / 'bin'}:/usr/bin:/bin", "MEMF_SOURCE": str(checkout), "PIP_NO_INDEX": "1",
           "HOME": str(tmp_path)}
    run = subprocess.run(["bash", str(POST_DEPLOY)], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    python = str(bare_venv / "bin" / "python")
    where = subprocess.run([python, "-c", "import memf.features.spec as s; print(s.__file__)"], cwd="/",
                           env={"PATH": "/usr/bin:/bin"}, capture_output=True, text=True, check=True).stdout.strip()
    assert where == str(checkout / "src" / "memf" / "features" / "spec.py")
    show = subprocess.run([python, "-m", "pip", "show", "memf"], capture_output=True, text=True, check=True).stdout
    assert f"Editable project location: {checkout}" in show
    installed = subprocess.run([python, "-m", "pip", "list", "--format", "freeze"], capture_output=True, text=True,
                               check=True).stdout
    assert "torch" not in installed and "snakemake" not in installed


def test_post_deploy_without_memf_source_says_what_is_missing(tmp_path):
    run = subprocess.run(["bash", str(POST_DEPLOY)], env={"PATH": "/usr/bin:/bin"}, cwd=tmp_path,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 1
    assert "MEMF_SOURCE is '', expected the memf checkout" in run.stderr


FAKE_PYTHON = """#!/usr/bin/env bash
# Stands in for .venv/bin/python: records each call; pip calls fail when FAIL_PIP is set.
echo "$*" >> "$CALLS"
if [ "$1 $2" = "-m pip" ] && [ -n "${FAIL_PIP:-}" ]; then exit 1; fi
"""


def _run_sh(checkout: Path, calls: Path, **env: str) -> tuple[int, list[str]]:
    calls.write_text("")
    run = subprocess.run(["bash", str(checkout / "run.sh"), "test", "-q"], capture_output=True, text=True, timeout=60,
                         env={"PATH": "/usr/bin:/bin", "CALLS": str(calls), **env})
    return run.returncode, calls.read_text().splitlines()


def test_run_sh_installs_only_when_the_setup_stamp_is_stale(tmp_path):
    checkout = tmp_path / "one"
    (checkout / ".venv" / "bin").mkdir(parents=True)
    shutil.copy(ROOT / "run.sh", checkout)
    shutil.copy(ROOT / "pyproject.toml", checkout)
    fake = checkout / ".venv" / "bin" / "python"
    fake.write_text(FAKE_PYTHON)
    fake.chmod(0o755)
    calls = tmp_path / "calls.log"
    install = ["-m pip install --quiet --upgrade pip",
               "-m pip install --quiet torch==2.11.0 torchvision==0.26.0 torchaudio==2.11.0",
               "-m pip install --quiet -e .[test]"]
    # A failed install leaves no stamp: the next run installs again.
    assert _run_sh(checkout, calls, FAIL_PIP="1") == (1, install[:1])
    assert not (checkout / ".venv" / ".memf-setup").exists()
    assert _run_sh(checkout, calls) == (0, [*install, "-m pytest -q"])
    assert _run_sh(checkout, calls) == (0, ["-m pytest -q"])  # up to date: straight to the tests
    # A changed pin, or the same venv in another checkout (its editable install points elsewhere): install again.
    (checkout / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text().replace("pytest==", "pytest>="))
    assert _run_sh(checkout, calls) == (0, [*install, "-m pytest -q"])
    moved = tmp_path / "two"
    shutil.copytree(checkout, moved, symlinks=True)
    assert _run_sh(moved, calls) == (0, [*install, "-m pytest -q"])
    assert _run_sh(moved, calls) == (0, ["-m pytest -q"])
