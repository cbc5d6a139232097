"""The run folder: layout, config.json with secrets masked, atomic JSON, unwritable folders."""

import json
import os
import stat
from datetime import UTC, datetime

import pytest

from rrlab.config import load_config
from rrlab.exceptions import ResultsError
from rrlab.results import create_run_dir, write_config, write_json, write_metrics

SECRET_CONFIG = {
    "postgres.database_url": "postgresql://alice:s3cr3t-pw@db.example:5432/postgres",
    "clickhouse.clickhouse_url": "https://ch.example:8443?username=bob&password=ch-pw-42",
}


def test_run_folder_layout_and_name(tmp_path) -> None:
    config = load_config(None, {"output.results_dir": str(tmp_path), "output.run_name": "x"})
    now = datetime(2026, 11, 26, 9, 5, 7, tzinfo=UTC)
    run_dir = create_run_dir(config, now)
    assert run_dir == (tmp_path / "2026-11-26" / "090507-x").resolve()
    assert {p.name for p in run_dir.iterdir()} == {"timeseries", "logs", "profiles"}
    assert create_run_dir(config, now).name == "090507-x-2"  # never reuses a folder


def test_config_json_masks_every_secret(tmp_path) -> None:
    config = load_config(None, {**SECRET_CONFIG, "output.results_dir": str(tmp_path)})
    run_dir = create_run_dir(config)
    write_config(run_dir, config)
    text = (run_dir / "config.json").read_text()
    assert "s3cr3t-pw" not in text and "ch-pw-42" not in text
    saved = json.loads(text)
    assert saved["postgres"]["database_url"] == "postgresql://alice:***@db.example:5432/postgres"
    assert saved["clickhouse"]["clickhouse_url"].endswith("password=***")


def test_metrics_json_masks_urls_in_messages(tmp_path) -> None:
    run = {"status": "incomplete", "error": "cannot reach postgresql://u:hunter2@h:5432/d"}
    write_metrics(tmp_path, run, [])
    text = (tmp_path / "metrics.json").read_text()
    assert "hunter2" not in text and "u:***@h" in text


def test_written_files_are_not_world_writable(tmp_path) -> None:
    write_json(tmp_path / "a.json", {"a": 1})
    mode = os.stat(tmp_path / "a.json").st_mode
    assert not mode & stat.S_IWOTH and not mode & stat.S_IWGRP


def test_an_unwritable_results_folder_is_a_clear_error(tmp_path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the results folder should be")
    config = load_config(None, {"output.results_dir": str(blocker / "results")})
    with pytest.raises(ResultsError, match="Cannot write the results folder"):
        create_run_dir(config)
