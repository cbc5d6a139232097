"""Flusher: events to rows, retries against a flaky sink, poison rows and dedup in real chdb."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from rrlab.config import ConsumerConfig
from rrlab.exceptions import SinkError
from rrlab.service.events import ChangeEvent, Transaction
from rrlab.service.flusher import (
    PAYLOAD_TABLE,
    TASK_RUNS_TABLE,
    Flusher,
    FlushMetrics,
    json_columns,
)
from rrlab.service.retry import RetryPolicy
from rrlab.service.scheduler import FlushScheduler
from rrlab.service.sinks import ClickHouseSink, InsertResult, MockSink, Row, Sink

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
        self,
        table: str,
        columns: Sequence[str],
        rows: Sequence[Row],
        json_columns: frozenset[str],
        *,
        body: bytes | None = None,
    ) -> InsertResult:
        self.calls += 1
        if self.calls <= self.failures:
            raise ConnectionError(self.message)
        return self.inner.insert(table, columns, rows, json_columns, body=body)

    def close(self) -> None:
        self.inner.close()


class RecordingSink(MockSink):
    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[Row]] = {}

    def insert(
        self,
        table: str,
        columns: Sequence[str],
        rows: Sequence[Row],
        json_columns: frozenset[str],
        *,
        body: bytes | None = None,
    ) -> InsertResult:
        self.tables.setdefault(table, []).extend(rows)
        return super().insert(table, columns, rows, json_columns, body=body)


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
        self,
        table: str,
        columns: Sequence[str],
        rows: Sequence[Row],
        json_columns: frozenset[str],
        *,
        body: bytes | None = None,
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
