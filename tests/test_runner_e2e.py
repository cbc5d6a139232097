"""`rrlab run` end to end: real PostgreSQL, chdb and mock sinks, real child processes."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import psutil
import pytest

import rrlab
from rrlab.infra.clickhouse import EmbeddedClickHouse, clickhouse_client
from rrlab.infra.postgres import connect


def _metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def _short_phases(*phases: tuple[str, float, int]) -> dict:
    return {
        "phases": [
            {"name": name, "duration_s": duration, "target_throughput": rate}
            for name, duration, rate in phases
        ]
    }


@pytest.mark.slow
def test_smoke_run_with_chdb_writes_complete_metrics(pg_server, tmp_path) -> None:
    run_dir = rrlab.run(
        "smoke",
        output=str(tmp_path),
        progress=False,
        overrides=_short_phases(("warmup", 2, 500), ("baseline", 3, 1500)),
    )
    metrics = _metrics(run_dir)
    assert metrics["run"]["status"] == "complete"
    assert metrics["run"]["clickhouse_version"] and metrics["run"]["postgres_version"]
    phases = metrics["phases"]
    assert [p["name"] for p in phases] == ["warmup", "baseline"]
    for phase in phases:
        assert phase["records_produced"] > 0
        assert phase["records_consumed"] == phase["records_produced"]
        assert phase["replication_lag_ms"]["p99"] is not None
        assert phase["batches_flushed"] > 0 and phase["consumer_utilization"]["mean"] is not None
        assert set(phase["peak_rss_mb"]) == {"consumer", "producer-0", "clickhouse"}
    inserts = sum(p["inserts"] for p in phases)
    with EmbeddedClickHouse(run_dir / "clickhouse") as clickhouse:
        client = clickhouse_client(clickhouse.url)
        stored = client.query("SELECT uniqExact(run_id) FROM trigger_dev.task_runs_v2").result_rows
    assert stored[0][0] == inserts
    with connect(pg_server.url().with_dbname("trigger_profiling")) as conn:
        assert conn.execute('SELECT count(*) FROM "TaskRun"').fetchone()[0] == inserts
        # the run's slot is gone: left behind it would keep all of the server's later WAL
        slots = "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'profiling_slot'"
        assert conn.execute(slots).fetchone()[0] == 0
        assert conn.execute("SHOW max_slot_wal_keep_size").fetchone()[0] == "8GB"
    for series in ("producer", "consumer", "lag", "flushes", "processes", "producer_latency"):
        assert pl.read_parquet(run_dir / "timeseries" / f"{series}.parquet").height > 0, series
    config_text = (run_dir / "config.json").read_text()
    assert json.loads(config_text)["clickhouse"]["sink"] == "chdb"


@pytest.mark.slow
def test_the_producer_keeps_a_2000_per_second_target(pg_server, tmp_path) -> None:
    run_dir = rrlab.run(
        sink="mock",
        output=str(tmp_path),
        progress=False,
        overrides=_short_phases(("pacing", 5, 2000)),
    )
    (phase,) = _metrics(run_dir)["phases"]
    assert abs(phase["producer_throughput"] - 2000) / 2000 < 0.10, phase["producer_throughput"]


def _descendants(pid: int) -> list[psutil.Process]:
    return psutil.Process(pid).children(recursive=True)


def _start_long_run(tmp_path: Path) -> tuple[subprocess.Popen, list[psutil.Process]]:
    """`rrlab run` with one long phase, once its consumer, producer and chdb all run."""
    params = tmp_path / "long.yaml"
    params.write_text(
        "phases:\n  - {name: long, duration_s: 120, target_throughput: 1000}\n"
        "clickhouse: {sink: chdb}\n"
    )
    runner = subprocess.Popen(
        [sys.executable, "-m", "rrlab", "run", "-c", str(params), "--output", str(tmp_path),
         "--no-progress"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ},
        text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            names = " ".join(_cmdlines(runner.pid))
            if "rrlab.service.consumer" in names and "rrlab.producer" in names:
                break
            time.sleep(0.2)
        time.sleep(3)
        children = _descendants(runner.pid)
        assert len(children) >= 3  # consumer, producer, chdb endpoint
    except BaseException:
        runner.kill()  # a failed start must not leave a 120 s run holding the database
        raise
    return runner, children


def _cmdlines(pid: int) -> list[str]:
    lines = []
    for process in _descendants(pid):
        with contextlib.suppress(psutil.Error):  # a short-lived helper may exit meanwhile
            lines.append(" ".join(process.cmdline()))
    return lines


@pytest.mark.slow
def test_a_crashed_runner_leaves_no_child_behind(pg_server, tmp_path) -> None:
    runner, children = _start_long_run(tmp_path)
    runner.kill()  # no chance to clean up: the children must notice on their own
    runner.communicate(timeout=30)
    gone, alive = psutil.wait_procs(children, timeout=15)
    for process in alive:
        process.kill()
    assert not alive, [p.cmdline() for p in alive]


@pytest.mark.slow
def test_ctrl_c_mid_phase_leaves_no_process_and_incomplete_metrics(pg_server, tmp_path) -> None:
    runner, children = _start_long_run(tmp_path)
    try:
        runner.send_signal(signal.SIGINT)
        stdout, stderr = runner.communicate(timeout=60)
    finally:
        runner.kill()
    assert runner.returncode != 0
    gone, alive = psutil.wait_procs(children, timeout=5)
    assert not alive, [p.cmdline() for p in alive]
    run_dir = Path(stdout.strip().splitlines()[-1])
    metrics = _metrics(run_dir)
    assert metrics["run"]["status"] == "incomplete"
    assert "interrupted" in metrics["run"]["error"]
    assert "Traceback" not in stderr


def test_bad_options_are_refused_before_anything_starts(tmp_path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "rrlab", "run", "-t", "-5", "--output", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "target_throughput = -5 is out of range" in result.stderr
    assert "Traceback" not in result.stderr
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
def test_a_killed_consumer_is_restarted_and_nothing_is_lost(pg_server, tmp_path) -> None:
    run_dir = rrlab.run(
        sink="chdb",
        output=str(tmp_path),
        progress=False,
        chaos="kill-consumer=2,seed=7",
        overrides=_short_phases(("load", 6, 2000)),
    )
    run = _metrics(run_dir)["run"]
    assert run["status"] == "complete" and run["consumer_restarts"] == 2
    assert run["verify"]["ok"], run["verify"]
    assert run["verify"]["missing"] == 0 and run["verify"]["stale"] == 0
    assert (run_dir / "logs" / "consumer.log").read_text().count("streaming slot") == 3
    # the producers' counts in metrics.json are what PostgreSQL holds
    phases = _metrics(run_dir)["phases"]
    with connect(pg_server.url().with_dbname("trigger_profiling")) as conn:
        live_runs = conn.execute('SELECT count(*) FROM "TaskRun"').fetchone()[0]
    assert live_runs == sum(phase["inserts"] - phase["deletes"] for phase in phases) > 0
