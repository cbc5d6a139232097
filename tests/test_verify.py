"""verify on a real profiling database and real chdb: agreement, each kind of difference, run
folders (embedded and a user's servers) and the CLI's exit codes."""

from __future__ import annotations

import itertools
import json
import random
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from clickhouse_connect.driver.client import Client
from psycopg.rows import dict_row

from rrlab.cli.main import main as cli
from rrlab.config import RunConfig
from rrlab.exceptions import ConfigError, ResultsError
from rrlab.infra.ch_migrations import run_migrations
from rrlab.infra.clickhouse import READY_FILE, EmbeddedClickHouse, clickhouse_client
from rrlab.infra.postgres import connect
from rrlab.producer.generator import RunGenerator
from rrlab.producer.writer import RunPool, RunWriter, WriteMix
from rrlab.results import run_metadata, write_config, write_metrics
from rrlab.service.events import ChangeEvent, EventKind
from rrlab.service.flusher import Flusher
from rrlab.service.retry import RetryPolicy
from rrlab.service.sinks import ClickHouseSink
from rrlab.verify import VERIFY_FILE, verify, verify_run
from tests.fixtures.postgres import ProfilingDatabase

_versions = itertools.count(1)


# --- helpers ---------------------------------------------------------------------------


def produce(db: ProfilingDatabase, inserts: int, updates: int = 0, seed: int = 7) -> None:
    """Write TaskRun rows with rrlab's own producer: ``inserts`` runs, then ``updates``."""
    rng = random.Random(seed)
    generator, pool = RunGenerator(rng, db.fixtures, error_rate=0.3), RunPool(rng)
    for records, mix in ((inserts, WriteMix(1.0, 0.0)), (updates, WriteMix(0.0, 0.0))):
        if not records:
            continue
        writer = RunWriter(db.url, generator, pool, mix)
        try:
            assert writer.write_batch(records).error is None
        finally:
            writer.close()


def taskruns(db: ProfilingDatabase, where: str = "TRUE", params: tuple = ()) -> list[dict]:
    """TaskRun rows typed as the pgoutput decoder types them (timestamps aware UTC)."""
    with connect(db.url, row_factory=dict_row) as conn:
        rows = conn.execute(f'SELECT * FROM "TaskRun" WHERE {where}', params).fetchall()
    for row in rows:
        for column, value in row.items():
            if isinstance(value, datetime):
                row[column] = value.replace(tzinfo=UTC)
    return rows


def replicate(
    client: Client, runs: list[dict], kind: EventKind = "insert", payloads: bool = True
) -> None:
    """Write ``runs`` to ClickHouse as the consumer would: a real flusher and sink."""
    events = [ChangeEvent(kind, run, next(_versions)) for run in runs]
    flusher = Flusher(
        ClickHouseSink(client),
        retry=RetryPolicy(max_attempts=1, base_delay_ms=1, max_delay_ms=1),
        payload_inserts=payloads,
    )
    flusher(1, events)


def psql(db: ProfilingDatabase, statement: str, params: tuple = ()) -> None:
    with connect(db.url) as conn:
        conn.execute(statement, params)


def new_clickhouse_database(url: str) -> tuple[Client, str]:
    name = f"verify_{uuid.uuid4().hex[:10]}"
    client = clickhouse_client(url)
    run_migrations(client, name)
    client.database = name
    return client, name


@pytest.fixture
def ch_db(chdb_endpoint: EmbeddedClickHouse) -> Iterator[tuple[Client, str]]:
    """A migrated ClickHouse database of this test's own (other tests share trigger_dev)."""
    client, name = new_clickhouse_database(chdb_endpoint.url)
    yield client, name
    client.command(f"DROP DATABASE IF EXISTS {name}")
    client.close()


@pytest.fixture
def synced(profiling_db: ProfilingDatabase, ch_db: tuple[Client, str]) -> list[dict]:
    """30 runs (some updated, some deleted) in PostgreSQL and, identically, in ClickHouse."""
    client, _ = ch_db
    produce(profiling_db, inserts=30, updates=12)
    runs = taskruns(profiling_db)
    replicate(client, runs)
    deleted = sorted(runs, key=lambda run: run["id"])[:2]
    psql(profiling_db, 'DELETE FROM "TaskRun" WHERE id = ANY(%s)', ([r["id"] for r in deleted],))
    replicate(client, deleted, kind="delete")
    return taskruns(profiling_db)


# --- verify() on two live databases ---------------------------------------------------


def test_databases_that_agree_verify_ok(
    profiling_db: ProfilingDatabase, ch_db: tuple[Client, str], synced: list[dict]
) -> None:
    client, name = ch_db
    statuses = {run["status"] for run in synced}
    assert len(synced) == 28 and len(statuses) > 1  # the updates moved some runs on

    report = verify(profiling_db.url.url, client, name)

    assert report.ok, report.summary()
    assert (report.postgres_rows, report.clickhouse_rows) == (28, 28)
    assert (report.missing, report.extra, report.stale, report.duplicates) == (0, 0, 0, 0)
    # payloads of the two deleted runs stay: the payload table is append-only
    assert (report.payload_rows, report.payload_missing) == (30, 0)
    assert "verify OK" in report.summary()


def test_missing_extra_stale_and_deleted_runs_are_counted_and_named(
    profiling_db: ProfilingDatabase, ch_db: tuple[Client, str], synced: list[dict]
) -> None:
    client, name = ch_db
    by_id = sorted(synced, key=lambda run: run["id"])
    # missing: a run PostgreSQL has and ClickHouse never got
    known = {run["id"] for run in synced}
    produce(profiling_db, inserts=1, seed=99)
    (missing,) = [run for run in taskruns(profiling_db) if run["id"] not in known]
    # extra: a run only ClickHouse has
    replicate(client, [{**by_id[0], "id": "zz_only_in_clickhouse"}])
    # deleted in PostgreSQL, still live in ClickHouse
    deleted = by_id[1]["id"]
    psql(profiling_db, 'DELETE FROM "TaskRun" WHERE id = %s', (deleted,))
    # stale: a new status; and an updatedAt one millisecond later, status unchanged
    new_status = by_id[2]["id"]
    old_status = by_id[2]["status"]
    other = "CANCELED" if old_status != "CANCELED" else "EXPIRED"
    psql(profiling_db, 'UPDATE "TaskRun" SET status = %s WHERE id = %s', (other, new_status))
    later = by_id[3]["id"]
    psql(
        profiling_db,
        'UPDATE "TaskRun" SET "updatedAt" = "updatedAt" + interval \'1 millisecond\' WHERE id = %s',
        (later,),
    )

    report = verify(profiling_db.url.url, client, name, sample=10)

    assert not report.ok
    assert (report.missing, report.missing_ids) == (1, [missing["id"]])
    assert (report.extra, report.extra_ids) == (2, sorted([deleted, "zz_only_in_clickhouse"]))
    assert report.stale == 2
    stale = {run.run_id: run for run in report.stale_runs}
    assert set(stale) == {new_status, later}
    assert (stale[new_status].postgres_status, stale[new_status].clickhouse_status) == (
        other,
        old_status,
    )
    assert stale[later].postgres_updated_at - stale[later].clickhouse_updated_at == 1
    assert stale[later].postgres_status == stale[later].clickhouse_status
    assert (report.payload_missing, report.payload_missing_ids) == (1, [missing["id"]])
    assert (report.postgres_rows, report.clickhouse_rows) == (28, 29)
    summary = report.summary()
    for run_id in (missing["id"], deleted, "zz_only_in_clickhouse", new_status, later):
        assert run_id in summary
    assert json.loads(json.dumps(report.to_dict()))["ok"] is False


def test_sample_limits_the_ids_listed_not_the_counts(
    profiling_db: ProfilingDatabase, ch_db: tuple[Client, str]
) -> None:
    client, name = ch_db
    produce(profiling_db, inserts=12)

    report = verify(profiling_db.url.url, client, name, sample=3)

    assert (report.missing, report.payload_missing) == (12, 12)
    expected = sorted(run["id"] for run in taskruns(profiling_db))[:3]
    assert report.missing_ids == expected and report.payload_missing_ids == expected
    assert "…" in report.summary()
    assert "no run in common" not in report.summary()  # ClickHouse is empty, not replaced


def test_no_run_in_common_hints_at_a_reused_profiling_database(
    profiling_db: ProfilingDatabase, ch_db: tuple[Client, str]
) -> None:
    client, name = ch_db
    produce(profiling_db, inserts=4)
    replicate(client, [{**run, "id": f"earlier_{run['id']}"} for run in taskruns(profiling_db)])

    report = verify(profiling_db.url.url, client, name)

    assert (report.missing, report.extra) == (4, 4)
    assert "no run in common" in report.summary()


def test_a_run_without_its_payload_row_is_reported_unless_payloads_are_off(
    profiling_db: ProfilingDatabase, ch_db: tuple[Client, str]
) -> None:
    client, name = ch_db
    produce(profiling_db, inserts=5)
    runs = sorted(taskruns(profiling_db), key=lambda run: run["id"])
    replicate(client, runs[:4])
    replicate(client, runs[4:], payloads=False)

    report = verify(profiling_db.url.url, client, name)
    assert (report.missing, report.stale, report.payload_missing) == (0, 0, 1)
    assert report.payload_missing_ids == [runs[4]["id"]] and not report.ok

    unchecked = verify(profiling_db.url.url, client, name, check_payloads=False)
    assert unchecked.ok and unchecked.payload_missing is None
    assert "not checked" in unchecked.summary()


def test_created_since_leaves_out_earlier_runs_of_a_shared_clickhouse(
    profiling_db: ProfilingDatabase, ch_db: tuple[Client, str], synced: list[dict]
) -> None:
    client, name = ch_db
    earlier = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    leftover = {**synced[0], "id": "run_of_an_earlier_run", "createdAt": earlier}
    replicate(client, [leftover])
    unscoped = verify(profiling_db.url.url, client, name)
    assert unscoped.extra_ids == ["run_of_an_earlier_run"]
    assert "no run in common" not in unscoped.summary()

    since = min(run["createdAt"] for run in synced) - timedelta(seconds=1)
    report = verify(profiling_db.url.url, client, name, created_since=since)
    assert report.ok, report.summary()
    assert report.postgres_rows == report.clickhouse_rows == 28


def test_a_bad_clickhouse_database_is_a_clear_error(
    profiling_db: ProfilingDatabase, ch_db: tuple[Client, str]
) -> None:
    client, _ = ch_db
    with pytest.raises(Exception, match="no_such_db.task_runs_v2") as info:
        verify(profiling_db.url.url, client, "no_such_db")
    assert "migrations" in str(info.value)
    with pytest.raises(ConfigError, match="invalid"):
        verify(profiling_db.url.url, client, "x; DROP TABLE y")


# --- run folders and the CLI -----------------------------------------------------------


def write_run_folder(run_dir: Path, config: RunConfig) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    write_config(run_dir, config)
    metadata = run_metadata(config, run_dir)
    # the run began before its runs were created (as in a real run)
    metadata["started_at"] = (datetime.now(UTC) - timedelta(minutes=5)).isoformat()
    write_metrics(run_dir, metadata, [])


def test_an_embedded_run_folder_verifies_with_its_own_clickhouse_data(
    profiling_db: ProfilingDatabase, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "run"
    write_run_folder(run_dir, profiling_db.config)
    produce(profiling_db, inserts=20, updates=8)
    with EmbeddedClickHouse(run_dir / "clickhouse") as endpoint:
        client = clickhouse_client(endpoint.url)
        run_migrations(client, profiling_db.config.clickhouse.database)
        client.database = profiling_db.config.clickhouse.database
        replicate(client, taskruns(profiling_db))
        client.close()
        # the run's endpoint still running (verify at the end of a run): it is reused
        report = verify_run(run_dir)
        assert report.ok, report.summary()
        assert report.postgres_rows == 20
        assert endpoint.is_running()

    # stopped after the run: rrlab verify starts one on the data dir, then stops it
    assert cli(["verify", str(run_dir)]) == 0
    assert "verify OK" in capsys.readouterr().out
    assert not (run_dir / "clickhouse" / READY_FILE).exists()
    written = json.loads((run_dir / VERIFY_FILE).read_text())
    assert written["ok"] is True and written["postgres_rows"] == 20

    changed = taskruns(profiling_db)[0]["id"]
    psql(profiling_db, "UPDATE \"TaskRun\" SET status = 'CRASHED' WHERE id = %s", (changed,))
    assert cli(["verify", str(run_dir), "--json"]) == 1
    printed = json.loads(capsys.readouterr().out)
    assert printed["stale"] == 1 and printed["stale_runs"][0]["run_id"] == changed
    assert json.loads((run_dir / VERIFY_FILE).read_text())["ok"] is False
    assert not (run_dir / "clickhouse" / READY_FILE).exists()


def test_a_run_folder_on_the_users_servers_needs_their_urls(
    profiling_db: ProfilingDatabase,
    ch_db: tuple[Client, str],
    chdb_endpoint: EmbeddedClickHouse,
    pg_url: Any,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client, name = ch_db
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("CLICKHOUSE_URL", raising=False)
    # a password in the ClickHouse URL (the endpoint ignores it) must never be shown
    clickhouse_url = f"{chdb_endpoint.url}?username=default&password=s3cret-pw"
    config = profiling_db.config.with_overrides(
        {
            "postgres.database_url": pg_url.url,
            "clickhouse.sink": "clickhouse",
            "clickhouse.clickhouse_url": clickhouse_url,
            "clickhouse.database": name,
        }
    )
    run_dir = tmp_path / "user-run"
    write_run_folder(run_dir, config)
    assert "s3cret-pw" not in (run_dir / "config.json").read_text()
    produce(profiling_db, inserts=10)
    runs = taskruns(profiling_db)
    replicate(client, runs)
    # the user's ClickHouse keeps earlier runs' rows: created before this run started
    earlier = datetime(2024, 5, 6, tzinfo=UTC)
    replicate(client, [{**runs[0], "id": "left_by_an_earlier_run", "createdAt": earlier}])

    with pytest.raises(ConfigError, match="DATABASE_URL") as no_postgres:
        verify_run(run_dir, environ={})
    assert "--database-url" in str(no_postgres.value)
    with pytest.raises(ConfigError, match="CLICKHOUSE_URL"):
        verify_run(run_dir, environ={"DATABASE_URL": pg_url.url})

    assert cli(["verify", str(run_dir), "--database-url", pg_url.url]) == 2
    error = capsys.readouterr().err
    assert "CLICKHOUSE_URL" in error and "--clickhouse-url" in error

    monkeypatch.setenv("CLICKHOUSE_URL", clickhouse_url)
    args = ["verify", str(run_dir), "--database-url", pg_url.url]
    assert cli(args) == 0
    out = capsys.readouterr().out
    assert "verify OK" in out and "s3cret-pw" not in out
    written = (run_dir / VERIFY_FILE).read_text()
    assert "s3cret-pw" not in written and json.loads(written)["postgres_rows"] == 10


def test_a_mock_run_or_a_folder_without_config_cannot_be_verified(
    profiling_db: ProfilingDatabase, tmp_path: Path
) -> None:
    with pytest.raises(ResultsError, match="config.json"):
        verify_run(tmp_path)
    mock = tmp_path / "mock-run"
    write_run_folder(mock, profiling_db.config.with_overrides({"clickhouse.sink": "mock"}))
    with pytest.raises(ResultsError, match="mock sink"):
        verify_run(mock)
    gone = tmp_path / "no-clickhouse-data"
    write_run_folder(gone, profiling_db.config)
    with pytest.raises(ResultsError, match="clickhouse"):
        verify_run(gone)
