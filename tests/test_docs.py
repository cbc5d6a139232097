"""The documents stay true to the code: the time-series columns in docs/results.md and the
configuration example (with its defaults) in the README."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from rrlab.config import RunConfig, build_config
from rrlab.runner.metrics import SERIES

ROOT = Path(__file__).resolve().parent.parent


def test_results_doc_lists_every_time_series_column() -> None:
    text = (ROOT / "docs" / "results.md").read_text(encoding="utf-8")
    section = text.split("## Time series", 1)[1]
    documented = {
        name: [column.strip() for column in columns.split(",")]
        for name, columns in re.findall(r"^- \*\*(\w+)\*\*: `([^`]+)`", section, re.M)
    }
    assert documented == {name: list(columns) for name, columns in SERIES.items()}


def test_readme_configuration_example_loads_and_shows_the_defaults() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Configuration", 1)[1]
    example = yaml.safe_load(re.search(r"```yaml\n(.*?)```", section, re.S).group(1))
    shown = build_config(example).to_dict()  # unknown keys or bad values raise
    defaults = RunConfig().to_dict()
    for name, values in example.items():
        if name == "phases":
            continue  # an example, not the defaults
        for key in values:
            assert shown[name][key] == defaults[name][key], f"README shows {name}.{key}"
