"""The conda environment file pins exactly what pyproject.toml pins."""

import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_conda_env_matches_pyproject_pins():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    env = yaml.safe_load((ROOT / "envs" / "memf.yaml").read_text())
    pip_pins = next(dep["pip"] for dep in env["dependencies"] if isinstance(dep, dict))
    assert sorted(pip_pins) == sorted(project)
    assert all("==" in pin for pin in project), "every dependency is pinned exactly"
    python = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python="))
    assert python == "python=3.11"
