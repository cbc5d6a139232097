"""Flusher: events to rows, retries against a flaky sink, poison rows and dedup in real chdb."""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from rrlab.config import ConsumerConfig
from rrlab.exceptions import SinkError
from rrlab.service import transform
from rrlab.service.events import ChangeEvent, Transaction
from rrlab.service.flusher import (
    PAYLOAD_TABLE,
    TASK_RUNS_TABLE,
    Flusher,
    FlushMetrics,
    json_columns,
)
from rrlab.service.json_values import utf16_code_units
from rrlab.service.retry import RetryPolicy
from rrlab.service.scheduler import FlushScheduler
from rrlab.service.sinks import (
    INVALID_UTF16,
    ClickHouseSink,
    InsertResult,
    MockSink,
    Row,
    Sink,
    body_of,
    encode_rows,
)

CREATED = datetime(2025, 3, 4, 5, 6, 7, 891000, tzinfo=UTC)


def run(run_id: str, status: str = "PENDING", **changes: Any) -> dict[str, Any]:
    values = {
        "id": run_id,
        "friendlyId": f"f{run_id}",
        "organizationId": "org_1",
        "projectId": "proj_1",
        "runtimeEnvironmentId": "env_1",
        "environmentType": "DEVELOPMENT",
        "createdAt": CREATED,
        "updatedAt": CREATED,
        "status": status,
        "taskIdentifier": "my-task",
        "payload": '{"n": 1}',
        "payloadType": "application/json",
        "output": None,
        "outputType": "application/json",
        "runTags": ["a"],
        "traceId": "t",
        "spanId": "s",
        "queue": "q",
        "engine": "V2",
        "attemptNumber": 1,
        "depth": 0,
    }
    values.update(changes)
    return values


class FlakySink:
    """Wraps a sink: the first ``failures`` inserts raise ``message``, later ones go through."""

    def __init__(self, inner: Sink, failures: int, message: str = "Connection reset") -> None:
        self.inner = inner
        self.failures = failures
        self.message = message
        self.calls = 0

    def insert(
        self, table: str, columns: Sequence[str], rows: Sequence[Row], json_columns: frozenset[str]
    ) -> InsertResult:
        self.calls += 1
        if self.calls <= self.failures:
            raise ConnectionError(self.message)
        return self.inner.insert(table, columns, rows, json_columns)

    def close(self) -> None:
        self.inner.close()


class RecordingSink(MockSink):
    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[Row]] = {}

    def insert(
        self, table: str, columns: Sequence[str], rows: Sequence[Row], json_columns: frozenset[str]
    ) -> InsertResult:
        self.tables.setdefault(table, []).extend(rows)
        return super().insert(table, columns, rows, json_columns)


def flusher(sink: Sink, metrics: list[FlushMetrics], **options: Any) -> Flusher:
    return Flusher(
        sink,
        retry=RetryPolicy(max_attempts=3, base_delay_ms=100, max_delay_ms=2_000),
        on_metrics=metrics.append,
        sleep=lambda seconds: None,
        **options,
    )


def test_json_columns_come_from_the_reference_schema() -> None:
    assert json_columns(TASK_RUNS_TABLE) == {"output", "error"}
    assert json_columns(PAYLOAD_TABLE) == {"payload"}


def test_rows_are_built_filtered_and_sorted_and_payloads_only_for_inserts() -> None:
    sink, metrics = RecordingSink(), []
    events = [
        ChangeEvent("insert", run("run_b"), 10),
        ChangeEvent("update", run("run_a", "EXECUTING"), 11),
        ChangeEvent("insert", run("run_a"), 10),
        ChangeEvent("insert", run("run_x", organizationId=None), 10),
        ChangeEvent("delete", run("run_c", environmentType=""), 12),
    ]
    flusher(sink, metrics)(7, events)
    assert [r[3] for r in sink.tables[TASK_RUNS_TABLE]] == ["run_a", "run_a", "run_b"]
    assert [r[0] for r in sink.tables[PAYLOAD_TABLE]] == ["run_a", "run_b"]
    (m,) = metrics
    assert (m.batch_id, m.batch_size, m.dropped_events, m.task_rows, m.payload_rows) == (
        7,
        5,
        2,
        3,
        2,
    )
    assert m.ok and m.inserted.rows == 5 and m.inserted.bytes > 0 and m.retries == 0


def test_payload_inserts_can_be_turned_off_in_the_consumer_config() -> None:
    sink, metrics = RecordingSink(), []
    config = ConsumerConfig(payload_inserts=False)
    Flusher.from_config(sink, config, metrics.append)(1, [ChangeEvent("insert", run("run_a"), 1)])
    assert PAYLOAD_TABLE not in sink.tables and metrics[0].payload_rows == 0


def test_an_entry_holds_the_bytes_of_its_encoded_rows() -> None:
    built = flusher(RecordingSink(), [])
    insert = built.build(ChangeEvent("insert", run("run_a"), 1))
    update = built.build(ChangeEvent("update", run("run_a", "EXECUTING"), 2))
    dropped = built.build(ChangeEvent("update", run("run_b", organizationId=None), 3))
    assert insert.payload_row is not None and update.payload_row is None
    assert Flusher.held_bytes(insert) == len(insert.task_row) + len(insert.payload_row)
    assert Flusher.held_bytes(update) == len(update.task_row) > 200
    assert Flusher.held_bytes(dropped) == 0


def unique(prefix: str) -> str:
    return f"run_{prefix}_{uuid.uuid4().hex[:12]}"


def final_rows(client: Any, run_ids: list[str]) -> dict[str, tuple[str, int, int]]:
    result = client.query(
        f"SELECT run_id, status, _version, _is_deleted FROM {TASK_RUNS_TABLE} FINAL "
        "WHERE run_id IN {ids:Array(String)}",
        parameters={"ids": run_ids},
    )
    return {r[0]: (r[1], r[2], r[3]) for r in result.result_rows}


def test_retry_then_success_lands_every_row(ch_client: Any) -> None:
    run_ids = [unique("retry") for _ in range(3)]
    flaky = FlakySink(ClickHouseSink(ch_client), failures=2)
    metrics: list[FlushMetrics] = []
    flusher(flaky, metrics)(1, [ChangeEvent("insert", run(r), 100) for r in run_ids])
    assert flaky.calls == 4  # two failures, then task rows, then payload rows
    assert metrics[0].ok and (metrics[0].retries, metrics[0].errors) == (2, 2)
    assert final_rows(ch_client, run_ids) == {r: ("PENDING", 100, 0) for r in run_ids}
    payloads = ch_client.query(
        f"SELECT count() FROM {PAYLOAD_TABLE} WHERE run_id IN {{ids:Array(String)}}",
        parameters={"ids": run_ids},
    ).result_rows[0][0]
    assert payloads == 3


def test_a_permanent_error_fails_the_flush_at_once() -> None:
    flaky = FlakySink(MockSink(), failures=5, message="Code: 60. DB::Exception: Table not found")
    metrics: list[FlushMetrics] = []
    with pytest.raises(SinkError, match="permanent"):
        flusher(flaky, metrics)(1, [ChangeEvent("insert", run("run_a"), 1)])
    assert flaky.calls == 1
    assert not metrics[0].ok and (metrics[0].retries, metrics[0].errors) == (0, 1)


class PoisoningSink:
    """Gives one row's output a NaN (json.dumps writes NaN, which ClickHouse refuses): the
    transform never produces one, so the poison is injected between transform and sink."""

    def __init__(self, inner: Sink, run_id: str) -> None:
        self.inner = inner
        self.run_id = run_id

    def insert(
        self, table: str, columns: Sequence[str], rows: Sequence[Row], json_columns: frozenset[str]
    ) -> InsertResult:
        run_index, output_index = columns.index("run_id"), columns.index(next(iter(json_columns)))
        poisoned = [
            [*r[:output_index], {"data": float("nan")}, *r[output_index + 1 :]]
            if r[run_index] == self.run_id
            else r
            for r in rows
        ]
        return self.inner.insert(table, columns, poisoned, json_columns)  # encoded afresh

    def close(self) -> None:
        self.inner.close()


def test_a_poison_row_is_stripped_and_the_rest_of_the_batch_lands(ch_client: Any) -> None:
    run_ids = [unique("poison") for _ in range(20)]
    events = [
        ChangeEvent("update", run(r, "COMPLETED_SUCCESSFULLY", output=f'{{"i": {i}}}'), 50)
        for i, r in enumerate(run_ids)
    ]
    sink = ClickHouseSink(ch_client, max_poison_strips=1)
    metrics: list[FlushMetrics] = []
    flusher(PoisoningSink(sink, run_ids[7]), metrics)(1, events)
    assert metrics[0].ok and metrics[0].inserted.stripped_rows == 1
    assert sink.totals.stripped_rows == 1 and sink.totals.skipped_rows == 0
    assert final_rows(ch_client, run_ids) == {r: ("COMPLETED_SUCCESSFULLY", 50, 0) for r in run_ids}
    outputs = dict(
        ch_client.query(
            f"SELECT run_id, toJSONString(output) FROM {TASK_RUNS_TABLE} FINAL "
            "WHERE run_id IN {ids:Array(String)}",
            parameters={"ids": run_ids},
        ).result_rows
    )
    assert outputs[run_ids[7]] == "{}"
    assert outputs[run_ids[8]] == '{"data":{"i":8}}'


def test_scheduler_and_flusher_keep_the_newest_version_in_clickhouse(ch_client: Any) -> None:
    run_ids = [unique("dedup") for _ in range(4)]
    sink = ClickHouseSink(ch_client)
    sched = FlushScheduler(
        flusher(sink, []),
        flush_batch_size=3,
        flush_interval_ms=600_000,
        max_flush_concurrency=2,
    )
    sched.start()
    lsn = 1_000
    statuses = ["PENDING", "EXECUTING", "COMPLETED_SUCCESSFULLY"]
    for status in statuses:
        for r in run_ids:
            lsn += 10
            kind = "insert" if status == "PENDING" else "update"
            changed = run(r, status, updatedAt=CREATED + timedelta(seconds=lsn))
            sched.add_transaction(
                Transaction(1, lsn - 5, 0, lsn, [ChangeEvent(kind, changed, lsn)])  # type: ignore[arg-type]
            )
    lsn += 10
    deleted = run(run_ids[0], "COMPLETED_SUCCESSFULLY")
    sched.add_transaction(Transaction(2, lsn - 5, 0, lsn, [ChangeEvent("delete", deleted, lsn)]))
    assert sched.close(timeout=60)
    assert sched.ack_lsn == lsn
    got = final_rows(ch_client, run_ids)
    assert run_ids[0] not in got  # _is_deleted = 1 with the newest version: FINAL hides it
    assert {r: got[r][0] for r in run_ids[1:]} == {r: "COMPLETED_SUCCESSFULLY" for r in run_ids[1:]}
    assert [got[r][1] for r in run_ids[1:]] == [1_100, 1_110, 1_120]


# --- build on arrival: the pending map keeps encoded rows ----------------------------


class BodySink(RecordingSink):
    """Records each table's body as the flusher sent it."""

    def __init__(self) -> None:
        super().__init__()
        self.bodies: dict[str, bytes] = {}

    def insert(
        self, table: str, columns: Sequence[str], rows: Sequence[Row], json_columns: frozenset[str]
    ) -> InsertResult:
        self.bodies[table] = body_of(rows)
        return super().insert(table, columns, rows, json_columns)


def whole_batch_bodies(events: list[ChangeEvent]) -> dict[str, bytes]:
    """The oracle, the flush as it was before build on arrival: every row built from the
    drained events, sorted by its key in UTF-16 code unit order (JavaScript's, applied
    always rather than only when an astral character is present), encoded at once."""

    def js_order(values: tuple[Any, ...]) -> tuple[Any, ...]:
        return tuple(utf16_code_units(v) if type(v) is str else v for v in values)

    insertable = [e for e in events if transform.is_insertable(e)]
    task_rows = [transform.task_run_row(e) for e in insertable]
    task_rows.sort(key=lambda row: js_order(transform.task_sort_key(row)))
    payload_rows = [transform.payload_row(e) for e in insertable if e.kind == "insert"]
    payload_rows.sort(key=lambda row: js_order((row[0],)))
    tables = {TASK_RUNS_TABLE: task_rows, PAYLOAD_TABLE: payload_rows}
    return {table: encode_rows(rows) for table, rows in tables.items() if rows}


# ids that JavaScript and Python order differently (U+10000 sorts below U+FFFF in UTF-16)
TEXTS = ["a", "b", "é", "\uffff", "\U00010000", "😀"]
# JSON cells only the stdlib encoder writes (NaN, a lone surrogate, a 70-bit integer)
ERRORS: list[Any] = [None, {"message": "x"}, {"n": float("nan")}, {"m": "\ud800 x"}, {"b": 2**70}]
OUTPUTS = [None, '{"i": 1}', '{"s": "é 😀"}']


def random_event(rng: random.Random) -> ChangeEvent:
    text = rng.choice
    changes = {
        "organizationId": text(["org_1", "org_\U00010000", "org_\uffff"]),
        "projectId": text(["p", "p😀"]),
        "runtimeEnvironmentId": text(["env", "env\uffff"]),
        "createdAt": CREATED + timedelta(milliseconds=rng.randrange(3)),  # ties on purpose
        "error": text(ERRORS),
        "output": text(OUTPUTS),
        "payload": text(['{"n": 1}', '{"s": "😀"}', "[]"]),
    }
    if rng.random() < 0.1:
        changes[text(["organizationId", "environmentType"])] = ""  # the upstream drops it
    run_id = f"run_{text(TEXTS)}{rng.randrange(8)}"
    kind = text(["insert", "update", "delete"])
    return ChangeEvent(kind, run(run_id, text(["PENDING", "EXECUTING"]), **changes), 1)


@pytest.mark.parametrize("seed", range(20))
def test_encoded_on_arrival_bodies_are_byte_identical_to_whole_batch_encoding(seed: int) -> None:
    rng = random.Random(seed)
    events = [random_event(rng) for _ in range(rng.randrange(1, 120))]
    sink, metrics = BodySink(), []
    flusher(sink, metrics)(1, events)  # duplicates of a (kind, run) included: ties stay stable
    assert sink.bodies == whole_batch_bodies(events)
    insertable = sum(map(transform.is_insertable, events))
    assert (metrics[0].batch_size, metrics[0].dropped_events) == (
        len(events),
        len(events) - insertable,
    )


def test_the_astral_and_stdlib_cases_are_exercised() -> None:
    """Guards the test above against generating only easy batches."""
    events = [random_event(random.Random(seed)) for seed in range(200)]
    body = whole_batch_bodies(events)[TASK_RUNS_TABLE]
    assert b"NaN" in body and b"\\ud800" in body and str(2**70).encode() in body
    ids = [e.run["organizationId"] for e in events]
    assert "org_\U00010000" in ids and "org_\uffff" in ids


def scheduled(flush: Flusher, **options: Any) -> FlushScheduler:
    """A scheduler wired to the flusher as the consumer wires it."""
    sched = FlushScheduler(
        flush.send,
        build=flush.build,
        prepare=flush.prepare,
        flush_batch_size=options.pop("flush_batch_size", 100),
        flush_interval_ms=600_000,
        max_flush_concurrency=1,
        **options,
    )
    sched.start()
    return sched


def add(sched: FlushScheduler, lsn: int, event: ChangeEvent) -> None:
    sched.add_transaction(Transaction(lsn, lsn - 1, 0, lsn, [event]))


def test_a_newer_non_insertable_change_replaces_an_insertable_one_and_is_dropped() -> None:
    sink, metrics = RecordingSink(), []
    sched = scheduled(flusher(sink, metrics))
    dropped = {"organizationId": None}
    changes = [
        ("run_a", 10, {}),  # replaced by a newer non-insertable change: nothing lands
        ("run_a", 11, dropped),
        ("run_b", 20, dropped),  # replaced by a newer insertable change: it lands
        ("run_b", 21, {"status": "EXECUTING"}),
        ("run_c", 30, {"status": "EXECUTING"}),  # an older non-insertable one is ignored
        ("run_c", 29, dropped),
        ("run_d", 40, {}),  # same version: the later change wins, even a dropped one
        ("run_d", 40, dropped),
    ]
    for lsn, (run_id, version, changed) in enumerate(changes, start=1):
        add(sched, lsn, ChangeEvent("update", run(run_id, **changed), version))
    assert sched.close(timeout=30)
    (m,) = metrics
    assert (m.batch_size, m.dropped_events, m.task_rows, m.payload_rows) == (4, 2, 2, 0)
    landed = {row[3]: (row[7], row[43]) for row in sink.tables[TASK_RUNS_TABLE]}
    assert landed == {"run_b": ("EXECUTING", 21), "run_c": ("EXECUTING", 30)}


def test_a_change_that_cannot_be_built_fails_its_batch_not_the_receive_loop() -> None:
    """As when rows were built at flush time: the batch fails like a flush (not
    acknowledged), unless a newer change of the run replaced the bad one before the flush."""
    failures: list[BaseException] = []
    sink, metrics = RecordingSink(), []
    sched = scheduled(
        flusher(sink, metrics),
        flush_batch_size=2,
        on_flush_failed=lambda batch_id, exc: failures.append(exc),
    )
    unbuildable = run("run_bad", createdAt=None)  # a NOT NULL column without a value
    add(sched, 10, ChangeEvent("update", unbuildable, 1))
    add(sched, 20, ChangeEvent("update", run("run_bad"), 2))  # replaces it
    add(sched, 30, ChangeEvent("insert", run("run_ok"), 3))  # batch 1 (2 runs) lands
    add(sched, 40, ChangeEvent("update", unbuildable, 4))
    add(sched, 50, ChangeEvent("insert", run("run_ok_2"), 5))  # batch 2 fails
    assert sched.close(timeout=30)
    assert [type(exc) for exc in failures] == [TypeError]
    assert [(m.batch_id, m.ok) for m in metrics] == [(1, True), (2, False)]
    assert [row[3] for row in sink.tables[TASK_RUNS_TABLE]] == ["run_bad", "run_ok"]
    assert sched.stalled and sched.ack_lsn == 30


def test_poison_cells_from_the_encoded_rows_are_recovered_in_clickhouse(ch_client: Any) -> None:
    """The transform's own rows reach ClickHouse with NaN/Infinity and a lone surrogate in
    their error: recovery decodes the encoded rows, sanitizes, strips, then skips."""
    run_ids = [unique("encoded_poison") for _ in range(12)]
    errors: dict[int, Any] = {3: {"m": "bad \ud800"}, 5: {"n": float("nan")}, 9: [-float("inf")]}
    events = [
        ChangeEvent("update", run(r, "EXECUTING", error=errors.get(i, {"i": i})), 70)
        for i, r in enumerate(run_ids)
    ]
    sink = ClickHouseSink(ch_client, max_poison_strips=1)
    metrics: list[FlushMetrics] = []
    flusher(sink, metrics)(1, events)
    inserted = metrics[0].inserted
    assert metrics[0].ok
    assert (inserted.sanitized_rows, inserted.stripped_rows, inserted.skipped_rows) == (1, 1, 1)
    stored = dict(
        ch_client.query(
            f"SELECT run_id, toJSONString(error) FROM {TASK_RUNS_TABLE} FINAL "
            "WHERE run_id IN {ids:Array(String)}",
            parameters={"ids": run_ids},
        ).result_rows
    )
    stripped, skipped = (5, 9) if run_ids[5] in stored else (9, 5)  # whichever ClickHouse named
    assert run_ids[skipped] not in stored and len(stored) == 11
    assert stored[run_ids[stripped]] == "{}"
    assert json.loads(stored[run_ids[3]]) == {"data": {"m": INVALID_UTF16}}
    assert json.loads(stored[run_ids[4]]) == {"data": {"i": 4}}
