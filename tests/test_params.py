"""Every shipped params file loads and validates."""

from pathlib import Path

import pytest

from rrlab.config import load_config

PARAMS = sorted((Path(__file__).resolve().parent.parent / "params").glob("*.yaml"))


@pytest.mark.parametrize("path", PARAMS, ids=lambda p: p.stem)
def test_params_file_is_valid(path: Path) -> None:
    config = load_config(path)
    assert config.phases and config.output.run_name == path.stem


def test_the_seed_scenarios_are_shipped() -> None:
    names = {p.stem for p in PARAMS}
    assert {"default", "stress", "cpu-only", "flush-batch-50", "flush-batch-100", "smoke"} <= names


def test_a_bundled_params_file_is_found_by_name() -> None:
    assert load_config("smoke").output.run_name == "smoke"
