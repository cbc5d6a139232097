"""The consumer process end to end: real PostgreSQL, real chdb, real processes.

Changes written to TaskRun over many transactions must end up in ClickHouse as PostgreSQL
has them (FINAL: count, and per run id status, updated_at and _version), also when the
consumer is killed with SIGKILL mid-stream and restarted.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC
from pathlib import Path

import psycopg
import pytest

from rrlab.infra.ch_migrations import run_migrations
from rrlab.infra.postgres import connect
from rrlab.producer.generator import RunGenerator
from rrlab.producer.writer import RunPool, RunWriter, WriteMix
from rrlab.service.events import lsn_to_int
from rrlab.service.transform import epoch_ms

CATCH_UP_TIMEOUT_S = 90


@pytest.fixture
def ch_database(chdb_endpoint, ch_client):
    name = f"e2e_{uuid.uuid4().hex[:10]}"
    run_migrations(ch_client, name)
    yield name
    ch_client.command(f"DROP DATABASE IF EXISTS {name}")


def _consumer_config(tmp_path: Path, profiling_db, ch_database: str, **consumer) -> Path:
    config = {
        "consumer": {
            "slot_name": profiling_db.slot_name,
            "publication_name": profiling_db.publication_name,
            "flush_batch_size": 50,
            "flush_interval_ms": 100,
            "max_flush_concurrency": 4,
            "status_interval_s": 0.2,
            **consumer,
        },
        "clickhouse": {"sink": "chdb", "database": ch_database},
    }
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    return path


def _start_consumer(config_path: Path, profiling_db, chdb_endpoint, log: Path):
    env = {
        **os.environ,
        "RRLAB_DATABASE_URL": profiling_db.url.url,
        "RRLAB_CLICKHOUSE_URL": chdb_endpoint.url,
    }
    with open(log, "ab") as handle:
        return subprocess.Popen(
            [sys.executable, "-m", "rrlab.service.consumer", "--config", str(config_path)],
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
        )


def _write(profiling_db, batches: int, seed: int, delete_ratio: float = 0.1) -> None:
    """Many small transactions of inserts, status-changing updates and deletes."""
    rng = random.Random(seed)
    generator = RunGenerator(rng, profiling_db.fixtures, payload_size_kb=0.5, error_rate=0.2)
    writer = RunWriter(profiling_db.url, generator, RunPool(rng), WriteMix(0.6, delete_ratio))
    writer.connect()
    try:
        for _ in range(batches):
            outcome = writer.write_batch(20)
            assert outcome.error is None, outcome.error
    finally:
        writer.close()


def _wait_caught_up(profiling_db, consumer: subprocess.Popen, log: Path) -> None:
    with connect(profiling_db.url) as conn:
        target = lsn_to_int(conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()[0])
        deadline = time.monotonic() + CATCH_UP_TIMEOUT_S
        while time.monotonic() < deadline:
            assert consumer.poll() is None, log.read_text()
            flushed = conn.execute(
                "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = %s",
                (profiling_db.slot_name,),
            ).fetchone()[0]
            if flushed and lsn_to_int(flushed) >= target:
                return
            time.sleep(0.2)
    raise AssertionError(f"consumer did not catch up; log:\n{log.read_text()}")


def _assert_clickhouse_matches_postgres(profiling_db, ch_client, database: str) -> int:
    with connect(profiling_db.url) as conn:
        pg_rows = {
            run_id: (status, epoch_ms(updated_at.replace(tzinfo=UTC)))
            for run_id, status, updated_at in conn.execute(
                'SELECT id, status::text, "updatedAt" FROM "TaskRun"'
            )
        }
        slot_start = lsn_to_int(
            conn.execute(
                "SELECT restart_lsn::text FROM pg_replication_slots WHERE slot_name = %s",
                (profiling_db.slot_name,),
            ).fetchone()[0]
        )
    result = ch_client.query(
        f"SELECT run_id, status, toUnixTimestamp64Milli(updated_at), _version "
        f"FROM {database}.task_runs_v2 FINAL WHERE _is_deleted = 0"
    )
    ch_rows = {row[0]: (row[1], row[2]) for row in result.result_rows}
    versions = [row[3] for row in result.result_rows]
    missing = set(pg_rows) - set(ch_rows)
    extra = set(ch_rows) - set(pg_rows)
    stale = {rid for rid in set(pg_rows) & set(ch_rows) if pg_rows[rid] != ch_rows[rid]}
    assert (missing, extra, stale) == (set(), set(), set())
    assert all(v > 0 for v in versions) and min(versions) < 2**56
    assert slot_start > 0
    payloads = ch_client.query(
        f"SELECT uniqExact(run_id) FROM {database}.raw_task_runs_payload_v1"
    ).result_rows[0][0]
    assert payloads >= len(pg_rows)
    return len(pg_rows)


def test_changes_over_many_transactions_arrive_as_postgres_has_them(
    tmp_path, profiling_db, chdb_endpoint, ch_client, ch_database
) -> None:
    config = _consumer_config(tmp_path, profiling_db, ch_database)
    log = tmp_path / "consumer.log"
    consumer = _start_consumer(config, profiling_db, chdb_endpoint, log)
    try:
        _write(profiling_db, batches=60, seed=1)
        _wait_caught_up(profiling_db, consumer, log)
        rows = _assert_clickhouse_matches_postgres(profiling_db, ch_client, ch_database)
        assert rows > 500
        with connect(profiling_db.url) as conn:
            live_in_pg = conn.execute('SELECT count(*) FROM "TaskRun"').fetchone()[0]
        deletes = ch_client.query(
            f"SELECT count() FROM {ch_database}.task_runs_v2 WHERE _is_deleted = 1"
        ).result_rows[0][0]
        assert deletes > 0 and live_in_pg == rows
    finally:
        consumer.send_signal(signal.SIGTERM)
        assert consumer.wait(timeout=15) == 0, log.read_text()


def test_sigkill_mid_stream_then_restart_loses_nothing(
    tmp_path, profiling_db, chdb_endpoint, ch_client, ch_database
) -> None:
    config = _consumer_config(tmp_path, profiling_db, ch_database, flush_interval_ms=300)
    log = tmp_path / "consumer.log"
    consumer = _start_consumer(config, profiling_db, chdb_endpoint, log)
    writer = threading.Thread(target=_write, args=(profiling_db, 150, 2))
    writer.start()
    try:
        for _ in range(3):  # kill it three times while the writer is busy
            time.sleep(0.7)
            consumer.kill()
            consumer.wait()
            consumer = _start_consumer(config, profiling_db, chdb_endpoint, log)
        writer.join()
        _wait_caught_up(profiling_db, consumer, log)
        assert _assert_clickhouse_matches_postgres(profiling_db, ch_client, ch_database) > 1000
    finally:
        writer.join()
        consumer.send_signal(signal.SIGTERM)
        consumer.wait(timeout=15)


def test_a_missing_slot_is_a_clear_error(tmp_path, profiling_db, chdb_endpoint, ch_database):
    with psycopg.connect(profiling_db.url.url, autocommit=True) as conn:
        conn.execute("SELECT pg_drop_replication_slot(%s)", (profiling_db.slot_name,))
    config = _consumer_config(tmp_path, profiling_db, ch_database)
    log = tmp_path / "consumer.log"
    consumer = _start_consumer(config, profiling_db, chdb_endpoint, log)
    assert consumer.wait(timeout=30) == 2
    output = log.read_text()
    assert profiling_db.slot_name in output and "Traceback" not in output
    with psycopg.connect(profiling_db.url.url, autocommit=True) as conn:
        conn.execute(
            "SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (profiling_db.slot_name,)
        )
