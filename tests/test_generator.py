"""Shape of the generated TaskRun rows and of their status transitions."""

import csv
import json
import random
import re
from datetime import datetime
from pathlib import Path

import pytest

import rrlab
from rrlab.infra.pg_setup import Fixtures
from rrlab.producer.generator import (
    COMPLETION_COLUMNS,
    EXECUTING,
    EXECUTING_COLUMNS,
    FAILED_STATUSES,
    INSERT_COLUMNS,
    JSONB_COLUMNS,
    NEXT_STATUSES,
    PENDING,
    QUEUES,
    SUPER_JSON_TYPE,
    TASK_IDENTIFIERS,
    WORKER_QUEUES,
    RunGenerator,
)

OWNER = Fixtures("org_fixture", "org", "proj_fixture", "proj", "env_fixture", "prod", "PRODUCTION")
NOW = datetime(2026, 3, 1, 12, 0, 0, 123000)
TASKRUN_TSV = Path(rrlab.__file__).parent / "reference" / "taskrun_postgres.tsv"


def taskrun_columns() -> dict[str, dict[str, str]]:
    with TASKRUN_TSV.open(encoding="utf-8") as tsv:
        return {row["column"]: row for row in csv.DictReader(tsv, delimiter="\t")}


def generate(count: int = 500, seed: int = 7, **options) -> list[dict]:
    generator = RunGenerator(random.Random(seed), OWNER, **options)
    return [dict(zip(INSERT_COLUMNS, generator.new_run(NOW), strict=True)) for _ in range(count)]


def test_columns_are_taskrun_columns_and_cover_every_not_null_one():
    columns = taskrun_columns()
    written = set(INSERT_COLUMNS) | set(EXECUTING_COLUMNS) | set(COMPLETION_COLUMNS)
    assert written <= set(columns)
    not_null = {name for name, row in columns.items() if row["nullable"] == "NO"}
    assert not_null <= set(INSERT_COLUMNS)
    assert len(set(INSERT_COLUMNS)) == len(INSERT_COLUMNS)
    assert {c for c in written if columns[c]["pg_type"] == "jsonb"} == JSONB_COLUMNS


def test_every_not_null_column_has_a_value_and_jsonb_values_are_json():
    columns = taskrun_columns()
    for run in generate():
        for name, value in run.items():
            if columns[name]["nullable"] == "NO":
                assert value is not None, name
            if name in JSONB_COLUMNS and value is not None:
                json.loads(value)


def test_ids_are_unique_cuids_and_friendly_ids_carry_the_run_number():
    runs = generate(2_000)
    assert len({r["id"] for r in runs}) == len(runs)
    assert len({r["friendlyId"] for r in runs}) == len(runs)
    for number, run in enumerate(runs, start=1):
        assert re.fullmatch(r"c[0-9a-z]{24}", run["id"])
        assert re.fullmatch(rf"run_{number}_[0-9a-z]{{12}}", run["friendlyId"])
        assert run["number"] == number
        assert re.fullmatch(r"[0-9a-f]{32}", run["traceId"])
        assert re.fullmatch(r"[0-9a-f]{16}", run["spanId"])
        assert run["traceId"] in json.loads(run["traceContext"])["traceparent"]


def test_runs_belong_to_the_fixtures_and_spread_over_tasks_and_queues():
    runs = generate(2_000)
    assert {r["organizationId"] for r in runs} == {"org_fixture"}
    assert {r["projectId"] for r in runs} == {"proj_fixture"}
    assert {r["runtimeEnvironmentId"] for r in runs} == {"env_fixture"}
    assert {r["environmentType"] for r in runs} == {"PRODUCTION"}
    assert {r["taskIdentifier"] for r in runs} == set(TASK_IDENTIFIERS)
    assert len(TASK_IDENTIFIERS) == 10
    assert {r["queue"] for r in runs} == set(QUEUES) and len(QUEUES) == 4
    assert {r["masterQueue"] for r in runs} == set(WORKER_QUEUES) and len(WORKER_QUEUES) == 4
    assert {r["status"] for r in runs} == {PENDING}
    assert all(r["createdAt"] == r["updatedAt"] == NOW for r in runs)
    # the optional columns are sometimes set, sometimes not
    for optional in ("idempotencyKey", "concurrencyKey", "annotations", "idempotencyKeyOptions"):
        share = sum(r[optional] is not None for r in runs) / len(runs)
        assert 0.05 < share < 0.95, optional
    keyed = [r for r in runs if r["idempotencyKey"] is not None]
    assert all(r["idempotencyKeyOptions"] is not None for r in keyed)


@pytest.mark.parametrize("size_kb", [0.5, 1, 10, 100])
def test_payloads_are_json_of_the_requested_size(size_kb):
    for run in generate(50, payload_size_kb=size_kb):
        assert run["payloadType"] == "application/json"
        assert isinstance(json.loads(run["payload"]), dict)
        assert len(run["payload"].encode()) == pytest.approx(size_kb * 1024, rel=0.01)


def test_a_share_of_payloads_are_superjson_envelopes():
    runs = generate(2_000, super_json_ratio=0.3)
    superjson = [r for r in runs if r["payloadType"] == SUPER_JSON_TYPE]
    assert 0.27 < len(superjson) / len(runs) < 0.33
    for run in superjson:
        envelope = json.loads(run["payload"])
        assert set(envelope) == {"json", "meta"}
        for path, (kind,) in envelope["meta"]["values"].items():
            assert kind == "Date"
            datetime.fromisoformat(envelope["json"][path])
        assert len(run["payload"].encode()) == pytest.approx(1024, rel=0.01)
    assert all(r["payloadType"] == "application/json" for r in generate(200))


def test_the_same_seed_makes_the_same_runs():
    assert generate(100, seed=3) == generate(100, seed=3)
    assert generate(100, seed=3) != generate(100, seed=4)


def complete(count: int, error_rate: float, seed: int = 11):
    generator = RunGenerator(random.Random(seed), OWNER, error_rate=error_rate)
    return [generator.transition(f"c{i}", EXECUTING, NOW) for i in range(count)]


def test_a_pending_run_starts_executing():
    generator = RunGenerator(random.Random(1), OWNER)
    update = generator.transition("crun", PENDING, NOW)
    values = dict(zip(update.columns, update.values, strict=True))
    assert update.status == EXECUTING == values["status"]
    assert update.status in NEXT_STATUSES[PENDING]
    assert values["startedAt"] == values["executedAt"] == values["updatedAt"] == NOW
    assert values["attemptNumber"] == 1


def test_completions_carry_an_error_object_only_when_the_run_failed():
    updates = complete(2_000, error_rate=0.1)
    failed = 0
    for update in updates:
        values = dict(zip(update.columns, update.values, strict=True))
        assert update.status in NEXT_STATUSES[EXECUTING]
        assert values["status"] == update.status
        assert values["completedAt"] == values["updatedAt"] == NOW
        assert values["usageDurationMs"] > 0 and values["costInCents"] > 0
        if update.status in FAILED_STATUSES:
            failed += 1
            error = json.loads(values["error"])
            assert isinstance(error, dict) and error["type"] and error["message"]
            assert values["output"] is None
        else:
            assert values["error"] is None
            assert json.loads(values["output"])["ok"] is True
    assert 0.08 < failed / len(updates) < 0.12
    assert {u.status for u in updates} >= set(FAILED_STATUSES)


def test_error_messages_vary_between_runs():
    messages = [json.loads(u.values[-1])["message"] for u in complete(200, error_rate=1.0)]
    assert len(set(messages)) > 150


def test_error_rate_bounds():
    assert all(u.values[-1] is None for u in complete(300, error_rate=0.0))
    assert all(u.status in FAILED_STATUSES for u in complete(300, error_rate=1.0))


def test_a_finished_run_has_no_further_transition():
    generator = RunGenerator(random.Random(1), OWNER)
    with pytest.raises(ValueError, match="no further transition"):
        generator.transition("crun", "COMPLETED_SUCCESSFULLY", NOW)
