"""Text value conversion by type OID, including timestamps in a non-UTC process."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from rrlab.exceptions import ReplicationError
from rrlab.replication.pgoutput import Insert, RelationCache, decode_message
from rrlab.replication.values import SUPPORTED_TYPES, load_value, row_loader

# (type name, text as pgoutput sends it, expected Python value)
CASES = [
    ("bool", b"t", True),
    ("bool", b"f", False),
    ("int2", b"-32768", -32768),
    ("int4", b"2147483647", 2147483647),
    ("int8", b"-9223372036854775808", -9223372036854775808),
    ("float4", b"1.5", 1.5),
    ("float8", b"0.1", 0.1),
    ("float8", b"-Infinity", float("-inf")),
    ("numeric", b"12345.678", Decimal("12345.678")),
    ("text", "héllo\tworld".encode(), "héllo\tworld"),
    ("varchar", b"abc", "abc"),
    ("bpchar", b"ab  ", "ab  "),
    ("name", b"a_name", "a_name"),
    ("date", b"2024-02-29", date(2024, 2, 29)),
    ("timestamp", b"2024-03-10 06:30:00.123", datetime(2024, 3, 10, 6, 30, 0, 123000, UTC)),
    ("timestamp", b"2024-03-10 02:30:00", datetime(2024, 3, 10, 2, 30, tzinfo=UTC)),
    ("timestamptz", b"2024-03-10 12:00:00.5+05:30", datetime(2024, 3, 10, 6, 30, 0, 500000, UTC)),
    ("timestamptz", b"2024-11-03 01:30:00-04", datetime(2024, 11, 3, 5, 30, tzinfo=UTC)),
    ("json", b'{"b": [1, 2], "a": null}', {"b": [1, 2], "a": None}),
    ("jsonb", b'{"k": [true, 1.5, "\\u00e9"]}', {"k": [True, 1.5, "é"]}),
    (
        "text[]",
        b'{plain,"with space","quote\\"d","back\\\\slash","comma,brace{}",NULL,"NULL","",x}',
        ["plain", "with space", 'quote"d', "back\\slash", "comma,brace{}", None, "NULL", "", "x"],
    ),
    ("text[]", b"{}", []),
    ("varchar[]", b'{a,"b c"}', ["a", "b c"]),
    ("int2[]", b"{-1,2}", [-1, 2]),
    ("int4[]", b"{1,NULL,3}", [1, None, 3]),
    ("int8[]", b"{-1,9007199254740993}", [-1, 9007199254740993]),
    ("bool[]", b"{t,f,NULL}", [True, False, None]),
    ("float8[]", b"{1.5,NaN}", [1.5, pytest.approx(float("nan"), nan_ok=True)]),
    ("numeric[]", b"{1.10,2}", [Decimal("1.10"), Decimal("2")]),
    (
        "timestamp[]",
        b'{"2024-01-01 00:00:00.5",NULL}',
        [datetime(2024, 1, 1, 0, 0, 0, 500000, UTC), None],
    ),
    ("timestamptz[]", b'{"2024-01-01 01:00:00+01"}', [datetime(2024, 1, 1, tzinfo=UTC)]),
]
OID_BY_NAME = {name: oid for oid, name in SUPPORTED_TYPES.items()}


@pytest.fixture
def new_york_tz() -> Iterator[None]:
    """Run the test in a process whose local time zone is America/New_York."""
    before = os.environ.get("TZ")
    os.environ["TZ"] = "America/New_York"
    time.tzset()
    try:
        assert time.tzname[0] == "EST"
        yield
    finally:
        if before is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = before
        time.tzset()


def test_every_supported_type_has_a_case() -> None:
    assert {name for name, _text, _value in CASES} == set(SUPPORTED_TYPES.values())


@pytest.mark.parametrize(("type_name", "text", "expected"), CASES)
def test_load_value(type_name: str, text: bytes, expected: object) -> None:
    value = load_value(OID_BY_NAME[type_name], text)
    assert value == expected
    assert type(value) is type(expected) or isinstance(expected, list)


@pytest.mark.parametrize(("type_name", "text", "expected"), CASES)
def test_load_value_in_a_non_utc_process(
    new_york_tz: None, type_name: str, text: bytes, expected: object
) -> None:
    assert load_value(OID_BY_NAME[type_name], text) == expected


def test_timestamps_are_aware_utc(new_york_tz: None) -> None:
    value = load_value(OID_BY_NAME["timestamp"], b"2024-07-01 12:00:00")
    assert value.utcoffset() == timedelta(0)
    assert value.timestamp() == datetime(2024, 7, 1, 12, tzinfo=UTC).timestamp()


def test_captured_timestamps_in_a_non_utc_process(new_york_tz: None) -> None:
    capture = json.loads((Path(__file__).parent / "data" / "pgoutput_capture.json").read_text())
    relations = RelationCache(["created", "seen", "day"])
    inserts = [
        message
        for m in capture["messages"]
        if isinstance(message := decode_message(bytes.fromhex(m["data"]), relations), Insert)
    ]
    assert inserts[0].new == {
        "created": datetime(2024, 3, 10, 6, 30, 0, 123000, UTC),
        "seen": datetime(2024, 3, 10, 6, 30, 0, 123456, UTC),
        "day": date(2024, 2, 29),
    }


def test_null_and_unknown_types() -> None:
    assert load_value(OID_BY_NAME["int4"], None) is None
    # an enum, a domain or any user type arrives with an OID the table does not know
    assert load_value(16385, b"COMPLETED_SUCCESSFULLY") == "COMPLETED_SUCCESSFULLY"
    assert load_value(987654, b"{A,B}") == "{A,B}"


def test_row_loader_types_a_whole_row_and_accepts_memoryviews() -> None:
    load = row_loader([23, 25, 1114, 3802], ["number", "id", "createdAt", "context"])
    row = [memoryview(b"42"), b"run_1", b"2024-01-01 00:00:00.001", None]
    assert load(row) == (42, "run_1", datetime(2024, 1, 1, 0, 0, 0, 1000, UTC), None)


def test_conversion_error_names_the_column() -> None:
    load = row_loader([25, 23], ["id", "number"])
    with pytest.raises(ReplicationError, match=r"column 'number' \(int4\) value 'abc'"):
        load([b"run_1", b"abc"])
    with pytest.raises(ReplicationError, match="column 'createdAt'"):
        row_loader([1114], ["createdAt"])([b"not a time"])


@pytest.mark.parametrize("type_name", ["json", "jsonb"])
@pytest.mark.parametrize(
    "text",
    [
        b'{"b": 1, "a": [1.0, -0.0, 2.5, 1e300, 5e-324], "b": "\\u00e9 \\ud83d\\ude00"}',
        b"[18446744073709551615, 18446744073709551616, -9223372036854775809, 1e19, 1e20]",
        b"1" + b"0" * 400,  # jsonb prints big numerics in full
        b"[1e400, -1e400]",  # json keeps the text: floats overflow to infinity
        b'{"s": "\\ud800"}',  # a lone surrogate escape (json keeps it)
        b"[" * 300 + b"1.5" + b"]" * 300,
        '{"\u00fcber": ["\u65e5\u672c", null, true]}'.encode(),
    ],
)
def test_json_values_load_as_json_loads_reads_them(type_name: str, text: bytes) -> None:
    value = load_value(OID_BY_NAME[type_name], memoryview(text))
    assert json.dumps(value) == json.dumps(json.loads(text))  # types, order, -0.0, exact ints


def test_json_arrays_and_bad_json_fail_as_before() -> None:
    assert load_value(3807, b'{"{\\"a\\": 12345678901234567890123}",NULL}') == [
        {"a": 12345678901234567890123},
        None,
    ]
    with pytest.raises(ReplicationError, match="jsonb"):
        load_value(OID_BY_NAME["jsonb"], b"{not json")
    with pytest.raises(ReplicationError, match="jsonb"):
        load_value(OID_BY_NAME["jsonb"], b"\xff\xfe")
