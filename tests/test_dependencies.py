"""pyproject.toml and environment.yml must declare the same dependencies."""

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
# conda-forge spells a few packages differently from PyPI.
CONDA_TO_PYPI = {"line_profiler": "line-profiler"}


def _name_and_spec(requirement: str) -> tuple[str, str]:
    match = re.match(r"^\s*([A-Za-z0-9_.-]+)(\[[^\]]*\])?\s*(.*)$", requirement)
    assert match, requirement
    name = match.group(1).lower().replace("_", "-")
    return name, match.group(3).replace(" ", "")


def _pyproject() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = project["dependencies"] + project["optional-dependencies"]["dev"]
    declared = dict(_name_and_spec(r) for r in requirements)
    # psycopg[binary] is psycopg plus psycopg-binary on conda-forge.
    if "psycopg" in declared:
        declared["psycopg-binary"] = declared["psycopg"]
    return declared


def _environment() -> dict[str, str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    declared: dict[str, str] = {}
    for item in env["dependencies"]:
        entries = item["pip"] if isinstance(item, dict) else [item]
        for entry in entries:
            name, spec = _name_and_spec(entry)
            name = CONDA_TO_PYPI.get(name.replace("-", "_"), name)
            if name not in ("python", "pip"):
                declared[name] = spec
    return declared


def test_environment_yml_matches_pyproject() -> None:
    assert _environment() == _pyproject()


def test_name_parsing_sees_extras_and_specs() -> None:
    assert _name_and_spec("psycopg[binary]>=3.2") == ("psycopg", ">=3.2")
    assert _name_and_spec("line_profiler>=4.1") == ("line-profiler", ">=4.1")
