"""The producer loop end to end on a real PostgreSQL, driven through plain callables."""

import queue
import threading
import time

import pytest

from rrlab.config import ProducerConfig
from rrlab.infra.postgres import connect
from rrlab.producer.worker import run_producer

DEADLINE_S = 60  # only guards against a hung test; no assertion depends on timing


class Driver:
    """The runner's side: a command queue, and the messages the producer emitted."""

    def __init__(self) -> None:
        self.commands: queue.Queue = queue.Queue()
        self.messages: list[dict] = []
        self.lock = threading.Lock()

    def receive(self, timeout: float):
        try:
            return self.commands.get(timeout=timeout)
        except queue.Empty:
            return None

    def emit(self, message: dict) -> None:
        with self.lock:
            self.messages.append(message)

    def of_type(self, kind: str) -> list[dict]:
        with self.lock:
            return [m for m in self.messages if m["type"] == kind]

    def wait_for(self, condition) -> None:
        deadline = time.monotonic() + DEADLINE_S
        while not condition():
            if time.monotonic() > deadline:
                pytest.fail(f"condition not met; messages so far: {self.messages[-5:]}")
            time.sleep(0.05)


def start(db, driver, **config):
    producer = ProducerConfig(**{"batch_size": 200, "retry_pause_s": 0.1, **config})
    thread = threading.Thread(
        target=run_producer,
        args=(0, db.url.url, producer, db.fixtures, driver.receive, driver.emit),
        kwargs={"seed": 1},
    )
    thread.start()
    driver.wait_for(lambda: driver.of_type("ready"))
    return thread


def records_of(driver, phase, key="records"):
    return sum(m[key] for m in driver.of_type("stats") if m["phase"] == phase)


def test_phases_are_written_throttled_and_fully_reported(profiling_db):
    driver = Driver()
    thread = start(profiling_db, driver, insert_update_ratio=0.75, delete_ratio=0.05)
    for name, rate in (("one", 2_000.0), ("two", 1_000.0)):
        driver.commands.put({"cmd": "phase", "name": name, "rate": rate})
        driver.wait_for(lambda name=name: records_of(driver, name) >= 1_500)
        driver.commands.put({"cmd": "stop_phase"})
        driver.wait_for(
            lambda name=name: any(m["phase"] == name for m in driver.of_type("phase_stopped"))
        )
    driver.commands.put({"cmd": "shutdown"})
    thread.join(DEADLINE_S)
    assert not thread.is_alive()

    stopped = {m["phase"]: m for m in driver.of_type("phase_stopped")}
    assert list(stopped) == ["one", "two"]
    for name, summary in stopped.items():
        stats = [m for m in driver.of_type("stats") if m["phase"] == name]
        for key in ("inserts", "updates", "deletes", "records", "errors"):
            assert summary[key] == sum(m[key] for m in stats), key
        assert summary["errors"] == 0
        # every statement's latency is reported, each exactly once
        latencies = [entry for m in stats for entry in m["latencies"]]
        assert sum(rows for op, rows, _ in latencies if op == "insert") == summary["inserts"]
        assert sum(rows for op, rows, _ in latencies if op == "update") == summary["updates"]
        assert sum(rows for op, rows, _ in latencies if op == "delete") == summary["deletes"]
        # the throttle never runs ahead of the schedule by more than half a batch
        rate = summary["target_rate"]
        assert summary["records"] <= rate * summary["elapsed_s"] + 100
        assert summary["achieved_rate"] == pytest.approx(
            summary["records"] / summary["elapsed_s"], rel=0.01
        )
    written = sum(s["inserts"] - s["deletes"] for s in stopped.values())
    with connect(profiling_db.url) as conn:
        assert conn.execute('SELECT count(*) FROM "TaskRun"').fetchone() == (written,)


def test_a_database_error_is_counted_logged_and_survived(profiling_db):
    driver = Driver()
    thread = start(profiling_db, driver)
    driver.commands.put({"cmd": "phase", "name": "p", "rate": 2_000.0})
    driver.wait_for(lambda: records_of(driver, "p") >= 400)
    with connect(profiling_db.url) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    driver.wait_for(lambda: records_of(driver, "p", "errors") >= 1)
    written_at_error = records_of(driver, "p")
    driver.wait_for(lambda: records_of(driver, "p") >= written_at_error + 1_000)
    driver.commands.put({"cmd": "shutdown"})
    thread.join(DEADLINE_S)
    assert not thread.is_alive()
    assert records_of(driver, "p", "errors") == 1
    (log,) = driver.of_type("log")
    assert "write failed" in log["message"] and "terminat" in log["message"]
    assert records_of(driver, "p", "updates") > 0
    with connect(profiling_db.url) as conn:
        rows = conn.execute('SELECT count(*) FROM "TaskRun"').fetchone()
    assert rows == (records_of(driver, "p", "inserts"),)


def test_stop_without_a_phase_is_answered_and_unknown_commands_are_logged(profiling_db):
    driver = Driver()
    thread = start(profiling_db, driver)
    driver.commands.put({"cmd": "stop_phase"})
    driver.commands.put({"cmd": "dance"})
    driver.commands.put({"cmd": "shutdown"})
    thread.join(DEADLINE_S)
    assert not thread.is_alive()
    assert [m["type"] for m in driver.messages] == ["ready", "phase_stopped", "log"]
    assert "unknown command" in driver.messages[-1]["message"]
