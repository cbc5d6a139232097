"""Chaos: the kill schedule, and exact producer counts across killed producers."""

import json
import random

import pytest

import rrlab
from rrlab.api import parse_chaos
from rrlab.exceptions import ConfigError, RunError
from rrlab.infra.postgres import connect
from rrlab.producer.generator import EXECUTING, PENDING, RunGenerator
from rrlab.producer.writer import RunPool, RunWriter, WriteMix
from rrlab.runner.commits import UnreportedCommits, as_producer_row, committed
from rrlab.runner.orchestrator import ChaosSchedule

# Every run is inserted PENDING and each update moves it one status on (PENDING →
# EXECUTING → a terminal status), so PostgreSQL can count the updates that landed.
UPDATES_LANDED = (
    f"SELECT coalesce(sum(CASE status WHEN '{PENDING}' THEN 0 WHEN '{EXECUTING}' THEN 1"
    ' ELSE 2 END), 0)::int FROM "TaskRun"'
)


def test_kills_are_due_on_load_time_only() -> None:
    schedule = ChaosSchedule(count=3, load_s=10.0, seed=1)
    schedule.start(0.0)
    kills = [t for t in [x * 0.1 for x in range(1, 51)] if schedule.due(t)]
    schedule.start(1000.0)  # a catch-up and a pause: not load time
    kills += [t for t in [1000 + x * 0.1 for x in range(1, 51)] if schedule.due(t)]
    assert len(kills) == 3
    assert all(0.5 <= (t if t < 1000 else t - 1000 + 5) <= 9.6 for t in kills)


def test_the_runner_can_wake_exactly_when_a_kill_is_due() -> None:
    schedule = ChaosSchedule(count=2, load_s=10.0, seed=4)
    schedule.start(0.0)
    first = schedule.wait_s(0.0)
    assert 0.5 <= first <= 9.5 and not schedule.due(first - 1e-6) and schedule.due(first)
    second = schedule.wait_s(first)
    schedule.start(100.0)  # a pause between phases does not count
    assert schedule.wait_s(100.0) == pytest.approx(second)
    assert schedule.due(100.0 + second) and schedule.wait_s(200.0) == float("inf")


def test_no_kill_is_planned_by_default() -> None:
    schedule = ChaosSchedule(count=0, load_s=10.0, seed=None)
    schedule.start(0.0)
    assert not any(schedule.due(t) for t in range(20)) and schedule.planned == 0


def test_chaos_spec_parsing() -> None:
    assert parse_chaos("kill-consumer=3,kill-producer=2,seed=5") == {
        "chaos.kill_consumer": "3",
        "chaos.kill_producer": "2",
        "chaos.seed": "5",
    }
    with pytest.raises(ConfigError, match="kill-producer=N"):
        parse_chaos("kill-postgres=1")


class Killed(Exception):
    """Stands for SIGKILL landing right after an announcement, before the COMMIT."""


def test_unreported_transactions_are_counted_from_postgres(profiling_db) -> None:
    """A producer's counts = its reports + its unreported transactions PostgreSQL committed.

    The producer is simulated in-process: a report after the first batch, two batches
    nobody reported, then a death between an announcement and its COMMIT.
    """
    unreported, seq, die = UnreportedCommits(), [0], [False]

    def announce(operation, rows, xid):
        seq[0] += 1
        unreported.announced("producer-0", {"seq": seq[0], "xid": xid, "phase": "load",
                                            "operation": operation, "rows": rows})  # fmt: skip
        if die[0]:
            raise Killed

    rng = random.Random(11)
    generator = RunGenerator(rng, profiling_db.fixtures)
    writer = RunWriter(profiling_db.url, generator, RunPool(rng), WriteMix(0.7, 0.0), announce)
    reported = writer.write_batch(400)
    unreported.reported("producer-0", seq[0])
    unseen = [writer.write_batch(400) for _ in range(2)]
    die[0] = True
    with pytest.raises(Killed):
        writer.write_batch(400)
    writer.close()

    announced = unreported.take("producer-0")
    assert [a.seq for a in announced] == list(range(seq[0] - len(announced) + 1, seq[0] + 1))
    with connect(profiling_db.url) as conn:
        landed = committed(conn, announced)
        counts = as_producer_row(landed)
        assert landed == announced[:-1]  # the one killed before its COMMIT never landed
        assert counts["inserts"] == sum(o.inserts for o in unseen) > 0
        assert counts["updates"] == sum(o.updates for o in unseen) > 0
        live = conn.execute('SELECT count(*) FROM "TaskRun"').fetchone()[0]
        assert live == reported.inserts + counts["inserts"]
        updates = conn.execute(UPDATES_LANDED).fetchone()[0]
        assert updates == reported.updates + counts["updates"]
    assert unreported.take("producer-0") == []


def test_a_report_settles_its_transactions_but_those_it_calls_unsure() -> None:
    unreported = UnreportedCommits()
    for seq in range(1, 6):
        unreported.announced("p", {"seq": seq, "xid": str(100 + seq), "phase": "x",
                                   "operation": "insert", "rows": 10})  # fmt: skip
    unreported.reported("p", 3, unsure=[2])
    unreported.reported("p", 4, unsure=[])
    assert [a.seq for a in unreported.take_unsure()["p"]] == [2]
    assert unreported.take_unsure() == {}
    unreported.reported("p", 5, unsure=[5])
    unreported.announced("p", {"seq": 6, "xid": "106", "phase": "x", "operation": "update",
                               "rows": 3})  # fmt: skip
    assert [a.seq for a in unreported.take("p")] == [5, 6]  # the process died
    assert unreported.take("p") == []


def test_a_transaction_still_in_progress_is_waited_for_not_guessed(profiling_db) -> None:
    unreported = UnreportedCommits()
    with connect(profiling_db.url, autocommit=False) as open_tx, connect(profiling_db.url) as conn:
        xid = open_tx.execute("SELECT pg_current_xact_id()::text").fetchone()[0]
        unreported.announced("p", {"seq": 1, "xid": xid, "phase": "x", "operation": "insert",
                                   "rows": 1})  # fmt: skip
        with pytest.raises(RunError, match="still in progress"):
            committed(conn, unreported.take("p"), timeout_s=0)
        open_tx.rollback()


@pytest.mark.slow
def test_killed_producers_are_restarted_and_counted_exactly(pg_server, tmp_path) -> None:
    """Two producers, two phases, two kills: each likely lands after a COMMIT the killed
    producer never reported (batches every 0.5 s, reports every second), so without the
    count from PostgreSQL the inserts and updates would fall short."""
    run_dir = rrlab.run(
        sink="mock",
        output=str(tmp_path),
        run_name="prodkill",
        progress=False,
        chaos="kill-producer=2,seed=3",
        overrides={
            "phases": [
                {"name": "warm", "duration_s": 3, "target_throughput": 1000},
                {"name": "load", "duration_s": 6, "target_throughput": 2000},
            ],
            "producer.workers": 2,
        },
    )
    metrics = json.loads((run_dir / "metrics.json").read_text())
    run, phases = metrics["run"], metrics["phases"]
    assert run["status"] == "complete", run["error"]
    assert run["producer_restarts"] == 2 and run["consumer_restarts"] == 0
    with connect(pg_server.url().with_dbname("trigger_profiling")) as conn:
        live = conn.execute('SELECT count(*) FROM "TaskRun"').fetchone()[0]
        updates = conn.execute(UPDATES_LANDED).fetchone()[0]
    assert sum(p["deletes"] for p in phases) == 0  # every inserted run is still there
    assert sum(p["inserts"] for p in phases) == live
    assert sum(p["updates"] for p in phases) == updates
    for phase in phases:
        assert phase["records_consumed"] == phase["records_produced"] > 0
