"""The producer's writer on a real PostgreSQL: inserts, transitions, atomic batches, recovery."""

import random
from collections import Counter

import pytest

from rrlab.infra.postgres import connect
from rrlab.producer.generator import (
    COMPLETED_SUCCESSFULLY,
    EXECUTING,
    FAILED_STATUSES,
    INSERT_COLUMNS,
    PENDING,
    RunGenerator,
)
from rrlab.producer.writer import DELETE, INSERT, UPDATE, RunPool, RunWriter, WriteMix


def make_writer(db, insert_ratio=1.0, delete_ratio=0.0, generator_class=RunGenerator, seed=5):
    rng = random.Random(seed)
    generator = generator_class(rng, db.fixtures, error_rate=0.2)
    writer = RunWriter(db.url, generator, RunPool(rng), WriteMix(insert_ratio, delete_ratio))
    writer.connect()
    return writer


def query(db, statement, params=()):
    with connect(db.url) as conn:
        return conn.execute(statement, params).fetchall()


# --- pure parts ----------------------------------------------------------------------


def test_the_mix_follows_the_ratios_exactly_over_time():
    mix = WriteMix(0.8, 0.05)
    totals = Counter()
    for size in [1, 7, 500, 13, 500, 479]:
        inserts, updates, deletes = mix.split(size)
        assert inserts + updates + deletes == size and min(inserts, updates, deletes) >= 0
        totals.update(inserts=inserts, updates=updates, deletes=deletes)
    assert totals == {"inserts": 1200, "updates": 225, "deletes": 75}
    assert WriteMix(1.0, 0.0).split(500) == (500, 0, 0)
    assert WriteMix(0.0, 1.0).split(500) == (0, 0, 500)


def test_the_pool_hands_out_each_run_once_and_stays_bounded():
    pool = RunPool(random.Random(1), capacity=100)
    for i in range(150):
        pool.add(f"run{i}", PENDING)
    pool.add("done", COMPLETED_SUCCESSFULLY)  # a finished run has nothing left to change
    assert len(pool) == 100
    taken = [pool.take() for _ in range(100)]
    assert len({run_id for run_id, _ in taken}) == 100
    assert all(status == PENDING and run_id != "done" for run_id, status in taken)
    assert pool.take() is None


# --- against PostgreSQL -----------------------------------------------------------------


def test_inserted_runs_land_with_the_fixtures(profiling_db):
    writer = make_writer(profiling_db)
    outcomes = [writer.write_batch(500) for _ in range(4)] + [writer.write_batch(37)]
    writer.close()
    assert [o.error for o in outcomes] == [None] * 5
    assert sum(o.inserts for o in outcomes) == 2_037
    assert [(op, rows) for o in outcomes for op, rows, _ in o.latencies][-1] == (INSERT, 37)
    assert all(ms > 0 for o in outcomes for _, _, ms in o.latencies)
    rows = query(
        profiling_db,
        'SELECT count(*), count(DISTINCT "friendlyId"), min("organizationId"),'
        ' max("runtimeEnvironmentId"), min(status::text), min(length(payload)) FROM "TaskRun"',
    )
    fixtures = profiling_db.fixtures
    assert rows == [
        (2_037, 2_037, fixtures.organization_id, fixtures.environment_id, PENDING, 1024)
    ]


def test_updates_make_real_status_transitions(profiling_db):
    writer = make_writer(profiling_db, insert_ratio=0.5)
    outcomes = [writer.write_batch(400) for _ in range(10)]
    writer.close()
    assert all(o.error is None for o in outcomes)
    assert {op for o in outcomes for op, _, _ in o.latencies} == {INSERT, UPDATE}
    inserts, updates = sum(o.inserts for o in outcomes), sum(o.updates for o in outcomes)
    # the first batch finds no earlier runs to update and inserts instead
    assert inserts + updates == 4_000 and updates >= 1_600
    rows = query(
        profiling_db,
        'SELECT status::text, count(*), count("startedAt"), count("executedAt"),'
        ' count("completedAt"), count(error), count(output), bool_and("updatedAt" >= "createdAt"),'
        ' min("usageDurationMs") FROM "TaskRun" GROUP BY 1',
    )
    by_status = {row[0]: row[1:] for row in rows}
    assert sum(row[0] for row in by_status.values()) == inserts
    assert set(by_status) >= {PENDING, EXECUTING, COMPLETED_SUCCESSFULLY}
    assert set(by_status) <= {PENDING, EXECUTING, COMPLETED_SUCCESSFULLY, *FAILED_STATUSES}
    assert by_status[PENDING][1:5] == (0, 0, 0, 0)
    count, started, executed, completed, errors, _, _, _ = by_status[EXECUTING]
    assert started == executed == count and completed == errors == 0
    for status in set(by_status) - {PENDING, EXECUTING}:
        count, started, executed, completed, errors, output, later, usage = by_status[status]
        # a finished run went through EXECUTING first
        assert started == executed == completed == count and later and usage > 0
        if status == COMPLETED_SUCCESSFULLY:
            assert errors == 0 and output == count
        else:
            assert errors == count and output == 0


def test_deletes_remove_earlier_runs(profiling_db):
    writer = make_writer(profiling_db, insert_ratio=0.6, delete_ratio=0.2)
    outcomes = [writer.write_batch(500) for _ in range(6)]
    writer.close()
    assert all(o.error is None for o in outcomes)
    assert DELETE in {op for o in outcomes for op, _, _ in o.latencies}
    inserts, deletes = sum(o.inserts for o in outcomes), sum(o.deletes for o in outcomes)
    assert deletes > 0
    assert query(profiling_db, 'SELECT count(*) FROM "TaskRun"') == [(inserts - deletes,)]


class DuplicateIdGenerator(RunGenerator):
    """Repeats an earlier id as the 300th run of the second batch: a unique violation mid-COPY."""

    def new_run(self, now):
        row = super().new_run(now)
        if self._number == 1:
            self.first_id = row[0]
        if self._number == 800:
            row = (self.first_id, *row[1:])
        return row


def test_a_failing_batch_leaves_nothing_behind(profiling_db):
    writer = make_writer(profiling_db, generator_class=DuplicateIdGenerator)
    first = writer.write_batch(500)
    failed = writer.write_batch(500)
    after = writer.write_batch(500)
    writer.close()
    assert first.error is None and after.error is None
    assert "duplicate key" in failed.error and failed.records == 0
    assert query(profiling_db, 'SELECT count(*) FROM "TaskRun"') == [(1_000,)]


def test_a_killed_connection_is_counted_and_the_writer_recovers(profiling_db):
    writer = make_writer(profiling_db, insert_ratio=0.75)
    before = [writer.write_batch(400) for _ in range(3)]
    terminated = query(
        profiling_db,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        " WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    assert terminated == [(True,)]
    failed = writer.write_batch(400)
    after = [writer.write_batch(400) for _ in range(3)]
    writer.close()
    assert failed.error is not None and failed.records == 0
    assert all(o.error is None for o in before + after)
    assert sum(o.updates for o in after) > 0
    written = sum(o.inserts - o.deletes for o in before + after)
    assert query(profiling_db, 'SELECT count(*) FROM "TaskRun"') == [(written,)]


ARRAYS = ("runTags", "realtimeStreams", "bulkActionGroupIds")
ODD_ARRAYS = (
    [],
    [""],
    ["a"],
    ["é", "日本", "🎉"],
    ['q"uote', "back\\slash", "{brace}", "a,b", "NULL"],
)


class OddArrayGenerator(RunGenerator):
    """Runs whose text[] columns hold empty, non-ASCII and punctuation-laden values, which
    binary COPY must carry as they are; it keeps every run it makes."""

    made: list[tuple]

    def new_run(self, now):
        row = list(super().new_run(now))
        for name in ARRAYS:
            row[INSERT_COLUMNS.index(name)] = ODD_ARRAYS[(self._number + len(name)) % 5]
        self.made = [*getattr(self, "made", []), tuple(row)]
        return self.made[-1]


def test_text_arrays_are_stored_as_generated(profiling_db):
    rng = random.Random(3)
    generator = OddArrayGenerator(rng, profiling_db.fixtures)
    writer = RunWriter(profiling_db.url, generator, RunPool(rng), WriteMix(1.0, 0.0))
    assert writer.write_batch(40).error is None
    writer.close()
    columns = ", ".join(f'"{name}"' for name in ARRAYS)
    stored = query(profiling_db, f'SELECT id, {columns} FROM "TaskRun"')
    positions = [INSERT_COLUMNS.index(name) for name in ARRAYS]
    assert len(generator.made) == 40
    assert {row[0]: row[1:] for row in stored} == {
        row[0]: tuple(row[i] for i in positions) for row in generator.made
    }
    # arrays as SQL writes them: subscripts from 1 ('[0:1]={a,b}' would load as the same list)
    lower_bounds = ", ".join(f'coalesce(array_lower("{name}", 1), 1)' for name in ARRAYS)
    assert query(profiling_db, f'SELECT DISTINCT {lower_bounds} FROM "TaskRun"') == [(1, 1, 1)]


@pytest.mark.parametrize("ratio", [0.0, 1.0])
def test_super_json_payloads_are_stored_as_written(profiling_db, ratio):
    rng = random.Random(9)
    generator = RunGenerator(rng, profiling_db.fixtures, super_json_ratio=ratio)
    writer = RunWriter(profiling_db.url, generator, RunPool(rng), WriteMix(1.0, 0.0))
    assert writer.write_batch(50).error is None
    writer.close()
    rows = query(
        profiling_db, 'SELECT DISTINCT "payloadType", ("payload"::jsonb ? \'json\') FROM "TaskRun"'
    )
    expected = "application/super+json" if ratio else "application/json"
    assert rows == [(expected, bool(ratio))]


def test_each_transaction_is_announced_with_its_id_just_before_its_commit(profiling_db):
    announced, seen_before_commit = [], []

    def announce(operation, rows, xid):
        announced.append((operation, rows, xid))
        seen_before_commit.append(xact_status(profiling_db, xid))

    rng = random.Random(3)
    generator = RunGenerator(rng, profiling_db.fixtures)
    writer = RunWriter(profiling_db.url, generator, RunPool(rng), WriteMix(0.6, 0.1), announce)
    outcomes = [writer.write_batch(300) for _ in range(4)]
    writer.close()
    assert seen_before_commit == ["in progress"] * len(announced)
    assert {xact_status(profiling_db, xid) for _, _, xid in announced} == {"committed"}
    for operation, key in ((INSERT, "inserts"), (UPDATE, "updates"), (DELETE, "deletes")):
        written = sum(getattr(o, key) for o in outcomes)
        assert sum(rows for op, rows, _ in announced if op == operation) == written > 0
    assert len(announced) == sum(len(o.latencies) for o in outcomes)


def xact_status(db, xid):
    return query(db, "SELECT pg_xact_status(%s::xid8)", (xid,))[0][0]


def test_a_commit_that_raises_is_marked_unknown_for_postgres_to_settle(profiling_db):
    announced = []

    def announce(operation, rows, xid):
        announced.append(xid)
        if len(announced) == 2:  # the connection breaks between announcement and COMMIT
            query(
                profiling_db,  # waits (up to 10 s) until the writer's backend has exited
                "SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()",
            )

    rng = random.Random(4)
    generator = RunGenerator(rng, profiling_db.fixtures)
    writer = RunWriter(profiling_db.url, generator, RunPool(rng), WriteMix(1.0, 0.0), announce)
    first, broken, after = (writer.write_batch(100) for _ in range(3))
    writer.close()
    assert not first.commit_unknown and not after.commit_unknown and after.error is None
    assert broken.commit_unknown and broken.error is not None and broken.records == 0
    assert [xact_status(profiling_db, xid) for xid in announced] == [
        "committed",
        "aborted",
        "committed",
    ]
