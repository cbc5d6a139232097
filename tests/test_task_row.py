"""transform.task_run_row and payload_row (C, rrlab/service/_task_row.c) against their Python
statements, the oracles: same cells, same types, same errors, the run read in the same order,
for generated runs of every shape (absent, None, falsy and odd values, datetimes of every
kind)."""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta, timezone, tzinfo
from types import SimpleNamespace
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from rrlab.service.events import ChangeEvent
from rrlab.service.fingerprint import FINGERPRINTED_STATUSES
from rrlab.service.transform import PAYLOAD_COLUMNS, TASK_RUN_COLUMNS, payload_row, task_run_row
from tests.fixtures.task_run_row_oracle import oracle_payload_row, oracle_task_run_row
from tests.test_transform import full_run

ABSENT = object()
"""A generated value meaning: the key is not in the run."""

REQUIRED_KEYS = (
    "runtimeEnvironmentId", "organizationId", "projectId", "id", "updatedAt", "createdAt",
    "status", "environmentType", "friendlyId", "engine", "taskIdentifier", "queue", "spanId",
    "traceId", "payload", "payloadType",
)  # fmt: skip
DATETIME_KEYS = (
    "updatedAt", "createdAt", "queueTimestamp", "completedAt", "startedAt", "executedAt",
    "delayUntil", "queuedAt", "expiredAt",
)  # fmt: skip


class Text(str):
    pass


class Queue(str):
    def partition(self, separator: str) -> tuple[str, str, str]:  # type: ignore[override]
        return ("overridden", separator, "")


class Moment(datetime):
    pass


class Table(dict):
    pass


class Defaulting(dict):
    """run[key] of an absent key is the key itself, not a KeyError."""

    def __missing__(self, key: str) -> str:
        return key


class BadBool:
    def __bool__(self) -> bool:
        raise ValueError("no truth value")


class BadEquality:
    def __eq__(self, other: object) -> bool:
        raise ArithmeticError("no equality")

    def __ne__(self, other: object) -> bool:
        raise LookupError("no inequality")

    __hash__ = object.__hash__


class OddZone(tzinfo):
    """A zone whose offset cannot be read."""

    def utcoffset(self, moment: datetime | None) -> timedelta:
        raise OverflowError("no offset")


PLUS_5 = timezone(timedelta(hours=5, minutes=30))
BERLIN = ZoneInfo("Europe/Berlin")


def boundary_datetimes() -> Iterator[datetime]:
    """Exact UTC datetimes around the epoch, across the range, and at its ends."""
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    for us in (0, 1, 999, 1000, 1001, 1999, 500_000, 999_999, 86_400_000_000):
        yield epoch + timedelta(microseconds=us)
        yield epoch - timedelta(microseconds=us)
    yield datetime.min.replace(tzinfo=UTC)
    yield datetime.max.replace(tzinfo=UTC)
    yield datetime(1, 1, 1, 0, 0, 0, 1, tzinfo=UTC)
    yield datetime(9999, 12, 31, 23, 59, 59, 998_999, tzinfo=UTC)
    for year in (1, 4, 99, 100, 399, 400, 1600, 1900, 1969, 2000, 2024, 2100, 9999):
        for month, day in ((1, 1), (2, 28), (3, 1), (12, 31)):
            yield datetime(year, month, day, 23, 59, 59, 999_999, tzinfo=UTC)
        if year % 4 == 0 and (year % 100 != 0 or year % 400 == 0):
            yield datetime(year, 2, 29, 12, tzinfo=UTC)


def random_datetime(rng: random.Random, days: int = 0) -> datetime:
    """A UTC datetime from year 1 to 9999, ``days`` away from either end at least."""
    seconds = rng.randint(-62_135_596_800 + days * 86_400, 253_402_300_799 - days * 86_400)
    moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=seconds)
    return moment.replace(microsecond=rng.randrange(1_000_000))


def odd_datetime(rng: random.Random) -> Any:
    """A datetime-ish value other than a plain UTC datetime: all but the first take Python's
    operators in C."""
    moment = random_datetime(rng, days=2)  # room for the zone offsets
    return rng.choice(
        [
            moment.replace(fold=1),  # UTC: the C computation, which ignores fold as Python does
            moment.replace(tzinfo=None),  # naive: TypeError
            moment.astimezone(PLUS_5),
            moment.replace(tzinfo=BERLIN, fold=rng.randint(0, 1)),
            moment.replace(tzinfo=OddZone()),
            Moment(2024, 5, 6, 7, 8, 9, 10, tzinfo=UTC),  # a subclass
            date(2024, 5, 6),
            timedelta(days=3),
            "2024-05-06T07:08:09Z",
            0,
            None,
        ]
    )


def odd_value(rng: random.Random) -> Any:
    return rng.choice(
        [
            None, "", 0, 0.0, -0.0, False, True, [], {}, (), "x", Text(""), Text("t:u"), 7, -3,
            2.5, math.nan, ["a", 1], {"k": 1}, b"a:b", BadBool(), BadEquality(), Table(),
            datetime(2020, 1, 1, tzinfo=UTC),
        ]
    )  # fmt: skip


def pick(rng: random.Random, chaos: float, usual: list[Any], odd: list[Any]) -> Any:
    """One of ``usual``, or with probability ``chaos`` one of ``odd``."""
    return rng.choice(odd if rng.random() < chaos else usual)


def status_value(rng: random.Random, chaos: float) -> Any:
    statuses = sorted(FINGERPRINTED_STATUSES) + ["PENDING", "EXECUTING", "COMPLETED_SUCCESSFULLY"]
    return pick(rng, chaos, statuses, [Text("CRASHED"), Text("PENDING"), ["CRASHED"], None, 3])


def error_value(rng: random.Random) -> Any:
    return rng.choice(
        [
            None,
            {"type": "BUILT_IN_ERROR", "message": "run_abc123 failed at /a/b/c.ts:1:2"},
            {"name": "TypeError", "message": "x is undefined", "stack": "at f (/x/y.js:3:4)"},
            {"raw": "boom"},
            {},
            "a string error",
            [1, 2],
        ]
    )


def output_pair(rng: random.Random, chaos: float) -> tuple[Any, Any]:
    super_json = '{"json": {"at": "2024-01-02"}, "meta": {"values": {"at": ["Date"]}}}'
    return pick(
        rng,
        chaos,
        [
            (None, None),
            ("", "application/json"),
            ('{"ok": true, "n": 2.0}', "application/json"),
            ("[1, 2", "application/json"),
            (super_json, "application/super+json"),
            ('{"a": 1}', "text/plain"),
            ('{"a": 1}', None),
        ],
        [(5, "application/json"), (BadBool(), "application/json")],  # json_column raises
    )


def annotations_value(rng: random.Random) -> Any:
    fields = {
        "triggerSource": ["api", "", None, 1, Text("api"), ABSENT],
        "triggerAction": ["trigger", None, ABSENT, Text("t")],
        "rootTriggerSource": ["schedule", None, 2, ABSENT],
        "taskKind": ["AGENT", "", None, 3, ABSENT],
        "externalDeploymentId": ["dep-9", "", 7, None, Text("dep"), ABSENT],
    }
    chosen = {key: rng.choice(values) for key, values in fields.items()}
    annotations = {key: value for key, value in chosen.items() if value is not ABSENT}
    return rng.choice(
        [annotations] * 6 + [Table(annotations), None, [annotations], "api", 0, False, {}]
    )


def key_options_value(rng: random.Random) -> Any:
    options = {
        key: value
        for key, value in (
            ("key", rng.choice(["user-key", "", None, 5, ABSENT])),
            ("scope", rng.choice(["run", "attempt", "global", None, [], ABSENT])),
        )
        if value is not ABSENT
    }
    return rng.choice([options] * 4 + [Table(options), None, "k", ["k"], 0])


def master_queue_value(rng: random.Random, chaos: float) -> Any:
    usual = ["main", "", ":x", "a:b:c", "us-east-1:shard-7", "ü:ß", "🙂:x", "x:", None]
    return pick(rng, chaos, usual, [Text("t:u"), Text("tu"), Queue("a:b"), 3, b"a:b", ["a:b"]])


def random_run(rng: random.Random, chaos: float) -> dict[str, Any]:
    """A TaskRun change: mostly realistic values, each replaced by an odd one (or left out)
    with probability ``chaos``; required keys and datetimes are spared a little more."""
    run = full_run()
    for key in DATETIME_KEYS:
        run[key] = rng.choice([random_datetime(rng), rng.choice(list(boundary_datetimes()))])
    output, output_type = output_pair(rng, chaos)
    payload, payload_type = output_pair(rng, chaos)
    pending = "EXTERNAL_DEPLOYMENT_PENDING"
    run.update(
        status=status_value(rng, chaos),
        error=error_value(rng),
        output=output,
        outputType=output_type,
        payload=payload,
        payloadType=payload_type,
        annotations=annotations_value(rng),
        idempotencyKeyOptions=key_options_value(rng),
        masterQueue=master_queue_value(rng, chaos),
        statusReason=pick(rng, chaos, [pending, "OTHER", None], [Text(pending), BadEquality()]),
        isWarmStart=pick(rng, chaos, [True, False, None], [0, 1, "", BadBool()]),
        isTest=rng.choice([True, False, None, 0, "yes"]),
        attemptNumber=rng.choice([None, 0, 1, 5]),
        maxDurationInSeconds=rng.choice([None, 0, 3600]),
    )
    for key in list(run):
        spared = key in REQUIRED_KEYS or key in DATETIME_KEYS
        if rng.random() >= (chaos / 4 if spared else chaos):
            continue
        roll = rng.random()
        if roll < 0.2:
            del run[key]
        elif key in DATETIME_KEYS and roll < 0.7:
            run[key] = odd_datetime(rng)
        else:
            run[key] = odd_value(rng)
    return run


def random_event(rng: random.Random) -> Any:
    chaos = rng.choice([0.0, 0.0, 0.02, 0.1, 0.4])
    run: Any = random_run(rng, chaos)
    if rng.random() < 0.1:
        run = rng.choice([Table, Defaulting])(run)
    kind = rng.choice(["insert", "update", "delete", Text("delete")])
    version = rng.choice([0x16_B374D848, 0, (1 << 63) + 5])
    if rng.random() < chaos / 2:
        kind = rng.choice([BadEquality(), None, 3])
    if rng.random() < chaos / 4:
        return SimpleNamespace(run=run, kind=kind)  # no version: AttributeError
    return ChangeEvent(kind, run, version)


def same(a: Any, b: Any) -> bool:
    """Equal, with the same types all the way down (NaN equal to NaN, -0.0 not to 0.0)."""
    if a is b:
        return True
    if type(a) is not type(b):
        return False
    if type(a) is dict:
        return list(a) == list(b) and all(same(a[key], b[key]) for key in a)
    if type(a) is list:
        return len(a) == len(b) and all(map(same, a, b))
    if type(a) is float:
        both_nan = math.isnan(a) and math.isnan(b)
        return both_nan or (a == b and math.copysign(1, a) == math.copysign(1, b))
    return a == b


def outcome(build: Callable[..., list[Any]], event: Any, **options: Any) -> Any:
    """The row, or the error as (type, args)."""
    try:
        return build(event, **options)
    except Exception as exc:
        return type(exc), exc.args


def assert_same_outcome(
    event: Any,
    build: Callable[..., list[Any]] = task_run_row,
    oracle: Callable[..., list[Any]] = oracle_task_run_row,
    columns: tuple[str, ...] = TASK_RUN_COLUMNS,
    **options: Any,
) -> Any:
    expected = outcome(oracle, event, **options)
    actual = outcome(build, event, **options)
    if type(expected) is tuple:
        assert actual == expected, f"C: {actual!r}, Python: {expected!r}"
    else:
        assert type(actual) is list and len(actual) == len(columns)
        differing = [
            (column, c, python)
            for column, c, python in zip(columns, actual, expected, strict=True)
            if not same(c, python)
        ]
        assert not differing, differing
    return expected


def test_generated_runs_give_the_python_rows_and_errors() -> None:
    rng = random.Random(20261127)
    rows = errors = 0
    for _ in range(4_000):
        fingerprinting = pick(rng, 0.05, [True, False], [0, 1, "", BadBool()])
        expected = assert_same_outcome(random_event(rng), fingerprinting=fingerprinting)
        rows += type(expected) is list
        errors += type(expected) is tuple
    assert rows > 1_500 and errors > 500  # both kinds of outcome are well exercised


def test_generated_runs_give_the_python_payload_rows_and_errors() -> None:
    rng = random.Random(20261128)
    outcomes = [
        assert_same_outcome(random_event(rng), payload_row, oracle_payload_row, PAYLOAD_COLUMNS)
        for _ in range(3_000)
    ]
    rows = sum(type(expected) is list for expected in outcomes)
    assert 1_500 < rows < len(outcomes) - 300


@pytest.mark.parametrize("moment", list(dict.fromkeys(boundary_datetimes())), ids=str)
def test_epoch_milliseconds_at_the_boundaries(moment: datetime) -> None:
    run = full_run()
    for key in DATETIME_KEYS:
        run[key] = moment
    assert_same_outcome(ChangeEvent("insert", run, 1))
    row = task_run_row(ChangeEvent("insert", run, 1))
    assert row[TASK_RUN_COLUMNS.index("created_at")] == (
        (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)
    )


def test_random_datetimes_and_their_other_kinds_convert_as_in_python() -> None:
    rng = random.Random(7)
    for _ in range(3_000):
        run = full_run()
        run["createdAt"] = random_datetime(rng)
        run["completedAt"] = odd_datetime(rng)
        assert_same_outcome(ChangeEvent("insert", run, 1))


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"status": ABSENT}, KeyError),
        ({"traceId": ABSENT}, KeyError),
        ({"updatedAt": datetime(2024, 1, 1)}, TypeError),  # naive
        ({"createdAt": None}, TypeError),
        ({"startedAt": datetime(2024, 1, 1, tzinfo=OddZone())}, OverflowError),
        ({"scheduleId": BadBool()}, ValueError),
        ({"masterQueue": 3}, AttributeError),
        ({"masterQueue": b"a:b"}, TypeError),
        ({"statusReason": BadEquality()}, LookupError),
        ({"status": ["CRASHED"]}, TypeError),  # unhashable: `status in FINGERPRINTED_STATUSES`
    ],
)
def test_errors_are_the_python_errors(changes: dict[str, Any], error: type) -> None:
    run = full_run()
    for key, value in changes.items():
        if value is ABSENT:
            del run[key]
        else:
            run[key] = value
    expected = assert_same_outcome(ChangeEvent("insert", run, 1))
    assert expected[0] is error


class RecordingRun:
    """A run mapping (not a dict) that logs each read."""

    def __init__(self, values: dict[str, Any], log: list[tuple[str, str]]) -> None:
        self._values, self._log = values, log

    def get(self, key: str) -> Any:
        self._log.append(("get", key))
        return self._values.get(key)

    def __getitem__(self, key: str) -> Any:
        self._log.append(("item", key))
        return self._values[key]


class Truth:
    """A value that logs each truth test of it."""

    def __init__(self, name: str, truth: bool, log: list[tuple[str, str]]) -> None:
        self._name, self._truth, self._log = name, truth, log

    def __bool__(self) -> bool:
        self._log.append(("bool", self._name))
        return self._truth


@pytest.mark.parametrize("mapping", ["dict", "recording"])
def test_the_run_is_read_in_the_python_order(mapping: str) -> None:
    rng = random.Random(3)
    for _ in range(200):
        logs: list[list[tuple[str, str]]] = [[], []]
        outcomes = []
        truth_keys = ("scheduleId", "batchId", "ttl", "isTest", "isWarmStart", "region", "output")
        values = random_run(rng, 0.0)
        values.update(annotations=rng.choice([None, {}, [], values["annotations"]]))
        truths = {key: rng.random() < 0.5 for key in truth_keys}
        fingerprinting = rng.random() < 0.5
        for log in logs:
            run = {**values, **{key: Truth(key, truths[key], log) for key in truth_keys}}
            run["outputType"] = "text/plain"
            source = RecordingRun(run, log) if mapping == "recording" else run
            event = ChangeEvent("insert", source, 1)
            flags = Truth("fingerprinting", fingerprinting, log)
            build = task_run_row if log is logs[0] else oracle_task_run_row
            outcomes.append(outcome(build, event, fingerprinting=flags))
        assert logs[0] == logs[1]
        assert type(outcomes[0]) is type(outcomes[1]) is list


def test_the_payload_row_reads_only_run_items_in_the_python_order() -> None:
    logs: list[list[tuple[str, str]]] = [[], []]
    for log, build in zip(logs, (payload_row, oracle_payload_row), strict=True):
        build(ChangeEvent("insert", RecordingRun(full_run(), log), 1))
    assert logs[0] == logs[1] == [
        ("item", "id"), ("item", "createdAt"), ("item", "payload"), ("item", "payloadType")
    ]  # fmt: skip


def test_signatures_are_the_python_signatures() -> None:
    event = ChangeEvent("insert", full_run(), 1)
    assert same(task_run_row(event=event), oracle_task_run_row(event=event))
    assert same(payload_row(event=event), oracle_payload_row(event=event))
    assert same(
        task_run_row(event, fingerprinting=False), oracle_task_run_row(event, fingerprinting=False)
    )
    for call in (
        lambda build: build(event, False),
        lambda build: build(),
        lambda build: build(event, fingerprint=True),
        lambda build: build(event, event=event),
    ):
        for build, oracle in (
            (task_run_row, oracle_task_run_row),
            (payload_row, oracle_payload_row),
        ):
            with pytest.raises(TypeError) as c_error:
                call(build)
            with pytest.raises(TypeError) as python_error:
                call(oracle)
            assert str(c_error.value) == str(python_error.value).replace("oracle_", "")
    with pytest.raises(TypeError, match="unexpected keyword argument 'fingerprinting'"):
        payload_row(event, fingerprinting=True)
