"""The standalone consumer process: its stats file, SIGTERM (also while a flush is stuck on a
stalled ClickHouse), a second signal, and a second consumer on the same slot.

Each test runs ``python -m rrlab.service.consumer`` against a real PostgreSQL and the real
chdb endpoint; a stalled ClickHouse is the endpoint behind a paused TCP proxy.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from psycopg.conninfo import make_conninfo

from rrlab.exceptions import PostgresError
from rrlab.infra.ch_migrations import run_migrations
from rrlab.infra.pg_setup import drop_slot, recreate_slot
from rrlab.infra.postgres import connect
from rrlab.producer.generator import RunGenerator
from rrlab.producer.writer import RunPool, RunWriter, WriteMix
from rrlab.service.events import lsn_to_int
from tests.fixtures.tcp_proxy import PausableTcpProxy
from tests.test_outages import start_consumer, wait_until

# a flush stuck on the stalled server would hold its thread for an hour: a consumer that
# exits at all did not wait for it
STUCK = {"insert_timeout_s": 3600, "insert_max_retries": 1, "flush_interval_ms": 100}


@pytest.fixture
def ch_database(ch_client) -> Iterator[str]:
    name = f"shutdown_{uuid.uuid4().hex[:8]}"
    run_migrations(ch_client, name)
    yield name
    ch_client.command(f"DROP DATABASE IF EXISTS {name}")


def write_runs(profiling_db, batches: int, seed: int) -> int:
    """Insert ``batches`` × 10 runs, one transaction each; returns the WAL position after."""
    rng = random.Random(seed)
    generator = RunGenerator(rng, profiling_db.fixtures, payload_size_kb=0.1)
    writer = RunWriter(profiling_db.url, generator, RunPool(rng), WriteMix(1.0, 0.0))
    writer.connect()
    try:
        for _ in range(batches):
            assert writer.write_batch(10).error is None
    finally:
        writer.close()
    with connect(profiling_db.url) as conn:
        return lsn_to_int(conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()[0])


def confirmed_lsn(profiling_db) -> int:
    with connect(profiling_db.url) as conn:
        row = conn.execute(
            "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = %s",
            (profiling_db.slot_name,),
        ).fetchone()
    return lsn_to_int(row[0])


def slot_in_use(profiling_db) -> bool:
    with connect(profiling_db.url) as conn:
        return conn.execute(
            "SELECT active FROM pg_replication_slots WHERE slot_name = %s",
            (profiling_db.slot_name,),
        ).fetchone()[0]


def reports(tmp_path: Path) -> list[dict]:
    path = tmp_path / "stats.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


def stats(tmp_path: Path) -> list[dict]:
    return [report for report in reports(tmp_path) if report["type"] == "stats"]


def test_standalone_the_reports_go_to_the_stats_file(
    tmp_path, profiling_db, chdb_endpoint, ch_database
) -> None:
    consumer, log = start_consumer(
        tmp_path, profiling_db, chdb_endpoint.url, ch_database, flush_interval_ms=100
    )
    try:
        wait_until(lambda: any(r["type"] == "ready" for r in reports(tmp_path)), consumer, log)
        target = write_runs(profiling_db, batches=3, seed=1)
        wait_until(
            lambda: (
                sum(r["inserts"] for r in stats(tmp_path)) == 30
                and stats(tmp_path)[-1]["acked_lsn"] >= target
            ),
            consumer,
            log,
        )
    finally:
        consumer.terminate()
        consumer.wait(timeout=60)
    assert consumer.returncode == 0, log.read_text()
    samples = stats(tmp_path)
    lags = [lag for sample in samples for lag in sample["lag_ms"]]
    assert len(lags) == 3 and all(lag >= 0 for lag in lags)  # one per transaction
    flushes = [flush for sample in samples for flush in sample["flush_records"]]
    assert sum(flush["task_rows"] for flush in flushes) == 30
    for flush in flushes:
        assert flush["bytes"] > 0 and flush["duration_ms"] >= 0
        assert flush["batch_size"] > 0 and flush["retries"] == flush["errors"] == 0
    assert sum(sample["transactions"] for sample in samples) == 3
    assert sum(sample["updates"] + sample["deletes"] for sample in samples) == 0
    for sample in samples:
        assert 0 <= sample["utilization"] <= 1 and sample["cpu_percent"] >= 0
        assert sample["rss_mb"] > 0
    assert samples[-1]["acked_lsn"] >= target  # the last report comes after the final ack
    assert samples[-1]["held_bytes"] == 0  # everything flushed: no encoded rows held


@contextmanager
def stalled_consumer(
    tmp_path: Path,
    profiling_db,
    chdb_endpoint,
    ch_database: str,
    *,
    batches: int,
    stuck_when: Callable[[Path], bool],
    **settings: Any,
) -> Iterator[tuple[subprocess.Popen, Path, int]]:
    """A consumer whose flushes are stuck on a stalled ClickHouse: ``batches`` × 10 runs are
    written behind the paused server, then ``stuck_when(log)`` is awaited. Yields the
    consumer, its log and the end of the WAL it must not acknowledge."""
    with PausableTcpProxy("127.0.0.1", chdb_endpoint.port) as proxy:
        url = f"http://127.0.0.1:{proxy.port}"
        consumer, log = start_consumer(
            tmp_path, profiling_db, url, ch_database, **STUCK, **settings
        )
        try:
            wait_until(lambda: any(r["type"] == "ready" for r in reports(tmp_path)), consumer, log)
            proxy.pause()
            target = write_runs(profiling_db, batches=batches, seed=2)
            wait_until(lambda: stuck_when(log), consumer, log)
            yield consumer, log, target
        finally:
            if consumer.poll() is None:
                consumer.kill()
                consumer.wait()


@pytest.fixture
def stuck_consumer(tmp_path, profiling_db, chdb_endpoint, ch_database):
    """A consumer whose one flush is stuck on a stalled ClickHouse."""
    with stalled_consumer(
        tmp_path,
        profiling_db,
        chdb_endpoint,
        ch_database,
        batches=1,
        stuck_when=lambda log: any(s["in_flight"] for s in stats(tmp_path)),
    ) as stuck:
        yield stuck


def test_sigterm_exits_0_without_waiting_for_a_flush_stuck_on_a_stalled_clickhouse(
    stuck_consumer, profiling_db, tmp_path
) -> None:
    consumer, log, target = stuck_consumer
    stuck = [s for s in stats(tmp_path) if s["in_flight"]]
    assert stuck[0]["held_bytes"] > 1000  # the stuck flush's encoded rows
    consumer.terminate()
    assert consumer.wait(timeout=120) == 0, log.read_text()
    assert "unflushed work left unacknowledged" in log.read_text()
    assert confirmed_lsn(profiling_db) < target


def test_a_second_signal_exits_at_once_without_acknowledging(stuck_consumer, profiling_db) -> None:
    consumer, log, target = stuck_consumer
    consumer.terminate()
    wait_until(lambda: "a second signal exits at once" in log.read_text(), consumer, log)
    consumer.terminate()
    assert consumer.wait(timeout=120) == 128 + signal.SIGTERM, log.read_text()
    assert "stopped (" not in log.read_text()
    assert confirmed_lsn(profiling_db) < target


def test_a_receive_loop_held_back_by_a_stalled_clickhouse_reports_and_stops_on_sigterm(
    tmp_path, profiling_db, chdb_endpoint, ch_database
) -> None:
    """At the byte budget the receive loop waits for a flush; a flush stuck on a stalled
    server never ends: the consumer goes on reporting, and a stop does not wait for it."""
    # a walsender that hears nothing from its client for this long ends the connection
    quick_timeout = make_conninfo(profiling_db.url.url, options="-c wal_sender_timeout=2s")
    with stalled_consumer(
        tmp_path,
        profiling_db,
        chdb_endpoint,
        ch_database,
        batches=200,  # ~2 MB of encoded rows
        stuck_when=lambda log: "receive loop waiting for a flush" in log.read_text(),
        database_url=quick_timeout,
        max_buffered_mb=1,
    ) as (consumer, log, target):
        reported = len(stats(tmp_path))
        wait_until(lambda: len(stats(tmp_path)) >= reported + 5, consumer, log)  # 5 s held back
        held_back = stats(tmp_path)[-1]
        assert held_back["held_bytes"] >= 1 << 20 and held_back["in_flight"] > 0
        assert slot_in_use(profiling_db)  # its status updates kept the connection
        consumer.terminate()
        assert consumer.wait(timeout=120) == 0, log.read_text()
    assert "unflushed work left unacknowledged" in log.read_text()
    assert confirmed_lsn(profiling_db) < target


@contextmanager
def streaming_consumer(
    directory: Path, profiling_db, clickhouse_url: str, database: str
) -> Iterator[subprocess.Popen]:
    """A consumer that holds the slot (it reported ready); stopped with SIGTERM afterwards
    unless the test ended it itself."""
    directory.mkdir(exist_ok=True)
    consumer, log = start_consumer(directory, profiling_db, clickhouse_url, database)
    try:
        wait_until(lambda: any(r["type"] == "ready" for r in reports(directory)), consumer, log)
        yield consumer
    finally:
        if consumer.poll() is None:
            consumer.terminate()
            consumer.wait(timeout=60)


def test_a_second_consumer_on_the_slot_names_the_one_holding_it(
    tmp_path, profiling_db, chdb_endpoint, ch_database
) -> None:
    second_dir = tmp_path / "second"
    second_dir.mkdir()
    with streaming_consumer(
        tmp_path / "first", profiling_db, chdb_endpoint.url, ch_database
    ) as first:
        second, second_log = start_consumer(
            second_dir, profiling_db, chdb_endpoint.url, ch_database
        )
        assert second.wait(timeout=120) == 2  # after the slot wait a restart is allowed
        message = second_log.read_text()
        assert f"rrlab consumer pid {first.pid}" in message, message
        assert "Only one consumer may read a slot" in message and "Traceback" not in message
        assert first.poll() is None
    assert first.returncode == 0


def test_sigterm_while_waiting_for_clickhouse_exits_0(
    tmp_path, profiling_db, chdb_endpoint, ch_database
) -> None:
    # unstopped, the wait for a paused ClickHouse ends after 40 s with exit 2 ("gives up")
    with PausableTcpProxy("127.0.0.1", chdb_endpoint.port) as proxy:
        proxy.pause()
        url = f"http://127.0.0.1:{proxy.port}"
        consumer, log = start_consumer(tmp_path, profiling_db, url, ch_database)
        try:
            wait_until(lambda: "ClickHouse is not answering yet" in log.read_text(), consumer, log)
            consumer.terminate()
            assert consumer.wait(timeout=120) == 0, log.read_text()
        finally:
            if consumer.poll() is None:
                consumer.kill()
                consumer.wait()
    assert "stopped while waiting for ClickHouse or the replication slot" in log.read_text()


def test_sigterm_while_waiting_for_a_busy_slot_exits_0(
    tmp_path, profiling_db, chdb_endpoint, ch_database
) -> None:
    # unstopped, the second consumer's slot wait ends with exit 2 (the slot is in use)
    second_dir = tmp_path / "second"
    second_dir.mkdir()
    with streaming_consumer(
        tmp_path / "first", profiling_db, chdb_endpoint.url, ch_database
    ) as first:
        second, second_log = start_consumer(
            second_dir, profiling_db, chdb_endpoint.url, ch_database
        )
        wait_until(lambda: "cannot stream yet" in second_log.read_text(), second, second_log)
        second.terminate()
        assert second.wait(timeout=120) == 0, second_log.read_text()
        assert "stopped while waiting" in second_log.read_text()
        assert first.poll() is None


def test_a_run_refuses_to_take_the_slot_of_a_running_consumer(
    tmp_path, profiling_db, chdb_endpoint, ch_database
) -> None:
    with streaming_consumer(tmp_path, profiling_db, chdb_endpoint.url, ch_database) as consumer:
        refused = pytest.raises(PostgresError, match=f"running consumer.*pid {consumer.pid}")
        with connect(profiling_db.url) as conn, refused:
            drop_slot(conn, profiling_db.slot_name)
        assert consumer.poll() is None  # left alone
        consumer.kill()  # a dead consumer's walsender is taken back
        consumer.wait()
        with connect(profiling_db.url) as conn:
            assert drop_slot(conn, profiling_db.slot_name)
            recreate_slot(conn, profiling_db.slot_name)
