"""Seeded generation of TaskRun rows and status transitions in the upstream generator's shape.

Everything here is a pure function of a ``random.Random`` and the times passed in, so a seed
reproduces the exact rows; the writer decides when and how they reach PostgreSQL.
"""

from __future__ import annotations

import random
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol, TypeVar

import orjson

TASK_IDENTIFIERS = (
    "send-welcome-email",
    "process-order",
    "generate-report",
    "sync-crm-contacts",
    "resize-image",
    "transcribe-audio",
    "charge-subscription",
    "index-document",
    "notify-slack",
    "cleanup-stale-sessions",
)
QUEUES = ("task/default", "emails", "media-processing", "billing")
WORKER_QUEUES = ("main", "us-east-1", "eu-central-1", "ap-southeast-1")
MACHINE_PRESETS = ("micro", "small-1x", "small-2x", "medium-1x")
# cents per millisecond of compute, by machine preset (the shape of upstream's price table)
_CENTS_PER_MS = {
    "micro": 0.0000169,
    "small-1x": 0.0000338,
    "small-2x": 0.0000675,
    "medium-1x": 0.000085,
}


def _json_text(value: Any) -> str:
    """Compact JSON text (orjson: ~15× the stdlib's json.dumps, whose payloads were ~20% of a
    producer's CPU)."""
    return orjson.dumps(value).decode()


_TAGS = ("user:alice", "user:bob", "env:prod", "priority:high", "batch:nightly", "tenant:acme")
_ANNOTATIONS = _json_text(
    {
        "triggerSource": "api",
        "triggerAction": "trigger",
        "rootTriggerSource": "api",
        "taskKind": "STANDARD",
    }
)
_RETRY_CONFIG = _json_text(
    {"maxAttempts": 3, "factor": 2, "minTimeoutInMs": 1000, "maxTimeoutInMs": 10000}
)
_PLAN_TYPES = ("free", "hobby", "pro", "enterprise")
_REGIONS = ("us-east-1", "eu-central-1")

PENDING = "PENDING"
EXECUTING = "EXECUTING"
COMPLETED_SUCCESSFULLY = "COMPLETED_SUCCESSFULLY"
FAILED_STATUSES = ("COMPLETED_WITH_ERRORS", "SYSTEM_FAILURE", "CRASHED")
_FAILED_WEIGHTS = (0.7, 0.15, 0.15)
TERMINAL_STATUSES = (COMPLETED_SUCCESSFULLY, *FAILED_STATUSES)
# the only transitions the producer makes; terminal runs are never touched again
NEXT_STATUSES = {PENDING: (EXECUTING,), EXECUTING: TERMINAL_STATUSES}

JSON_TYPE = "application/json"
SUPER_JSON_TYPE = "application/super+json"

# Columns set by an insert, in the order of the tuples new_run() returns. Every NOT NULL
# column of TaskRun is here, even those with a database default, as Prisma sends them all.
INSERT_COLUMNS = (
    "id",
    "friendlyId",
    "number",
    "taskIdentifier",
    "payload",
    "payloadType",
    "runtimeEnvironmentId",
    "projectId",
    "organizationId",
    "environmentType",
    "createdAt",
    "updatedAt",
    "status",
    "traceId",
    "spanId",
    "traceContext",
    "queue",
    "masterQueue",
    "isTest",
    "runTags",
    "idempotencyKey",
    "idempotencyKeyExpiresAt",
    "idempotencyKeyOptions",
    "concurrencyKey",
    "machinePreset",
    "taskVersion",
    "sdkVersion",
    "cliVersion",
    "queuedAt",
    "queueTimestamp",
    "maxAttempts",
    "maxDurationInSeconds",
    "ttl",
    "engine",
    "priorityMs",
    "depth",
    "usageDurationMs",
    "costInCents",
    "baseCostInCents",
    "resumeParentOnCompletion",
    "metadataType",
    "outputType",
    "seedMetadataType",
    "metadataVersion",
    "taskEventStore",
    "realtimeStreamsVersion",
    "realtimeStreams",
    "bulkActionGroupIds",
    "annotations",
    "lockedRetryConfig",
    "planType",
    "region",
)
# jsonb columns among INSERT_COLUMNS and the update columns; values are JSON text
JSONB_COLUMNS = frozenset(
    {"traceContext", "idempotencyKeyOptions", "annotations", "lockedRetryConfig", "error"}
)
EXECUTING_COLUMNS = (
    "status",
    "updatedAt",
    "startedAt",
    "executedAt",
    "attemptNumber",
    "isWarmStart",
)
COMPLETION_COLUMNS = (
    "status",
    "updatedAt",
    "completedAt",
    "usageDurationMs",
    "costInCents",
    "baseCostInCents",
    "output",
    "error",
)

_ID_CHARS = bytes(ord((string.digits + string.ascii_lowercase)[i % 36]) for i in range(256))
# fmt: off
_WORDS = (
    "order", "customer", "invoice", "shipment", "payment", "refund", "webhook", "retry",
    "queue", "batch", "report", "export", "import", "email", "image", "audio", "video",
    "token", "session", "account", "project", "region", "deploy", "build",
)
# fmt: on


T = TypeVar("T")


class RunOwner(Protocol):
    """The organization, project and environment fixtures every generated run belongs to.

    :class:`rrlab.infra.pg_setup.Fixtures` is one; the generator only reads these ids.
    """

    @property
    def organization_id(self) -> str: ...
    @property
    def project_id(self) -> str: ...
    @property
    def environment_id(self) -> str: ...
    @property
    def environment_type(self) -> str: ...


@dataclass(frozen=True)
class RunUpdate:
    """One status transition of one run: the new status and the columns it sets."""

    run_id: str
    status: str
    columns: tuple[str, ...]
    values: tuple[Any, ...]


def _pick(draw: Callable[[], float], options: Sequence[T]) -> T:
    """``Random.choice`` by one ``random()`` draw: a quarter of its cost (a run makes a
    dozen choices and integers; ``new_run`` 10.6 → 9.2 µs)."""
    return options[int(draw() * len(options))]


def _between(draw: Callable[[], float], low: int, high: int) -> int:
    """``Random.randint(low, high)`` by one ``random()`` draw (for these small ranges the
    bias of a 53-bit draw is far below anything a load test could see)."""
    return low + int(draw() * (high - low + 1))


def random_id(rng: random.Random, length: int) -> str:
    """``length`` random lower-case letters and digits, as in cuids.

    Random bytes mapped through a table: all in C, so ids cost little per row. The slight
    bias (256 is not a multiple of 36) still leaves over 5 bits of entropy per character.
    """
    return rng.randbytes(length).translate(_ID_CHARS).decode()


class RunGenerator:
    """Makes TaskRun inserts and status transitions for one producer worker."""

    def __init__(
        self,
        rng: random.Random,
        owner: RunOwner,
        *,
        payload_size_kb: float = 1.0,
        super_json_ratio: float = 0.0,
        error_rate: float = 0.05,
    ) -> None:
        self._rng = rng
        self._owner = owner
        self._payload_bytes = round(payload_size_kb * 1024)
        self._super_json_ratio = super_json_ratio
        self._error_rate = error_rate
        self._number = 0
        # One seeded text, longer than any padding, to cut payload padding from: cheap per
        # row, still varied. Words average over 5 characters, so n/2 words exceed n bytes.
        words = [rng.choice(_WORDS) for _ in range(8_192 + self._payload_bytes // 2)]
        self._filler = " ".join(words)

    def new_run(self, now: datetime) -> tuple[Any, ...]:
        """A PENDING run created at ``now`` (naive UTC), values in INSERT_COLUMNS order."""
        rng = self._rng
        draw = rng.random
        self._number += 1
        task = _pick(draw, TASK_IDENTIFIERS)
        trace_id = f"{rng.getrandbits(128):032x}"
        span_id = f"{rng.getrandbits(64):016x}"
        payload_type = SUPER_JSON_TYPE if rng.random() < self._super_json_ratio else JSON_TYPE
        idempotent = rng.random() < 0.2
        user_key = f"{task}-{random_id(rng, 10)}" if idempotent else None
        preset = _pick(draw, MACHINE_PRESETS)
        return (
            "c" + random_id(rng, 24),
            f"run_{self._number}_{random_id(rng, 12)}",
            self._number,
            task,
            self._payload(payload_type, now),
            payload_type,
            self._owner.environment_id,
            self._owner.project_id,
            self._owner.organization_id,
            self._owner.environment_type,
            now,
            now,
            PENDING,
            trace_id,
            span_id,
            f'{{"traceparent": "00-{trace_id}-{span_id}-01"}}',
            _pick(draw, QUEUES),
            _pick(draw, WORKER_QUEUES),
            rng.random() < 0.05,
            rng.sample(_TAGS, _between(draw, 0, 3)),
            f"{rng.getrandbits(256):064x}" if idempotent else None,
            now + timedelta(days=30) if idempotent else None,
            _json_text({"key": user_key, "scope": _pick(draw, ("run", "attempt", "global"))})
            if idempotent
            else None,
            f"user-{_between(draw, 1, 500)}" if rng.random() < 0.15 else None,
            preset,
            f"20250{_between(draw, 1, 9)}01.{_between(draw, 1, 40)}",
            "4.0.4",
            "4.0.4",
            now,
            now,
            3,
            3600 if rng.random() < 0.3 else None,
            "10m" if rng.random() < 0.5 else None,
            "V2",
            0,
            0,
            0,
            0.0,
            0.0,
            False,
            JSON_TYPE,
            JSON_TYPE,
            JSON_TYPE,
            1,
            "taskEvent",
            "v1",
            [],
            [],
            _ANNOTATIONS if rng.random() < 0.5 else None,
            _RETRY_CONFIG,
            _pick(draw, _PLAN_TYPES),
            _pick(draw, _REGIONS),
        )

    def transition(self, run_id: str, status: str, now: datetime) -> RunUpdate:
        """The next real status change of a run currently in ``status`` (PENDING or EXECUTING)."""
        rng = self._rng
        if status == PENDING:
            return RunUpdate(
                run_id, EXECUTING, EXECUTING_COLUMNS, (EXECUTING, now, now, now, 1, False)
            )
        if status != EXECUTING:
            raise ValueError(f"run {run_id} in status {status} has no further transition")
        usage_ms = min(max(1, int(rng.lognormvariate(7.5, 1.2))), 900_000)
        # the pool remembers only a run's status, so the price is that of any preset
        cost = round(usage_ms * _CENTS_PER_MS[rng.choice(MACHINE_PRESETS)], 6)
        if rng.random() < self._error_rate:
            new_status = rng.choices(FAILED_STATUSES, _FAILED_WEIGHTS)[0]
            output, error = None, _json_text(self._error(new_status))
        else:
            new_status = COMPLETED_SUCCESSFULLY
            output = _json_text({"ok": True, "processed": rng.randint(1, 5_000), "ms": usage_ms})
            error = None
        values = (new_status, now, now, usage_ms, cost, 0.0025, output, error)
        return RunUpdate(run_id, new_status, COMPLETION_COLUMNS, values)

    def _payload(self, payload_type: str, now: datetime) -> str:
        rng = self._rng
        draw = rng.random
        body: dict[str, Any] = {
            "orderId": f"ord_{random_id(rng, 14)}",
            "customerId": f"cus_{random_id(rng, 14)}",
            "amount": _between(draw, 100, 500_000),
            "currency": _pick(draw, ("usd", "eur", "gbp")),
            "items": [{"sku": f"SKU-{_between(draw, 1000, 9999)}", "qty": _between(draw, 1, 5)}],
            "notes": "",
        }
        if payload_type == SUPER_JSON_TYPE:
            body["scheduledFor"] = now.isoformat(timespec="milliseconds") + "Z"
            document: dict[str, Any] = {
                "json": body,
                "meta": {"values": {"scheduledFor": ["Date"]}},
            }
        else:
            document = body
        text = _json_text(document)
        # filler is plain ASCII words, so n characters of notes add exactly n bytes of JSON;
        # splicing it into the one empty "notes" spares serializing the document twice
        missing = self._payload_bytes - len(text)
        if missing <= 0:
            return text
        start = int(draw() * (len(self._filler) - missing))
        notes = self._filler[start : start + missing]
        return text.replace('"notes":""', f'"notes":"{notes}"', 1)

    def _error(self, status: str) -> dict[str, Any]:
        rng = self._rng
        if status == "COMPLETED_WITH_ERRORS":
            order = rng.randint(10_000, 99_999)
            return {
                "type": "BUILT_IN_ERROR",
                "name": rng.choice(("Error", "TypeError")),
                "message": f"Failed to process order {order} for customer cus_{random_id(rng, 14)}",
                "stackTrace": (
                    f"Error: Failed to process order {order}\n"
                    f"    at processOrder (/app/src/trigger/orders.ts:{rng.randint(10, 300)}:13)\n"
                    "    at run (/app/src/trigger/orders.ts:12:20)"
                ),
            }
        if status == "SYSTEM_FAILURE":
            return {
                "type": "INTERNAL_ERROR",
                "code": "TASK_RUN_HEARTBEAT_TIMEOUT",
                "message": f"Run heartbeat timed out after {rng.randint(30, 600)} seconds",
            }
        return {
            "type": "INTERNAL_ERROR",
            "code": "TASK_PROCESS_EXITED_WITH_NON_ZERO_CODE",
            "message": f"Process {rng.randint(100, 65_535)} exited with code 137 (out of memory)",
        }
