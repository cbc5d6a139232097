"""Sinks and retries: encoding, sanitizing, backoff, permanent errors, poison rows in real chdb."""

from __future__ import annotations

import json
import tracemalloc
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from clickhouse_connect.driver.summary import QuerySummary

from rrlab.exceptions import SinkError
from rrlab.infra.clickhouse import EmbeddedClickHouse, clickhouse_client
from rrlab.service.retry import RetryPolicy, is_permanent, with_retry
from rrlab.service.sinks import (
    INSERT_FORMAT,
    INSERT_SETTINGS,
    INVALID_UTF16,
    ClickHouseSink,
    EncodedRows,
    InsertResult,
    MockSink,
    Row,
    encode_row,
    encode_rows,
    sanitize_json,
    strip_row,
)

BAD_SURROGATE = "bad \ud800 text"


def test_rows_are_encoded_as_one_compact_json_array_per_line() -> None:
    body = encode_rows(
        [["run_a", 1_700_000_000_123, {"data": {"é": [1, None]}}, ["t"]], ["b", 0, {}, []]]
    )
    lines = body.decode("utf-8").split("\n")
    assert lines[0] == '["run_a",1700000000123,{"data":{"é":[1,null]}},["t"]]'
    assert json.loads(lines[1]) == ["b", 0, {}, []]
    assert encode_rows([]) == b""


def test_an_encoded_line_holds_about_its_own_length_of_memory() -> None:
    # what a pending change keeps until its flush: orjson's own output held 4-16 KiB here
    rows = [["run", 1_700_000_000_123, {"data": {"text": "x" * size}}] for size in (10, 2000)]
    for row in rows:
        tracemalloc.start()
        try:
            lines = [encode_row(row) for _ in range(100)]
            held = tracemalloc.get_traced_memory()[0] - 8 * 100  # minus the list
        finally:
            tracemalloc.stop()
        assert held < 100 * (len(lines[0]) + 100)


def stdlib_line(row: list[Any]) -> str:
    """The row as the sink encoded every row before orjson (ensure_ascii)."""
    return json.dumps(row, separators=(",", ":"))


PLAIN_ROWS: list[list[Any]] = [
    ['é ✓ 😀 \u2028 \x00\x1f\x7f "\\/', 0, -1, 2**64 - 1, -(2**63), True, False, None],
    [0.1, 1e-7, 1e16, 1.5e300, -0.0, 5e-324, 123456789.123, 2.0**53],
    [{"b": 1, "a": [1, {"c": None}], "": {}}, [], (1, "t"), {"k": (2.5, [True])}],
    ["run", 1_700_000_000_123, {"data": {"n": [1, 2.5, "x"]}}, {"data": None}, ["tag"]],
]


@pytest.mark.parametrize("row", PLAIN_ROWS)
def test_plain_rows_encode_to_the_same_json_as_the_stdlib(row: list[Any]) -> None:
    body = encode_rows([row])
    assert b"\n" not in body
    decoded = json.loads(body.decode("utf-8"))  # valid UTF-8, one JSON array
    expected = json.loads(stdlib_line(row))
    assert decoded == expected
    assert json.dumps(decoded) == json.dumps(expected)  # same types (1.0 stays a float), order


@pytest.mark.parametrize(
    "row",
    [
        ["a", float("nan")],
        ["a", {"data": [1, float("inf")]}],
        ["a", {"data": {"x": -float("inf")}}],
        ["a", {"data": BAD_SURROGATE}],
        ["a", {BAD_SURROGATE: 1}],
        ["a", {"data": 2**64}],
        ["a", -(2**63) - 1],
        ["a", {1: "int key"}],
    ],
)
def test_rows_orjson_cannot_write_exactly_are_encoded_by_the_stdlib(row: list[Any]) -> None:
    body = encode_rows([["first", "é"], row, ["last", 1.5]])
    assert body.split(b"\n")[1] == stdlib_line(row).encode("ascii")


def test_encoded_rows_read_back_exactly_what_was_encoded() -> None:
    """The consumer hands sinks EncodedRows: a sink that reads them (poison-row recovery)
    must get the very values, even those only the stdlib writes, and re-encode the body."""
    rows: list[Row] = [
        *PLAIN_ROWS,
        ["a", float("nan"), float("inf"), -float("inf"), {"data": [1, float("nan")]}],
        ["a", BAD_SURROGATE, {BAD_SURROGATE: 2**64, "neg": -(2**63) - 1}, {1: "int key"}],
    ]
    encoded = EncodedRows([encode_row(row) for row in rows])
    assert encoded.body == encode_rows(rows) and len(encoded) == len(rows)
    decoded = list(encoded)
    # the stdlib's own reading of the stdlib's writing: tuples as lists, keys as strings
    assert repr(decoded) == repr([json.loads(stdlib_line(row)) for row in rows])
    assert encode_rows(decoded) == encoded.body
    assert encoded[-1][1] == BAD_SURROGATE and encoded[1:3] == decoded[1:3]
    assert len(EncodedRows([])) == 0 and EncodedRows([]).body == b"" and not list(EncodedRows([]))


def test_values_the_stdlib_cannot_encode_still_fail() -> None:
    class Text(str):
        pass

    assert encode_rows([[Text("a")]]) == b'["a"]'  # subclasses: as the stdlib writes them
    with pytest.raises(TypeError):
        encode_rows([["a", datetime.now(UTC)]])
    with pytest.raises(TypeError):
        encode_rows([["a", {"id": uuid.uuid4()}]])


def test_sanitize_replaces_bad_surrogates_and_out_of_range_integers_only() -> None:
    value = {
        "ok": "fine ✓",
        "bad": BAD_SURROGATE,
        BAD_SURROGATE: 1,
        "big": 2**64,
        "neg": -(2**63) - 1,
        "max": 2**64 - 1,
        "flag": True,
        "list": [1, BAD_SURROGATE, {"n": 2**70}],
    }
    assert sanitize_json(value) == {
        "ok": "fine ✓",
        "bad": INVALID_UTF16,
        INVALID_UTF16: 1,
        "big": str(2**64),
        "neg": str(-(2**63) - 1),
        "max": 2**64 - 1,
        "flag": True,
        "list": [1, INVALID_UTF16, {"n": str(2**70)}],
    }
    clean = {"a": [1, "x", {"b": 2.5}], "c": None}
    assert sanitize_json(clean) is clean


def test_strip_row_empties_only_the_json_columns() -> None:
    assert strip_row(["id", {"a": 1}, 5, {"b": 2}], [1, 3]) == ["id", {}, 5, {}]


def test_mock_sink_counts_rows_and_the_bytes_it_would_send() -> None:
    sink = MockSink()
    rows = [["a", {"x": 1}], ["b", {"y": [1, 2]}]]
    result = sink.insert("t", ["id", "j"], rows, frozenset({"j"}))
    assert (result.rows, result.bytes) == (2, len(encode_rows(rows)))
    sink.insert("t", ["id", "j"], rows[:1], frozenset({"j"}))
    assert (sink.totals.rows, sink.inserts) == (3, 2)


# --- retries -------------------------------------------------------------------------


def test_backoff_doubles_from_the_base_up_to_the_max_plus_jitter() -> None:
    policy = RetryPolicy(max_attempts=10, base_delay_ms=100, max_delay_ms=2_000)
    assert [policy.delay_ms(n, 0.0) for n in range(1, 7)] == [100, 200, 400, 800, 1600, 2000]
    assert policy.delay_ms(2, 0.5) == 250


class FailingCall:
    """Fails ``failures`` times with ``message``, then returns ``"done"``."""

    def __init__(self, failures: int, message: str = "Connection reset by peer") -> None:
        self.failures = failures
        self.message = message
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise ConnectionError(self.message)
        return "done"


def test_transient_failures_are_retried_with_the_backoff_schedule() -> None:
    sleeps: list[float] = []
    retried: list[int] = []
    call = FailingCall(2)
    result = with_retry(
        call,
        RetryPolicy(max_attempts=3, base_delay_ms=100, max_delay_ms=2_000),
        on_retry=lambda attempt, exc: retried.append(attempt),
        sleep=sleeps.append,
        jitter=lambda: 0.25,
    )
    assert result == "done" and call.calls == 3
    assert retried == [1, 2]
    assert sleeps == pytest.approx([0.125, 0.225])


def test_the_last_failure_raises_a_sink_error_without_a_final_wait() -> None:
    sleeps: list[float] = []
    call = FailingCall(5)
    with pytest.raises(SinkError, match="after 3 attempt"):
        with_retry(call, RetryPolicy(3, 100, 2_000), sleep=sleeps.append, jitter=lambda: 0.0)
    assert call.calls == 3 and sleeps == [0.1, 0.2]


@pytest.mark.parametrize(
    "message", ["Code: 60. DB::Exception: Table not found", "Authentication failed: bad password"]
)
def test_permanent_errors_are_not_retried(message: str) -> None:
    call = FailingCall(5, message)
    assert is_permanent(ConnectionError(message))
    with pytest.raises(SinkError, match="permanent"):
        with_retry(call, RetryPolicy(3, 100, 2_000), sleep=lambda s: None)
    assert call.calls == 1


# --- the real embedded ClickHouse ---------------------------------------------------

COLUMNS = ["run_id", "created_at", "output", "error"]
JSON_COLUMNS = frozenset({"output", "error"})


@pytest.fixture(scope="module")
def client(chdb_endpoint: EmbeddedClickHouse) -> Iterator[Any]:
    """A client on its own database of the session's endpoint: these tables are the tests'."""
    setup = clickhouse_client(chdb_endpoint.url)
    setup.command("CREATE DATABASE IF NOT EXISTS sink_test")
    setup.close()
    ch = clickhouse_client(chdb_endpoint.url, database="sink_test")
    yield ch
    ch.close()


@pytest.fixture
def table(client: Any, request: pytest.FixtureRequest) -> str:
    name = f"t_{request.node.name.split('[')[0][-40:]}"
    client.command(f"DROP TABLE IF EXISTS {name}")
    client.command(
        f"CREATE TABLE {name} (run_id String, created_at DateTime64(3), output JSON, "
        "error JSON(max_dynamic_paths=64)) ENGINE = MergeTree ORDER BY run_id "
        "SETTINGS enable_json_type = 1"
    )
    return name


def stored(client: Any, table: str) -> dict[str, tuple[int, str, str]]:
    result = client.query(
        f"SELECT run_id, toUnixTimestamp64Milli(created_at), toJSONString(output), "
        f"toJSONString(error) FROM {table}"
    )
    return {r[0]: (r[1], json.loads(r[2]), json.loads(r[3])) for r in result.result_rows}


def test_epoch_milliseconds_and_json_round_trip(client: Any, table: str) -> None:
    sink = ClickHouseSink(client)
    rows = [
        ["run_a", 1_700_000_000_123, {"data": {"n": 1, "s": "x", "l": [1, "a"]}}, {}],
        ["run_b", 1_700_000_000_999, {}, {"type": "BUILT_IN_ERROR", "message": "boom"}],
    ]
    result = sink.insert(table, COLUMNS, rows, JSON_COLUMNS)
    assert result.rows == 2 and result.bytes == len(encode_rows(rows))
    assert stored(client, table) == {
        "run_a": (1_700_000_000_123, {"data": {"n": 1, "s": "x", "l": [1, "a"]}}, {}),
        "run_b": (1_700_000_000_999, {}, {"type": "BUILT_IN_ERROR", "message": "boom"}),
    }


def test_utf8_and_escaped_bodies_store_identical_values(client: Any, table: str) -> None:
    # orjson writes non-ASCII text as UTF-8, the stdlib as \u escapes: ClickHouse must
    # store the same strings (and numbers) from both
    values = [
        {"s": "é ✓ 日本", "astral": "😀 𝄞", "sep": "\u2028\u2029", "ctl": "\x01\x1f\x7f"},
        {"n": [0.1, 1e-7, 1e16, -0.0, 2**63 - 1], "k\u00e9y": {"ü": "ö"}, "emoji 😀": True},
    ]
    utf8_rows = [[f"utf8_{i}", i, {"data": v}, {"message": "ß"}] for i, v in enumerate(values)]
    ascii_rows = [[f"ascii_{i}", i, {"data": v}, {"message": "ß"}] for i, v in enumerate(values)]
    assert not encode_rows(utf8_rows).isascii()  # the fast path did write UTF-8
    ClickHouseSink(client).insert(table, COLUMNS, utf8_rows, JSON_COLUMNS)
    ascii_body = "\n".join(map(stdlib_line, ascii_rows)).encode("ascii")
    client.raw_insert(table, COLUMNS, ascii_body, settings=INSERT_SETTINGS, fmt=INSERT_FORMAT)
    result = client.query(
        f"SELECT run_id, toJSONString(output), toJSONString(error) FROM {table} ORDER BY run_id"
    )
    texts = {row[0]: (row[1], row[2]) for row in result.result_rows}
    assert len(texts) == 4
    for i in range(len(values)):
        assert texts[f"utf8_{i}"] == texts[f"ascii_{i}"]
    assert json.loads(texts["utf8_0"][0]) == {"data": values[0]}
    assert json.loads(texts["utf8_0"][1]) == {"message": "ß"}


Insert = Callable[[ClickHouseSink, str, list[Row]], InsertResult]


@pytest.fixture(params=["rows", "encoded"])
def insert(request: pytest.FixtureRequest) -> Insert:
    """An insert as a caller with plain rows makes it, or as the consumer does: EncodedRows,
    which recovery must decode to fix."""

    def with_rows(sink: ClickHouseSink, table: str, rows: list[Row]) -> InsertResult:
        return sink.insert(table, COLUMNS, rows, JSON_COLUMNS)

    def with_encoded_rows(sink: ClickHouseSink, table: str, rows: list[Row]) -> InsertResult:
        encoded = EncodedRows([encode_row(row) for row in rows])
        return sink.insert(table, COLUMNS, encoded, JSON_COLUMNS)

    return with_rows if request.param == "rows" else with_encoded_rows


def test_bad_surrogates_are_sanitized_and_the_batch_lands(
    client: Any, table: str, insert: Insert
) -> None:
    sink = ClickHouseSink(client)
    rows = [
        ["run_a", 1, {"data": "ok"}, {}],
        ["run_b", 2, {"data": BAD_SURROGATE}, {}],
        ["run_c", 3, {"data": "ok"}, {}],
    ]
    result = insert(sink, table, rows)
    assert (result.rows, result.sanitized_rows, result.stripped_rows) == (3, 1, 0)
    assert stored(client, table)["run_b"][1] == {"data": INVALID_UTF16}


def test_a_poison_row_is_stored_with_its_json_stripped(
    client: Any, table: str, insert: Insert
) -> None:
    sink = ClickHouseSink(client, max_poison_strips=1)
    rows = [[f"run_{i}", i, {"data": {"i": i}}, {"message": "e"}] for i in range(50)]
    rows[17][2] = {"data": float("inf")}  # json.dumps writes Infinity, which ClickHouse rejects
    result = insert(sink, table, rows)
    assert (result.rows, result.stripped_rows, result.skipped_rows) == (50, 1, 0)
    landed = stored(client, table)
    assert len(landed) == 50
    assert landed["run_17"] == (17, {}, {})
    assert landed["run_18"][1] == {"data": {"i": 18}}
    assert sink.totals.stripped_rows == 1


def test_poison_rows_beyond_the_strip_budget_are_skipped_and_counted(
    client: Any, table: str, insert: Insert
) -> None:
    sink = ClickHouseSink(client, max_poison_strips=1)
    rows = [[f"run_{i}", i, {"data": i}, {}] for i in range(10)]
    rows[3][2] = {"data": float("nan")}
    rows[6][3] = {"code": float("-inf")}
    result = insert(sink, table, rows)
    assert (result.rows, result.stripped_rows, result.skipped_rows) == (9, 1, 1)
    landed = stored(client, table)
    assert sorted(landed) == sorted(f"run_{i}" for i in range(10) if i != 6)
    assert landed["run_3"] == (3, {}, {})


class RecordingClient:
    """Keeps the settings of each raw_insert: what the sink asks of the server."""

    def __init__(self) -> None:
        self.settings: list[dict[str, Any]] = []

    def raw_insert(self, table, columns, body, settings, fmt) -> None:
        self.settings.append(settings)


def test_inserts_are_synchronous_whatever_the_servers_default() -> None:
    # chdb defaults to async_insert=1; only a synchronous answer means the rows are stored,
    # which is what acknowledging the LSN to PostgreSQL relies on
    client = RecordingClient()
    ClickHouseSink(client).insert("t", COLUMNS, [["r", 1, {}, {}]], JSON_COLUMNS)
    assert client.settings and all(s["async_insert"] == 0 for s in client.settings)


class ShortWritingClient(RecordingClient):
    """A server that answers an insert but reports fewer rows written than it was sent."""

    def raw_insert(self, table, columns, body, settings, fmt) -> Any:
        super().raw_insert(table, columns, body, settings, fmt)
        return QuerySummary({"written_rows": "1"})


def test_an_insert_that_stored_fewer_rows_than_sent_fails() -> None:
    rows = [["a", 1, {}, {}], ["b", 2, {}, {}]]
    with pytest.raises(SinkError, match="reports 1 rows written of 2 sent"):
        ClickHouseSink(ShortWritingClient()).insert("t", COLUMNS, rows, JSON_COLUMNS)
    # a summary that counts more (materialized views write too) or none at all is fine
    assert ClickHouseSink(ShortWritingClient()).insert("t", COLUMNS, rows[:1], JSON_COLUMNS).rows
