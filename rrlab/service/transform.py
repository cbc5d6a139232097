"""Pure functions turning a TaskRun change into ClickHouse rows, as the mapping files say.

Rows are lists in :data:`TASK_RUN_COLUMNS` / :data:`PAYLOAD_COLUMNS` order. Timestamps are
integer epoch milliseconds (the sink must make ClickHouse read them as milliseconds);
``_version`` is the int (the sink chooses how to send it); JSON cells are dicts as
:mod:`rrlab.service.json_values` describes.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from operator import itemgetter
from typing import Any, Protocol

from rrlab.service import _task_row
from rrlab.service.events import ChangeEvent
from rrlab.service.fingerprint import FINGERPRINTED_STATUSES, run_error_fingerprint
from rrlab.service.json_values import json_column, utf16_code_units

TASK_RUN_COLUMNS: tuple[str, ...] = (
    "environment_id",
    "organization_id",
    "project_id",
    "run_id",
    "updated_at",
    "created_at",
    "queue_timestamp",
    "status",
    "environment_type",
    "friendly_id",
    "attempt",
    "engine",
    "task_identifier",
    "queue",
    "schedule_id",
    "batch_id",
    "completed_at",
    "started_at",
    "executed_at",
    "delay_until",
    "queued_at",
    "expired_at",
    "usage_duration_ms",
    "cost_in_cents",
    "base_cost_in_cents",
    "output",
    "error",
    "error_fingerprint",
    "tags",
    "task_version",
    "sdk_version",
    "cli_version",
    "machine_preset",
    "root_run_id",
    "parent_run_id",
    "depth",
    "span_id",
    "trace_id",
    "idempotency_key",
    "idempotency_key_user",
    "idempotency_key_scope",
    "expiration_ttl",
    "is_test",
    "_version",
    "_is_deleted",
    "concurrency_key",
    "bulk_action_group_ids",
    "worker_queue",
    "region",
    "plan_type",
    "max_duration_in_seconds",
    "trigger_source",
    "root_trigger_source",
    "task_kind",
    "is_warm_start",
    "external_deployment_id",
)
"""task_runs_v2 insert order (mapping_task_runs_v2.tsv without the 2 MATERIALIZED columns)."""

PAYLOAD_COLUMNS: tuple[str, ...] = ("run_id", "created_at", "payload")
"""raw_task_runs_payload_v1 insert order."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)
_EXTERNAL_DEPLOYMENT_PENDING = "EXTERNAL_DEPLOYMENT_PENDING"
_ASTRAL = re.compile("[\U00010000-\U0010ffff]")


def epoch_ms(value: datetime) -> int:
    """A timezone-aware timestamp as integer epoch milliseconds (exact, no float rounding)."""
    return (value - _EPOCH) // _ONE_MS


def is_insertable(event: ChangeEvent) -> bool:
    """False for events the upstream drops before insert: no organizationId or environmentType."""
    run = event.run
    return bool(run.get("organizationId")) and bool(run.get("environmentType"))


def _annotation_sources(annotations: Any) -> tuple[str, str, str]:
    """(trigger_source, root_trigger_source, task_kind) when annotations validate as
    RunAnnotations (three required strings, taskKind an optional string), else empty."""
    if not isinstance(annotations, dict):
        return "", "", ""
    trigger_source = annotations.get("triggerSource")
    root_trigger_source = annotations.get("rootTriggerSource")
    task_kind = annotations.get("taskKind", "")
    if (
        type(trigger_source) is str
        and type(annotations.get("triggerAction")) is str
        and type(root_trigger_source) is str
        and type(task_kind) is str
    ):
        return trigger_source, root_trigger_source, task_kind
    return "", "", ""


def _external_deployment_id(status_reason: Any, annotations: Any) -> str:
    """annotations.externalDeploymentId while the run waits for an external deployment."""
    if status_reason != _EXTERNAL_DEPLOYMENT_PENDING or not isinstance(annotations, dict):
        return ""
    deployment_id = annotations.get("externalDeploymentId")
    return deployment_id if type(deployment_id) is str else ""


class _TaskRunRow(Protocol):
    def __call__(self, event: ChangeEvent, *, fingerprinting: bool = True) -> list[Any]: ...


# The Python helpers the C row builders call for the cells they do not compute themselves.
_task_row.bind(
    json_column,
    run_error_fingerprint,
    FINGERPRINTED_STATUSES,
    _annotation_sources,
    _external_deployment_id,
)
task_run_row: _TaskRunRow = _task_row.task_run_row
"""``task_run_row(event, *, fingerprinting=True)``: the task_runs_v2 row of an event, in
:data:`TASK_RUN_COLUMNS` order. In C (``_task_row.c``; one call per replicated row, it cost
~19% of the consumer's CPU in Python); tests/fixtures/task_run_row_oracle.py is the Python
statement of it that the tests hold it to, values and errors alike."""


payload_row: Callable[[ChangeEvent], list[Any]] = _task_row.payload_row
"""``payload_row(event)``: the raw_task_runs_payload_v1 row of an insert event, in
:data:`PAYLOAD_COLUMNS` order. In C too (``_task_row.c``), held to
tests/fixtures/task_run_row_oracle.py likewise."""


SortKey = tuple[Any, ...] | list[Any]
"""The values a sort compares, in order (strings compared in JavaScript order)."""


def _utf16_key(key: Callable[[Any], SortKey]) -> Callable[[Any], tuple[Any, ...]]:
    def exact(item: Any) -> tuple[Any, ...]:
        return tuple(utf16_code_units(v) if type(v) is str else v for v in key(item))

    return exact


def _has_astral(keys: list[SortKey], text_positions: tuple[int, ...]) -> bool:
    for i in text_positions:
        text = "".join(map(itemgetter(i), keys))
        # isascii() reads a flag of the string: the usual all-ASCII ids skip the regex scan
        if not text.isascii() and _ASTRAL.search(text):
            return True
    return False


def _sort(items: list[Any], key: Callable[[Any], SortKey], text_positions: tuple[int, ...]) -> None:
    # JavaScript compares strings by UTF-16 code unit, Python by code point; the two orders
    # differ only when a character beyond U+FFFF is involved, so the fast C sort is exact
    # for everything else (including all ASCII ids).
    exact = _has_astral(list(map(key, items)), text_positions)
    items.sort(key=_utf16_key(key) if exact else key)


_TASK_SORT_COLUMNS = ("organization_id", "project_id", "environment_id", "created_at", "run_id")
_TASK_SORT_TEXT = tuple(i for i, c in enumerate(_TASK_SORT_COLUMNS) if c != "created_at")
TASK_SORT_RUN_ID = _TASK_SORT_COLUMNS.index("run_id")
"""run_id's position in a :data:`task_sort_key` tuple."""

task_sort_key: Callable[[list[Any]], tuple[Any, ...]] = itemgetter(
    *map(TASK_RUN_COLUMNS.index, _TASK_SORT_COLUMNS)
)
"""A task_runs_v2 row's sort key: (organization_id, project_id, environment_id, created_at,
run_id), the table's ORDER BY."""

_payload_sort_key = itemgetter(slice(0, 1))  # [run_id]: a sequence, like every sort key


def sort_task_rows(items: list[Any], key: Callable[[Any], SortKey] = task_sort_key) -> None:
    """Sort in place (stably) by :data:`task_sort_key`, strings in JavaScript (UTF-16 code
    unit) order. ``items`` are task_runs_v2 rows, or anything ``key`` maps to a row's key."""
    _sort(items, key, _TASK_SORT_TEXT)


def sort_payload_rows(items: list[Any], key: Callable[[Any], SortKey] = _payload_sort_key) -> None:
    """Sort in place (stably) by run_id, in JavaScript string order. ``items`` are payload
    rows, or anything ``key`` maps to a one-element sequence of the run id."""
    _sort(items, key, (0,))
