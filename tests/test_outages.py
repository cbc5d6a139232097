"""Outages mid-run: ClickHouse paused, killed and restarted, stalled behind a proxy; PostgreSQL
restarted. Each is a real ``rrlab.run`` in a thread with the fault injected from the test; the
run must complete, acknowledge nothing past unflushed data, end with a clean verify, and show
the outage window in metrics.json. Also: a consumer started while ClickHouse is down.
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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import polars as pl
import psutil
import psycopg
import pytest

import rrlab
import rrlab.runner.infrastructure as infrastructure
from rrlab.exceptions import SinkError
from rrlab.infra.ch_migrations import run_migrations
from rrlab.infra.clickhouse import EmbeddedClickHouse
from rrlab.producer.generator import RunGenerator
from rrlab.producer.writer import RunPool, RunWriter, WriteMix
from rrlab.service.consumer import Consumer
from rrlab.service.events import lsn_to_int, lsn_to_str
from rrlab.service.sinks import MockSink
from tests.fixtures.tcp_proxy import PausableTcpProxy

OUTAGE_S = 10.0
# Survive a 10 s outage inside one batch's retries (3 s per attempt, backoff up to 2 s), with
# few, large flushes: 100 flushes retrying every few seconds leave a stalled server so many
# abandoned requests that after it resumes they time out again for a minute (measured).
OUTAGE_TOLERANT = {
    "consumer.insert_timeout_s": 3,
    "consumer.insert_max_retries": 12,
    "consumer.insert_base_delay_ms": 200,
    "consumer.insert_max_delay_ms": 2000,
    "consumer.max_flush_concurrency": 4,
    "consumer.flush_batch_size": 1000,
}
LOAD = {"phases": [{"name": "load", "duration_s": 20, "target_throughput": 1000}]}
DATABASE = "trigger_profiling"


class RunThread(threading.Thread):
    """``rrlab.run`` in a background thread; ``join_run`` returns its metrics or re-raises."""

    def __init__(self, output: Path, **options: Any) -> None:
        super().__init__(daemon=True)
        self.output, self.options = output, options
        self.run_dir: Path | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.run_dir = rrlab.run(output=str(self.output), progress=False, **self.options)
        except BaseException as exc:
            self.error = exc

    def wait_for_load(self) -> None:
        """Until the producers are writing (their log exists) and a little data flowed."""
        deadline = time.monotonic() + 120
        while not list(self.output.glob("*/*/logs/producer-0.log")):
            assert self.is_alive(), self.error
            assert time.monotonic() < deadline, "the run did not start its producers"
            time.sleep(0.2)
        time.sleep(3)

    def join_run(self) -> dict[str, Any]:
        self.join(timeout=280)
        assert not self.is_alive(), "the run did not end"
        if self.error is not None:
            raise self.error
        assert self.run_dir is not None
        return json.loads((self.run_dir / "metrics.json").read_text())


class AckWatch:
    """What acknowledgement did around an outage: a test_decoding slot records every commit's
    end LSN, and the run's slot is sampled while the sink is down."""

    def __init__(self, url: str, slot: str = "profiling_slot") -> None:
        self.url, self.slot = url, slot
        self.probe = f"probe_{uuid.uuid4().hex[:8]}"
        self.outage_started_lsn = 0
        self.confirmed: list[int] = []
        self.wal: list[int] = []
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_create_logical_replication_slot(%s, 'test_decoding')", (self.probe,)
            )

    def outage_started(self) -> None:
        self.outage_started_lsn = self._lsn("SELECT pg_current_wal_lsn()::text")

    def sample_for(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.confirmed.append(
                self._lsn(
                    "SELECT confirmed_flush_lsn::text FROM pg_replication_slots "
                    "WHERE slot_name = %s",
                    (self.slot,),
                )
            )
            self.wal.append(self._lsn("SELECT pg_current_wal_lsn()::text"))
            time.sleep(0.5)

    def first_commit_after_outage(self) -> int:
        """End LSN of the first transaction committed after the sink stopped: not flushed."""
        with psycopg.connect(self.url, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT lsn::text FROM pg_logical_slot_peek_changes(%s, NULL, NULL, "
                "'skip-empty-xacts', '1', 'include-xids', '0') "
                "WHERE data LIKE 'COMMIT%%' AND lsn > %s::pg_lsn ORDER BY lsn LIMIT 1",
                (self.probe, lsn_to_str(self.outage_started_lsn)),
            ).fetchall()
        assert rows, "no transaction committed during the outage"
        return lsn_to_int(rows[0][0])

    def drop(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute("SELECT pg_drop_replication_slot(%s)", (self.probe,))

    def _lsn(self, sql: str, params: tuple = ()) -> int:
        with psycopg.connect(self.url, autocommit=True) as conn:
            value = conn.execute(sql, params).fetchone()
        return lsn_to_int(value[0]) if value and value[0] else 0


@pytest.fixture
def recorded_clickhouse(monkeypatch) -> list[EmbeddedClickHouse]:
    """The embedded ClickHouse servers runs start, so a test can pause, kill or restart one."""
    started: list[EmbeddedClickHouse] = []

    class Recorded(EmbeddedClickHouse):
        def start(self) -> EmbeddedClickHouse:
            started.append(self)
            return super().start()

    monkeypatch.setattr(infrastructure, "EmbeddedClickHouse", Recorded)
    return started


@contextmanager
def watched_outage(
    pg_server, begin: Callable[[], None], end: Callable[[], None]
) -> Iterator[AckWatch]:
    """Stop the sink with ``begin``, watch the slot for OUTAGE_S, bring it back with ``end``."""
    watch = AckWatch(pg_server.url().with_dbname(DATABASE).url)
    try:
        begin()
        watch.outage_started()
        try:
            watch.sample_for(OUTAGE_S)
        finally:
            end()
        yield watch
    finally:
        watch.drop()


def assert_survived(
    metrics: dict[str, Any], watch: AckWatch, *, consumer_killed: bool = False
) -> None:
    """The run survived the outage. Unless the consumer was killed as the outage began, the
    flush metrics show its retries and it counted every record; a killed consumer's retries
    die with it, and so do the counts of its last unreported second (changes it had already
    acknowledged are not re-sent): verify is then the only count to trust."""
    run = metrics["run"]
    assert run["status"] == "complete"
    assert run["verify"]["ok"], run["verify"]
    assert run["verify"]["missing"] == 0 and run["verify"]["stale"] == 0
    # acknowledgement stood still below the first change the sink could not have taken
    assert max(watch.confirmed) < watch.first_commit_after_outage()
    # ...while PostgreSQL's WAL moved on: the slot's lag grew during the outage
    assert watch.wal[-1] - watch.confirmed[-1] > watch.wal[0] - watch.confirmed[0]
    (phase,) = metrics["phases"]
    if not consumer_killed:
        assert phase["flush_errors"] > 0 and phase["flush_retries"] > 0
        assert phase["records_consumed"] >= phase["records_produced"]
    assert_outage_window(metrics)


def assert_outage_window(metrics: dict[str, Any]) -> dict[str, Any]:
    """metrics.json states the outage: a window that ended (the sink came back), spanning most
    of the injected OUTAGE_S, listed in its phase too; returns it."""
    run, (phase,) = metrics["run"], metrics["phases"]
    outage = max(run["sink_outages"], key=lambda window: window["duration_s"])
    assert outage["end_s"] is not None and outage["start_s"] < outage["end_s"]
    # it starts within a flush or two of the fault and ends only once the sink answers again
    assert outage["duration_s"] >= OUTAGE_S / 2
    assert outage["failed_inserts"] + outage["failed_connects"] > 0
    assert phase["sink_outages"] == [
        {key: value for key, value in window.items() if key != "phase"}
        for window in run["sink_outages"]
    ]
    assert phase["sink_outage_s"] == run["sink_outage_s"] >= outage["duration_s"]
    return outage


def flushes_with_errors(run_dir: Path) -> pl.DataFrame:
    flushes = pl.read_parquet(run_dir / "timeseries" / "flushes.parquet")
    return flushes.filter(pl.col("errors") > 0)


@pytest.mark.slow
def test_embedded_clickhouse_paused_for_10_s(pg_server, tmp_path, recorded_clickhouse) -> None:
    run = RunThread(tmp_path, sink="chdb", overrides={**LOAD, **OUTAGE_TOLERANT})
    run.start()
    run.wait_for_load()
    (clickhouse,) = recorded_clickhouse
    pid = clickhouse.pid
    with watched_outage(
        pg_server, lambda: os.kill(pid, signal.SIGSTOP), lambda: os.kill(pid, signal.SIGCONT)
    ) as watch:
        metrics = run.join_run()
        assert_survived(metrics, watch)
    assert flushes_with_errors(run.run_dir).height > 0
    # the consumer's count of failed attempts agrees with the flushes' own
    failed = sum(window["failed_inserts"] for window in metrics["run"]["sink_outages"])
    assert failed == pl.read_parquet(run.run_dir / "timeseries" / "flushes.parquet")["errors"].sum()


@pytest.mark.slow
def test_embedded_clickhouse_killed_and_restarted(pg_server, tmp_path, recorded_clickhouse) -> None:
    run = RunThread(tmp_path, sink="chdb", overrides={**LOAD, **OUTAGE_TOLERANT})
    run.start()
    run.wait_for_load()
    (clickhouse,) = recorded_clickhouse
    port = clickhouse.port

    def kill() -> None:
        os.kill(clickhouse.pid, signal.SIGKILL)

    def restart() -> None:
        clickhouse.start()  # same data dir and, once started, the same port
        assert clickhouse.port == port

    with watched_outage(pg_server, kill, restart) as watch:
        metrics = run.join_run()
        assert_survived(metrics, watch)


@pytest.mark.slow
def test_users_clickhouse_stalled_behind_a_proxy(pg_server, tmp_path, chdb_endpoint) -> None:
    with PausableTcpProxy("127.0.0.1", chdb_endpoint.port) as proxy:
        run = RunThread(
            tmp_path,
            sink="clickhouse",
            clickhouse_url=f"http://127.0.0.1:{proxy.port}",
            overrides={
                **LOAD,
                **OUTAGE_TOLERANT,
                "clickhouse.database": f"outage_{uuid.uuid4().hex[:8]}",
            },
        )
        run.start()
        run.wait_for_load()
        with watched_outage(pg_server, proxy.pause, proxy.resume) as watch:
            metrics = run.join_run()
            assert_survived(metrics, watch)


def run_consumer() -> psutil.Process:
    """The consumer process of the run this test started."""
    for child in psutil.Process().children(recursive=True):
        try:
            if "rrlab.service.consumer" in child.cmdline():
                return child
        except psutil.Error:
            continue
    raise AssertionError("the run has no consumer process")


@pytest.mark.slow
def test_a_consumer_restarted_during_an_outage_waits_for_clickhouse(
    pg_server, tmp_path, recorded_clickhouse
) -> None:
    """Killed while ClickHouse is paused, the consumer is restarted by the runner into the
    outage: it waits for the sink instead of dying at start-up, and the run goes on."""
    run = RunThread(tmp_path, sink="chdb", overrides={**LOAD, **OUTAGE_TOLERANT})
    run.start()
    run.wait_for_load()
    (clickhouse,) = recorded_clickhouse
    pid = clickhouse.pid

    def pause_and_kill_the_consumer() -> None:
        os.kill(pid, signal.SIGSTOP)
        run_consumer().kill()

    with watched_outage(
        pg_server, pause_and_kill_the_consumer, lambda: os.kill(pid, signal.SIGCONT)
    ) as watch:
        metrics = run.join_run()
        assert_survived(metrics, watch, consumer_killed=True)
    assert metrics["run"]["consumer_restarts"] == 1
    assert any(window["failed_connects"] for window in metrics["run"]["sink_outages"])
    log = (run.run_dir / "logs" / "consumer.log").read_text()
    assert "ClickHouse is not answering yet" in log


@pytest.mark.slow
def test_a_sink_down_longer_than_the_retries_is_reread_from_the_slot(
    pg_server, tmp_path, recorded_clickhouse
) -> None:
    """Two attempts per batch cannot outlast a 10 s outage: a batch exhausts its retries, and
    the consumer starts over from the slot, in-process, until the sink is back."""
    exhausting = {**OUTAGE_TOLERANT, "consumer.insert_max_retries": 2}
    run = RunThread(tmp_path, sink="chdb", overrides={**LOAD, **exhausting})
    run.start()
    run.wait_for_load()
    (clickhouse,) = recorded_clickhouse
    pid = clickhouse.pid
    with watched_outage(
        pg_server, lambda: os.kill(pid, signal.SIGSTOP), lambda: os.kill(pid, signal.SIGCONT)
    ) as watch:
        metrics = run.join_run()
        assert_survived(metrics, watch)
    assert metrics["run"]["consumer_restarts"] == 0
    log = (run.run_dir / "logs" / "consumer.log").read_text()
    assert "re-reading from the slot" in log and "replication resumed from the slot" in log
    consumer = pl.read_parquet(run.run_dir / "timeseries" / "consumer.parquet")
    assert consumer["resumes"].max() >= 1  # the time series shows when it started over
    assert any(window["reread_from_slot"] for window in metrics["run"]["sink_outages"])


@pytest.mark.slow
def test_postgres_restarted_mid_run(pg_server, tmp_path) -> None:
    port = pg_server.url().port
    run = RunThread(tmp_path, sink="chdb", overrides=LOAD)
    run.start()
    run.wait_for_load()
    pg_server.stop(force=True)
    time.sleep(3)
    pg_server.start()
    assert pg_server.url().port == port  # a restart keeps the port, so clients reconnect
    metrics = run.join_run()
    run_info = metrics["run"]
    assert run_info["status"] == "complete"
    assert run_info["verify"]["ok"], run_info["verify"]
    assert run_info["consumer_restarts"] == 0  # it reconnected in-process
    (phase,) = metrics["phases"]
    assert phase["producer_errors"] > 0  # the producers counted their failures and went on
    log = (run.run_dir / "logs" / "consumer.log").read_text()
    assert "replication resumed from the slot" in log


class RefusingSink(MockSink):
    """A sink whose server refuses every insert with a permanent error."""

    def insert(self, table, columns, rows, json_columns):
        raise RuntimeError("Code: 516. Authentication failed: password is incorrect")


def test_a_permanent_sink_error_ends_the_consumer(profiling_db) -> None:
    """Retrying or re-reading cannot fix a refused password: the consumer stops with a clear
    error (the runner then restarts it up to consumer.max_restarts) instead of looping."""
    config = profiling_db.config.with_overrides(
        {"consumer.insert_max_retries": 1, "clickhouse.sink": "mock"}
    )
    consumer = Consumer(config, profiling_db.url.url, RefusingSink(), report=lambda body: None)
    outcome: list[BaseException] = []

    def run() -> None:
        try:
            consumer.run()
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    rng = random.Random(3)
    generator = RunGenerator(rng, profiling_db.fixtures, payload_size_kb=0.1)
    writer = RunWriter(profiling_db.url, generator, RunPool(rng), WriteMix(1.0, 0.0))
    writer.connect()
    try:
        assert writer.write_batch(10).error is None
    finally:
        writer.close()
    thread.join(timeout=60)
    if thread.is_alive():
        consumer.stop_requested.set()
        thread.join(timeout=15)
        pytest.fail("the consumer kept running after a permanent sink error")
    (error,) = outcome
    assert isinstance(error, SinkError)
    assert "permanent error" in str(error) and "Authentication failed" in str(error)
    assert consumer.resumes == 0


def start_consumer(
    tmp_path: Path,
    profiling_db,
    clickhouse_url: str,
    database: str,
    database_url: str | None = None,
    **consumer: Any,
) -> tuple[subprocess.Popen, Path]:
    """A standalone consumer process (as ``python -m rrlab.service.consumer``) of the
    profiling database (or ``database_url``); its log."""
    config = tmp_path / "config.json"
    config.write_text(
        json.dumps(
            {
                "consumer": {
                    "slot_name": profiling_db.slot_name,
                    "publication_name": profiling_db.publication_name,
                    "status_interval_s": 0.2,
                    **consumer,
                },
                "clickhouse": {"sink": "chdb", "database": database},
            }
        )
    )
    env = {
        **os.environ,
        "RRLAB_DATABASE_URL": database_url or profiling_db.url.url,
        "RRLAB_CLICKHOUSE_URL": clickhouse_url,
    }
    log = tmp_path / "consumer.log"
    command = [sys.executable, "-m", "rrlab.service.consumer", "--config", str(config),
               "--stats-file", str(tmp_path / "stats.jsonl")]  # fmt: skip
    with open(log, "ab") as handle:
        process = subprocess.Popen(command, env=env, stdout=handle, stderr=subprocess.STDOUT)
    return process, log


def wait_until(condition: Callable[[], bool], process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 90
    while not condition():
        assert process.poll() is None, log.read_text()
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.2)


@pytest.mark.slow
def test_a_consumer_started_while_clickhouse_is_down_waits_then_delivers(
    tmp_path, profiling_db, chdb_endpoint, ch_client
) -> None:
    database = f"late_{uuid.uuid4().hex[:8]}"
    run_migrations(ch_client, database)
    with PausableTcpProxy("127.0.0.1", chdb_endpoint.port) as proxy:
        proxy.pause()
        consumer, log = start_consumer(
            tmp_path, profiling_db, f"http://127.0.0.1:{proxy.port}", database,
            insert_timeout_s=2,
        )  # fmt: skip
        try:
            wait_until(lambda: "ClickHouse is not answering yet" in log.read_text(), consumer, log)
            rng = random.Random(5)
            generator = RunGenerator(rng, profiling_db.fixtures, payload_size_kb=0.1)
            writer = RunWriter(profiling_db.url, generator, RunPool(rng), WriteMix(1.0, 0.0))
            writer.connect()
            try:
                for _ in range(3):
                    assert writer.write_batch(10).error is None
            finally:
                writer.close()
            proxy.resume()
            stored = f"SELECT count() FROM {database}.task_runs_v2 FINAL WHERE _is_deleted = 0"
            wait_until(lambda: ch_client.command(stored) == 30, consumer, log)
            wait_until(lambda: (tmp_path / "stats.jsonl").exists(), consumer, log)
        finally:
            consumer.terminate()
            consumer.wait(timeout=30)
            ch_client.command(f"DROP DATABASE IF EXISTS {database}")
    assert consumer.returncode == 0, log.read_text()
    reports = [json.loads(line) for line in (tmp_path / "stats.jsonl").read_text().splitlines()]
    kinds = [kind for report in reports for _, kind in report.get("sink_events", [])]
    assert kinds[0] == "connect_failed" and "recovered" in kinds


def test_a_consumer_given_a_wrong_password_fails_at_once(tmp_path, profiling_db) -> None:
    with EmbeddedClickHouse(tmp_path / "ch", password="right-pw") as endpoint:
        url = endpoint.url.replace("right-pw", "wrong-pw")
        consumer, log = start_consumer(tmp_path, profiling_db, url, "trigger_dev")
        assert consumer.wait(timeout=60) == 2
    output = log.read_text()
    assert "authentication failed" in output
    assert "not answering yet" not in output  # no waiting: no wait can fix a password
    assert "wrong-pw" not in output and "Traceback" not in output
