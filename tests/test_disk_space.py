"""The free-disk-space pre-flight check: estimates from configs, refusal, warning, skip, and
that ``rrlab run`` / ``rrlab bench drain`` refuse before anything starts."""

from __future__ import annotations

import logging
import shutil
from collections import namedtuple
from pathlib import Path

import pytest

from rrlab.bench.drain import DrainOptions, backlog_needs, drain_bench
from rrlab.cli.main import main
from rrlab.config import RunConfig, load_config
from rrlab.exceptions import RunError
from rrlab.infra.embedded_postgres import EmbeddedPostgres
from rrlab.runner import disk_space
from rrlab.runner.disk_space import (
    CLICKHOUSE_BYTES,
    PAYLOAD_KB_MEASURED,
    POSTGRES_TABLE_BYTES,
    POSTGRES_WAL_BYTES,
    check_run_disk_space,
    checkpoint_wal_bytes,
    per_record_bytes,
    run_needs,
    run_records,
    wal_ceiling_bytes,
)

GB = 10**9
Usage = namedtuple("Usage", "total used free")
URL = "postgresql://alice:s3cret-pw@db.example:5432/postgres"


def config(**overrides: object) -> RunConfig:
    """10,000 records/s for 100 s of 1 KB payloads: a million records."""
    return load_config(
        overrides={"phases": [{"name": "load", "duration_s": 100, "target_throughput": 10_000}]}
        | overrides
    )


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("RRLAB_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def fake_disks(
    monkeypatch: pytest.MonkeyPatch, free: dict[str, int], devices: dict[str, int] | None = None
) -> None:
    """Free bytes (and a device number) of the filesystem holding each folder prefix."""

    def pick(table: dict[str, int], path: Path) -> int:
        return next(v for prefix, v in table.items() if str(path).startswith(prefix))

    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(0, 0, pick(free, path)))
    monkeypatch.setattr(disk_space, "device_of", lambda path: pick(devices or {"/": 1}, path))


def test_per_record_bytes_follow_the_measurements() -> None:
    for measured in (POSTGRES_TABLE_BYTES, POSTGRES_WAL_BYTES, CLICKHOUSE_BYTES):
        for kb, value in zip(PAYLOAD_KB_MEASURED, measured, strict=True):
            assert per_record_bytes(measured, kb) == pytest.approx(value)
    middle = per_record_bytes(CLICKHOUSE_BYTES, 4.5)
    assert CLICKHOUSE_BYTES[1] < middle < CLICKHOUSE_BYTES[2]
    # past the largest measured payload the last segment goes on
    assert per_record_bytes(CLICKHOUSE_BYTES, 64) > per_record_bytes(CLICKHOUSE_BYTES, 32) > 0


def test_embedded_postgres_and_chdb_are_both_counted(home: Path, tmp_path: Path) -> None:
    run = config(**{"output.results_dir": str(tmp_path / "out")})
    assert run_records(run) == 1_000_000
    postgres, clickhouse = run_needs(run)
    assert postgres.path == home / "postgres" == EmbeddedPostgres().data_dir
    table = 1_000_000 * POSTGRES_TABLE_BYTES[1]
    wal = min(1_000_000 * POSTGRES_WAL_BYTES[1], checkpoint_wal_bytes())  # 3.3 GB: capped
    assert postgres.bytes == round(table + wal)
    assert clickhouse.path == tmp_path / "out"
    assert clickhouse.bytes == 1_000_000 * CLICKHOUSE_BYTES[1]
    bigger = run_needs(config(**{"producer.payload_size_kb": 8}))
    assert [n.bytes for n in bigger] > [postgres.bytes, clickhouse.bytes]


def test_only_what_rrlab_stores_here_counts(home: Path) -> None:
    assert [n.what for n in run_needs(config(**{"clickhouse.sink": "mock"}))] == [
        "the embedded PostgreSQL's data"
    ]
    assert [n.what for n in run_needs(config(**{"postgres.database_url": URL}))] == [
        "the embedded ClickHouse"
    ]
    users_servers = {
        "postgres.database_url": URL,
        "clickhouse.sink": "clickhouse",
        "clickhouse.clickhouse_url": "https://default:pw@ch.example:8443",
    }
    assert run_needs(config(**users_servers)) == []
    assert run_needs(config(**{"postgres.database_url": URL, "clickhouse.sink": "mock"})) == []


def test_a_runs_wal_is_capped_at_what_checkpoints_keep(home: Path) -> None:
    long_run = config(phases=[{"name": "day", "duration_s": 86_400, "target_throughput": 10_000}])
    (postgres,) = run_needs(long_run.with_overrides({"clickhouse.sink": "mock"}))
    table = run_records(long_run) * POSTGRES_TABLE_BYTES[1]
    assert postgres.bytes == round(table + checkpoint_wal_bytes())
    assert checkpoint_wal_bytes() == 2 * 2**30  # max_wal_size
    short_run = config(phases=[{"name": "s", "duration_s": 10, "target_throughput": 1_000}])
    (postgres,) = run_needs(short_run.with_overrides({"clickhouse.sink": "mock"}))
    per_record = POSTGRES_TABLE_BYTES[1] + POSTGRES_WAL_BYTES[1]
    assert postgres.bytes == round(10_000 * per_record)


def test_a_drains_wal_is_all_kept_up_to_what_the_slot_may_hold() -> None:
    options = DrainOptions(inserts=2_000_000, update_ratio=0.25, payload_kb=1.0)
    postgres, _ = backlog_needs(options, Path("/tmp/x"))
    per_record = POSTGRES_TABLE_BYTES[1] + POSTGRES_WAL_BYTES[1]
    assert postgres.bytes == round(2_500_000 * per_record)  # 8.2 GB of WAL: all of it
    options = DrainOptions(inserts=4_000_000, update_ratio=0.25, payload_kb=1.0)
    postgres, _ = backlog_needs(options, Path("/tmp/x"))
    table = 5_000_000 * POSTGRES_TABLE_BYTES[1]
    assert postgres.bytes == round(table + wal_ceiling_bytes())
    assert wal_ceiling_bytes() == 10 * 2**30  # max_wal_size 2GB + max_slot_wal_keep_size 8GB


def test_stores_on_one_filesystem_add_up(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = config(**{"output.results_dir": str(tmp_path / "out")})
    postgres, clickhouse = run_needs(run)
    # room for either store with its margin, not for both
    free = round(max(postgres.bytes, clickhouse.bytes) * 1.2)
    assert free < (postgres.bytes + clickhouse.bytes) * 1.1
    fake_disks(monkeypatch, {"/": free})
    with pytest.raises(RunError, match="are on one filesystem"):
        check_run_disk_space(run)
    fake_disks(monkeypatch, {"/": free}, devices={str(home): 1, str(tmp_path / "out"): 2})
    check_run_disk_space(run)


def test_refusal_names_paths_free_space_estimate_drivers_and_fixes(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    run = config(**{"output.results_dir": str(out), "producer.payload_size_kb": 8})
    postgres, clickhouse = run_needs(run)
    (home / "postgres").mkdir(parents=True)  # each filesystem is asked at its own folder
    out.mkdir()
    fake_disks(monkeypatch, {str(home): 3 * GB, str(out): 100 * GB}, {str(home): 1, "/": 2})
    with pytest.raises(RunError) as refused:
        check_run_disk_space(run)
    message = str(refused.value)
    assert f"{home / 'postgres'} (the embedded PostgreSQL's data" in message
    assert str(out) not in message  # the other filesystem has room
    assert "3.0 GB free" in message
    assert f"needs about {disk_space.format_bytes(postgres.bytes)}" in message
    assert "1,000,000 records" in message and "payload_size_kb = 8" in message
    for fix in ("Free space", "shorten or slow the phases", "RRLAB_HOME", "--output"):
        assert fix in message
    assert "--set output.check_disk_space=false" in message


def test_refusal_never_shows_a_url(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = config(**{"postgres.database_url": URL})
    fake_disks(monkeypatch, {"/": 1000})
    with pytest.raises(RunError) as refused:
        check_run_disk_space(run)
    assert "s3cret" not in str(refused.value) and "db.example" not in str(refused.value)


def test_close_to_the_free_space_warns(
    home: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    run = config(**{"clickhouse.sink": "mock"})
    (postgres,) = run_needs(run)
    caplog.set_level(logging.WARNING, logger="rrlab.runner.disk_space")
    fake_disks(monkeypatch, {"/": postgres.bytes * 3})
    check_run_disk_space(run)
    assert caplog.records == []
    fake_disks(monkeypatch, {"/": round(postgres.bytes * 1.5)})
    check_run_disk_space(run)
    (warning,) = caplog.records
    assert "disk space is tight" in warning.getMessage()
    assert str(home / "postgres") in warning.getMessage()


def test_the_setting_skips_the_check(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_disks(monkeypatch, {"/": 1000})
    with pytest.raises(RunError):
        check_run_disk_space(config())
    check_run_disk_space(config(**{"output.check_disk_space": "false"}))  # as --set gives it


class Started(Exception):
    """Something the check should have come before was reached."""


def refuse_to_start(monkeypatch: pytest.MonkeyPatch) -> None:
    def started(*args: object, **kwargs: object) -> None:
        raise Started

    monkeypatch.setattr(EmbeddedPostgres, "start", started)
    monkeypatch.setattr("rrlab.api.prepared_infrastructure", started)


def test_rrlab_run_refuses_before_anything_starts(
    home: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    refuse_to_start(monkeypatch)
    fake_disks(monkeypatch, {"/": 1_000_000})
    out = tmp_path / "out"
    argv = ["run", "-c", "params/smoke.yaml", "--output", str(out), "--no-progress"]
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert "Not enough free disk space" in error and "1.0 MB free" in error
    assert "11,500 records" in error  # smoke: 500/s x 3 s + 2,000/s x 5 s
    assert not out.exists() and not home.exists()
    # skipped, the run goes on to PostgreSQL's set-up
    with pytest.raises(Started):
        main([*argv, "--set", "output.check_disk_space=false"])


def test_bench_drain_refuses_before_anything_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    refuse_to_start(monkeypatch)
    fake_disks(monkeypatch, {"/": 1_000_000})
    options = DrainOptions(inserts=1_000, rounds=2, results_dir=str(tmp_path))
    with pytest.raises(RunError, match=r"backlog of 1,250 changes .* 2 time\(s\)"):
        drain_bench(options)
    skipped = DrainOptions(inserts=1_000, overrides={"output.check_disk_space": "false"})
    with pytest.raises(Started):
        drain_bench(skipped)
