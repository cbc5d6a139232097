"""TaskRun events → task_runs_v2 / raw_task_runs_payload_v1 rows, column by column."""

from __future__ import annotations

import csv
import hashlib
from datetime import UTC, datetime
from importlib import resources
from typing import Any

import pytest

from rrlab.service.events import ChangeEvent
from rrlab.service.transform import (
    PAYLOAD_COLUMNS,
    TASK_RUN_COLUMNS,
    is_insertable,
    payload_row,
    sort_payload_rows,
    sort_task_rows,
    task_run_row,
)

CREATED = datetime(2025, 6, 1, 12, 0, 0, 123_000, tzinfo=UTC)
CREATED_MS = 1_748_779_200_123


def at(second: int) -> datetime:
    return CREATED.replace(second=second)


def ms(second: int) -> int:
    return CREATED_MS + second * 1000


def reference_rows(name: str) -> list[dict[str, str]]:
    text = resources.files("rrlab.reference").joinpath(name).read_text()
    return list(csv.DictReader(text.splitlines(), delimiter="\t"))


def postgres_columns() -> list[str]:
    return [row["column"] for row in reference_rows("taskrun_postgres.tsv")]


def full_run() -> dict[str, Any]:
    """Every TaskRun column set, each mapped column to a value it alone has."""
    run: dict[str, Any] = dict.fromkeys(postgres_columns())
    run.update(
        id="run-1",
        organizationId="org-1",
        projectId="proj-1",
        runtimeEnvironmentId="env-1",
        environmentType="PRODUCTION",
        createdAt=CREATED,
        updatedAt=at(1),
        queueTimestamp=at(2),
        completedAt=at(3),
        startedAt=at(4),
        executedAt=at(5),
        delayUntil=at(6),
        queuedAt=at(7),
        expiredAt=at(8),
        status="COMPLETED_WITH_ERRORS",
        friendlyId="run_friendly1",
        attemptNumber=3,
        engine="V2",
        taskIdentifier="send-email",
        queue="task/send-email",
        scheduleId="sched-1",
        batchId="batch-1",
        usageDurationMs=1500,
        costInCents=2.5,
        baseCostInCents=0.25,
        output='{"ok": true}',
        outputType="application/json",
        error={"type": "BUILT_IN_ERROR", "message": "boom"},
        runTags=["a", "b"],
        taskVersion="20250601.1",
        sdkVersion="4.0.4",
        cliVersion="4.0.5",
        machinePreset="small-1x",
        rootTaskRunId="root-1",
        parentTaskRunId="parent-1",
        depth=2,
        spanId="span-1",
        traceId="trace-1",
        idempotencyKey="idem-hash",
        idempotencyKeyOptions={"key": "user-key", "scope": "attempt"},
        ttl="10m",
        isTest=True,
        concurrencyKey="ck-1",
        bulkActionGroupIds=["bulk-1"],
        masterQueue="us-east-1:shard-7:x",
        region="eu-central-1",
        planType="pro",
        maxDurationInSeconds=3600,
        annotations={
            "triggerSource": "api",
            "triggerAction": "trigger",
            "rootTriggerSource": "schedule",
            "taskKind": "AGENT",
            "externalDeploymentId": "dep-9",
        },
        statusReason="EXTERNAL_DEPLOYMENT_PENDING",
        isWarmStart=False,
        payload='{"order": 7}',
        payloadType="application/json",
    )
    return run


FULL_EXPECTED: dict[str, Any] = {
    "environment_id": "env-1",
    "organization_id": "org-1",
    "project_id": "proj-1",
    "run_id": "run-1",
    "updated_at": ms(1),
    "created_at": CREATED_MS,
    "queue_timestamp": ms(2),
    "status": "COMPLETED_WITH_ERRORS",
    "environment_type": "PRODUCTION",
    "friendly_id": "run_friendly1",
    "attempt": 3,
    "engine": "V2",
    "task_identifier": "send-email",
    "queue": "task/send-email",
    "schedule_id": "sched-1",
    "batch_id": "batch-1",
    "completed_at": ms(3),
    "started_at": ms(4),
    "executed_at": ms(5),
    "delay_until": ms(6),
    "queued_at": ms(7),
    "expired_at": ms(8),
    "usage_duration_ms": 1500,
    "cost_in_cents": 2.5,
    "base_cost_in_cents": 0.25,
    "output": {"data": {"ok": True}},
    "error": {"data": {"type": "BUILT_IN_ERROR", "message": "boom"}},
    "error_fingerprint": hashlib.sha256(b"BUILT_IN_ERROR:boom:").hexdigest()[:16],
    "tags": ["a", "b"],
    "task_version": "20250601.1",
    "sdk_version": "4.0.4",
    "cli_version": "4.0.5",
    "machine_preset": "small-1x",
    "root_run_id": "root-1",
    "parent_run_id": "parent-1",
    "depth": 2,
    "span_id": "span-1",
    "trace_id": "trace-1",
    "idempotency_key": "idem-hash",
    "idempotency_key_user": "user-key",
    "idempotency_key_scope": "attempt",
    "expiration_ttl": "10m",
    "is_test": 1,
    "_version": 0x16_B374D848,
    "_is_deleted": 0,
    "concurrency_key": "ck-1",
    "bulk_action_group_ids": ["bulk-1"],
    "worker_queue": "us-east-1",
    "region": "eu-central-1",
    "plan_type": "pro",
    "max_duration_in_seconds": 3600,
    "trigger_source": "api",
    "root_trigger_source": "schedule",
    "task_kind": "AGENT",
    "is_warm_start": 0,
    "external_deployment_id": "dep-9",
}

NULLABLE_SOURCES = (
    "queueTimestamp",
    "completedAt",
    "startedAt",
    "executedAt",
    "delayUntil",
    "queuedAt",
    "expiredAt",
    "attemptNumber",
    "scheduleId",
    "batchId",
    "usageDurationMs",
    "costInCents",
    "baseCostInCents",
    "output",
    "error",
    "runTags",
    "taskVersion",
    "sdkVersion",
    "cliVersion",
    "machinePreset",
    "rootTaskRunId",
    "parentTaskRunId",
    "depth",
    "idempotencyKey",
    "idempotencyKeyOptions",
    "ttl",
    "isTest",
    "concurrencyKey",
    "bulkActionGroupIds",
    "masterQueue",
    "region",
    "planType",
    "maxDurationInSeconds",
    "annotations",
    "statusReason",
    "isWarmStart",
)

NULL_EXPECTED: dict[str, Any] = {
    **FULL_EXPECTED,
    "queue_timestamp": None,
    "completed_at": None,
    "started_at": None,
    "executed_at": None,
    "delay_until": None,
    "queued_at": None,
    "expired_at": None,
    "attempt": 1,
    "schedule_id": "",
    "batch_id": "",
    "usage_duration_ms": 0,
    "cost_in_cents": 0,
    "base_cost_in_cents": 0,
    "output": {},
    "error": {"data": None},
    "error_fingerprint": "",
    "tags": [],
    "task_version": "",
    "sdk_version": "",
    "cli_version": "",
    "machine_preset": "",
    "root_run_id": "",
    "parent_run_id": "",
    "depth": 0,
    "idempotency_key": "",
    "idempotency_key_user": "",
    "idempotency_key_scope": "",
    "expiration_ttl": "",
    "is_test": 0,
    "concurrency_key": "",
    "bulk_action_group_ids": [],
    "worker_queue": "",
    "region": "",
    "plan_type": "",
    "max_duration_in_seconds": None,
    "trigger_source": "",
    "root_trigger_source": "",
    "task_kind": "",
    "is_warm_start": None,
    "external_deployment_id": "",
}


def event(kind: str = "insert", version: int = 0x16_B374D848, **changes: Any) -> ChangeEvent:
    run = full_run()
    run.update(changes)
    return ChangeEvent(kind, run, version)  # type: ignore[arg-type]


def named(row: list[Any]) -> dict[str, Any]:
    assert len(row) == len(TASK_RUN_COLUMNS)
    return dict(zip(TASK_RUN_COLUMNS, row, strict=True))


def test_columns_follow_the_mapping_files() -> None:
    mapping = reference_rows("mapping_task_runs_v2.tsv")
    sent = [row["ch_column"] for row in mapping if "not sent" not in row["rule"]]
    assert tuple(sent) == TASK_RUN_COLUMNS
    assert len(TASK_RUN_COLUMNS) == 56
    assert {"output_text", "error_text"}.isdisjoint(TASK_RUN_COLUMNS)
    payload = reference_rows("mapping_raw_task_runs_payload_v1.tsv")
    assert tuple(row["ch_column"] for row in payload) == PAYLOAD_COLUMNS


def test_expectation_tables_cover_every_column() -> None:
    assert set(FULL_EXPECTED) == set(TASK_RUN_COLUMNS)
    assert set(NULL_EXPECTED) == set(TASK_RUN_COLUMNS)
    assert set(NULLABLE_SOURCES) <= set(postgres_columns())


@pytest.mark.parametrize("column", TASK_RUN_COLUMNS)
def test_every_column_of_a_full_run(column: str) -> None:
    assert named(task_run_row(event()))[column] == FULL_EXPECTED[column]


@pytest.mark.parametrize("column", TASK_RUN_COLUMNS)
def test_every_column_when_nullable_sources_are_null(column: str) -> None:
    row = named(task_run_row(event(**dict.fromkeys(NULLABLE_SOURCES))))
    assert row[column] == NULL_EXPECTED[column]
    assert type(row[column]) is type(NULL_EXPECTED[column])


def test_deletes_are_marked() -> None:
    assert named(task_run_row(event("delete")))["_is_deleted"] == 1
    assert named(task_run_row(event("update")))["_is_deleted"] == 0


def test_fingerprinting_can_be_switched_off() -> None:
    assert named(task_run_row(event(), fingerprinting=False))["error_fingerprint"] == ""


def test_attempt_zero_stays_zero() -> None:
    assert named(task_run_row(event(attemptNumber=0)))["attempt"] == 0


@pytest.mark.parametrize(
    ("master_queue", "worker_queue"), [("main", "main"), (":x", ""), ("a:b", "a")]
)
def test_worker_queue_is_the_text_before_the_first_colon(
    master_queue: str, worker_queue: str
) -> None:
    assert named(task_run_row(event(masterQueue=master_queue)))["worker_queue"] == worker_queue


@pytest.mark.parametrize(
    ("options", "user", "scope"),
    [
        ({"key": "k"}, "k", ""),
        ({"scope": "global"}, "", "global"),
        ({"key": None, "scope": None}, "", ""),
        ({"key": 5, "scope": "weird"}, 5, "weird"),  # no validation
        ("not an object", "", ""),
        (["k"], "", ""),
    ],
)
def test_idempotency_key_options(options: Any, user: Any, scope: str) -> None:
    row = named(task_run_row(event(idempotencyKeyOptions=options)))
    assert (row["idempotency_key_user"], row["idempotency_key_scope"]) == (user, scope)


VALID_ANNOTATIONS = {"triggerSource": "api", "triggerAction": "trigger", "rootTriggerSource": "ui"}


@pytest.mark.parametrize(
    ("annotations", "expected"),
    [
        (VALID_ANNOTATIONS, ("api", "ui", "")),
        ({**VALID_ANNOTATIONS, "taskKind": "SCHEDULED"}, ("api", "ui", "SCHEDULED")),
        ({**VALID_ANNOTATIONS, "taskKind": None}, ("", "", "")),  # optional is not nullable
        ({**VALID_ANNOTATIONS, "taskKind": 3}, ("", "", "")),
        ({**VALID_ANNOTATIONS, "triggerAction": None}, ("", "", "")),
        ({"triggerSource": "api", "rootTriggerSource": "ui"}, ("", "", "")),
        ({**VALID_ANNOTATIONS, "rootTriggerSource": 1}, ("", "", "")),
        (["api"], ("", "", "")),
        ("api", ("", "", "")),
    ],
)
def test_annotation_columns_need_valid_run_annotations(
    annotations: Any, expected: tuple[str, str, str]
) -> None:
    row = named(task_run_row(event(annotations=annotations)))
    assert (row["trigger_source"], row["root_trigger_source"], row["task_kind"]) == expected


@pytest.mark.parametrize(
    ("status_reason", "annotations", "expected"),
    [
        ("EXTERNAL_DEPLOYMENT_PENDING", {"externalDeploymentId": "d-1"}, "d-1"),  # no schema
        ("EXTERNAL_DEPLOYMENT_PENDING", {"externalDeploymentId": 7}, ""),
        ("EXTERNAL_DEPLOYMENT_PENDING", {}, ""),
        ("OTHER", {"externalDeploymentId": "d-1"}, ""),
        (None, {"externalDeploymentId": "d-1"}, ""),
    ],
)
def test_external_deployment_id(status_reason: Any, annotations: Any, expected: str) -> None:
    row = named(task_run_row(event(statusReason=status_reason, annotations=annotations)))
    assert row["external_deployment_id"] == expected


@pytest.mark.parametrize(("flag", "value"), [(True, 1), (False, 0), (None, None)])
def test_is_warm_start(flag: bool | None, value: int | None) -> None:
    assert named(task_run_row(event(isWarmStart=flag)))["is_warm_start"] == value


def test_output_conversion_uses_output_type() -> None:
    row = named(task_run_row(event(output='{"a": 1}', outputType="text/plain")))
    assert row["output"] == {}
    super_json = '{"json": {"at": "2024-01-02"}, "meta": {"values": {"at": ["Date"]}}}'
    row = named(task_run_row(event(output=super_json, outputType="application/super+json")))
    assert row["output"] == {"data": {"at": "2024-01-02T00:00:00.000Z"}}


def test_error_fingerprint_needs_a_failed_status() -> None:
    row = named(task_run_row(event(status="COMPLETED_SUCCESSFULLY")))
    assert row["error_fingerprint"] == ""
    assert row["error"] == FULL_EXPECTED["error"]


def test_payload_row() -> None:
    assert payload_row(event()) == ["run-1", CREATED_MS, {"data": {"order": 7}}]
    assert payload_row(event(payloadType="application/store")) == ["run-1", CREATED_MS, {}]


@pytest.mark.parametrize(
    ("changes", "insertable"),
    [
        ({}, True),
        ({"organizationId": None}, False),
        ({"organizationId": ""}, False),
        ({"environmentType": None}, False),
        ({"environmentType": ""}, False),
    ],
)
def test_events_without_organization_or_environment_type_are_dropped(
    changes: dict[str, Any], insertable: bool
) -> None:
    assert is_insertable(event(**changes)) is insertable


def task_row(org: str, project: str, env: str, created: int, run_id: str) -> list[Any]:
    row = task_run_row(
        event(organizationId=org, projectId=project, runtimeEnvironmentId=env, id=run_id)
    )
    row[TASK_RUN_COLUMNS.index("created_at")] = created
    return row


def sort_key_columns(row: list[Any]) -> tuple[Any, ...]:
    names = ("organization_id", "project_id", "environment_id", "created_at", "run_id")
    return tuple(row[TASK_RUN_COLUMNS.index(name)] for name in names)


def test_task_rows_sort_by_the_table_order_key() -> None:
    rows = [
        task_row("o2", "p1", "e1", 1, "r1"),
        task_row("o1", "p2", "e1", 1, "r1"),
        task_row("o1", "p1", "e2", 1, "r1"),
        task_row("o1", "p1", "e1", 10, "r1"),
        task_row("o1", "p1", "e1", 9, "r2"),  # created_at compares as a number: 9 < 10
        task_row("o1", "p1", "e1", 9, "r1"),
    ]
    sort_task_rows(rows)
    assert [sort_key_columns(row) for row in rows] == [
        ("o1", "p1", "e1", 9, "r1"),
        ("o1", "p1", "e1", 9, "r2"),
        ("o1", "p1", "e1", 10, "r1"),
        ("o1", "p1", "e2", 1, "r1"),
        ("o1", "p2", "e1", 1, "r1"),
        ("o2", "p1", "e1", 1, "r1"),
    ]


def test_strings_sort_in_utf16_code_unit_order() -> None:
    # U+10000 is the surrogate pair D800 DC00, below U+FFFF in JavaScript's comparison
    # (Python's code point order says the opposite).
    rows = [task_row("o\uffff", "p", "e", 1, "r"), task_row("o\U00010000", "p", "e", 1, "r")]
    sort_task_rows(rows)
    assert [sort_key_columns(row)[0] for row in rows] == ["o\U00010000", "o\uffff"]
    payloads = [["r\uffff", 1, {}], ["r\U00010000", 1, {}], ["a", 2, {}]]
    sort_payload_rows(payloads)
    assert [row[0] for row in payloads] == ["a", "r\U00010000", "r\uffff"]
