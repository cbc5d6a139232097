"""The embedded ClickHouse endpoint, driven for real by clickhouse-connect and raw HTTP."""

from __future__ import annotations

import datetime as dt
import gzip
import http.client
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import lz4.frame
import psutil
import pyarrow as pa
import pytest
from backports import zstd
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import DatabaseError

from rrlab.exceptions import ClickHouseError
from rrlab.infra.chdb_server import decompress, output_format, split_insert
from rrlab.infra.clickhouse import EmbeddedClickHouse, clickhouse_client

EPOCH_MS = 1_700_000_000_123  # 2023-11-14 22:13:20.123 UTC
EXPECTED = dt.datetime(2023, 11, 14, 22, 13, 20, 123000)
COLUMNS = ["id", "version", "name", "at", "doc", "tags"]


@pytest.fixture()
def table(ch_client: Client, request: pytest.FixtureRequest) -> Iterator[str]:
    """A scratch ReplacingMergeTree table with JSON, DateTime64 and arrays."""
    name = f"scratch.{request.node.name.replace('[', '_').replace(']', '').replace('-', '_')}"
    ch_client.command("CREATE DATABASE IF NOT EXISTS scratch")
    ch_client.command(f"DROP TABLE IF EXISTS {name}")
    ch_client.command(
        f"CREATE TABLE {name} (id UInt64, version UInt64, name String, at DateTime64(3), "
        "doc JSON, tags Array(String)) ENGINE = ReplacingMergeTree(version) ORDER BY id"
    )
    yield name
    ch_client.command(f"DROP TABLE IF EXISTS {name}")


def _http(endpoint: EmbeddedClickHouse, path: str, body: bytes | None = None, **headers: str):
    request = urllib.request.Request(f"http://127.0.0.1:{endpoint.port}{path}", body, headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def test_ping(chdb_endpoint: EmbeddedClickHouse, ch_client: Client) -> None:
    assert _http(chdb_endpoint, "/ping")[::2] == (200, b"Ok.\n")
    assert ch_client.ping()
    assert ch_client.server_version.startswith("26.")


def test_native_insert_then_final_keeps_the_latest_version(ch_client: Client, table: str) -> None:
    # Two inserts, two parts: ReplacingMergeTree already collapses duplicates within one part.
    ch_client.insert(table, [[1, 1, "first", EPOCH_MS, {"a": 1}, ["x"]]], column_names=COLUMNS)
    rows = [
        [1, 2, "second", EPOCH_MS, {"a": 2, "b": {"c": "d"}}, ["x", "y"]],
        [2, 1, "other", EPOCH_MS + 1000, {}, []],
    ]
    summary = ch_client.insert(table, rows, column_names=COLUMNS)
    assert summary.written_rows == 2
    columns = ", ".join(COLUMNS)
    result = ch_client.query(f"SELECT {columns} FROM {table} FINAL ORDER BY id")
    assert result.result_rows == [
        (1, 2, "second", EXPECTED, {"a": 2, "b": {"c": "d"}}, ["x", "y"]),
        (2, 1, "other", EXPECTED + dt.timedelta(seconds=1), {}, []),
    ]
    assert ch_client.command(f"SELECT count() FROM {table}") == 3


def test_arrow_insert(ch_client: Client, table: str) -> None:
    arrow = pa.table(
        {
            "id": pa.array([1, 2], pa.uint64()),
            "version": pa.array([1, 1], pa.uint64()),
            "name": ["a", "b"],
            "at": pa.array([EPOCH_MS, EPOCH_MS], pa.timestamp("ms")),
            "tags": [["t"], []],
        }
    )
    ch_client.insert_arrow(table, arrow)
    back = ch_client.query_arrow(f"SELECT id, name, at, tags FROM {table} ORDER BY id")
    assert back.column("name").to_pylist() == ["a", "b"]
    assert back.column("tags").to_pylist() == [["t"], []]
    assert [t.replace(tzinfo=None) for t in back.column("at").to_pylist()] == [EXPECTED] * 2


@pytest.mark.parametrize("compression", [None, "lz4", "gzip", "zstd"])
def test_raw_json_compact_insert(ch_client: Client, table: str, compression: str | None) -> None:
    # Uncompressed, the statement travels in the body before the data; compressed, in the URL.
    lines = [COLUMNS] + [[i, 1, f"run_{i}", EPOCH_MS, {"data": i}, ["a"]] for i in range(50)]
    body = "".join(json.dumps(line) + "\n" for line in lines).encode()
    # raw_insert sends data as given, so the caller compresses it (as one frame per block).
    compress = {
        None: bytes,
        "lz4": lz4.frame.compress,
        "gzip": gzip.compress,
        "zstd": zstd.compress,
    }
    ch_client.raw_insert(
        table,
        COLUMNS,
        compress[compression](body),
        fmt="JSONCompactEachRowWithNames",
        settings={"input_format_read_datetime_number_as_raw_value": 1},
        compression=compression,
    )
    result = ch_client.query(f"SELECT count(), min(at), max(at), sum(doc.data::Int64) FROM {table}")
    assert result.result_rows == [(50, EXPECTED, EXPECTED, sum(range(50)))]


def test_concurrent_inserts_from_threads(ch_client: Client, table: str) -> None:
    errors: list[BaseException] = []

    def flush(worker: int) -> None:
        try:
            for batch in range(10):
                base = worker * 10_000 + batch * 100
                rows = [[base + i, 1, "r", EPOCH_MS, {"w": worker}, []] for i in range(100)]
                ch_client.insert(table, rows, column_names=COLUMNS)
        except BaseException as exc:  # reported to the main thread below
            errors.append(exc)

    threads = [threading.Thread(target=flush, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert ch_client.command(f"SELECT count(), uniqExact(id) FROM {table}") == ["4000", "4000"]


def test_errors_raised_while_writing_reach_the_client(ch_client: Client) -> None:
    # chdb's streaming insert answers these with "0 rows written", or counts a row it never
    # stored; the consumer would then acknowledge rows that are not in ClickHouse.
    ch_client.command("CREATE DATABASE IF NOT EXISTS scratch")
    ch_client.command("DROP TABLE IF EXISTS scratch.checked")
    ch_client.command(
        "CREATE TABLE scratch.checked (a UInt64, CONSTRAINT small CHECK a < 10) "
        "ENGINE = MergeTree ORDER BY a SETTINGS parts_to_throw_insert = 1"
    )
    ch_client.command("SYSTEM STOP MERGES scratch.checked")
    try:
        with pytest.raises(DatabaseError, match="VIOLATED_CONSTRAINT"):
            ch_client.raw_insert("scratch.checked", ["a"], b"[20]\n", fmt="JSONCompactEachRow")
        first = ch_client.raw_insert("scratch.checked", ["a"], b"[1]\n", fmt="JSONCompactEachRow")
        assert first.written_rows == 1
        with pytest.raises(DatabaseError, match="TOO_MANY_PARTS") as too_many:
            ch_client.raw_insert("scratch.checked", ["a"], b"[2]\n", fmt="JSONCompactEachRow")
        assert too_many.value.code == 252
        assert ch_client.command("SELECT groupArray(a) FROM scratch.checked") == "[1]"
    finally:
        ch_client.command("DROP TABLE scratch.checked")


def test_bad_sql_raises_database_error_with_clickhouse_message(ch_client: Client) -> None:
    with pytest.raises(DatabaseError, match="Syntax error") as syntax:
        ch_client.query("SELEC 1")
    assert syntax.value.code == 62
    with pytest.raises(DatabaseError, match="UNKNOWN_TABLE") as unknown:
        ch_client.query("SELECT * FROM scratch.no_such_table")
    assert unknown.value.code == 60


def test_error_response_is_in_clickhouse_format(chdb_endpoint: EmbeddedClickHouse) -> None:
    status, headers, body = _http(chdb_endpoint, "/?query=SELECT%20*%20FROM%20nowhere.t")
    assert status == 404
    assert headers["X-ClickHouse-Exception-Code"] == "81"
    assert body.startswith(b"Code: 81. DB::Exception: ") and b"(UNKNOWN_DATABASE)" in body
    status, headers, body = _http(chdb_endpoint, "/?query=SELECT%201&no_such_setting=1")
    assert (status, headers["X-ClickHouse-Exception-Code"]) == (400, "115")


def test_settings_apply_to_one_query_only(ch_client: Client) -> None:
    query = "SELECT getSetting('max_threads')"
    default = ch_client.command(query)
    assert ch_client.command(query, settings={"max_threads": 1}) == 1
    assert ch_client.command(query) == default


def test_database_parameter_and_default_format(chdb_endpoint: EmbeddedClickHouse) -> None:
    status, headers, body = _http(
        chdb_endpoint,
        "/?database=system&default_format=JSONEachRow",
        b"SELECT currentDatabase() AS d",
    )
    assert (status, body) == (200, b'{"d":"system"}\n')
    assert headers["X-ClickHouse-Format"] == "JSONEachRow"
    assert json.loads(headers["X-ClickHouse-Summary"])["result_rows"] == "0"


def test_session_keeps_its_settings(chdb_endpoint: EmbeddedClickHouse) -> None:
    client = clickhouse_client(chdb_endpoint.url, autogenerate_session_id=True)
    client.command("SET max_threads = 3")
    assert client.command("SELECT getSetting('max_threads')") == 3
    assert client.command("SELECT getSetting('max_threads')", settings={"max_threads": 1}) == 1
    assert client.command("SELECT getSetting('max_threads')") == 3
    client.close()


def test_chunked_request_body(chdb_endpoint: EmbeddedClickHouse, table: str) -> None:
    rows = b"".join(b'[%d, 1, "c", %d, {}, []]\n' % (i, EPOCH_MS) for i in range(1000))
    statement = f"INSERT INTO {table} (id, version, name, at, doc, tags) FORMAT JSONCompactEachRow"
    connection = http.client.HTTPConnection("127.0.0.1", chdb_endpoint.port, timeout=30)
    path = "/?" + urllib.parse.urlencode(
        {"query": statement, "input_format_read_datetime_number_as_raw_value": "1"}
    )
    pieces = [rows[i : i + 4096] for i in range(0, len(rows), 4096)]
    connection.request("POST", path, body=iter(pieces), encode_chunked=True)
    response = connection.getresponse()
    assert (response.status, response.read()) == (200, b"")
    assert json.loads(response.getheader("X-ClickHouse-Summary"))["written_rows"] == "1000"
    # The same kept-alive connection still serves the next request.
    connection.request("GET", "/?query=" + urllib.parse.quote(f"SELECT max(at) FROM {table}"))
    assert connection.getresponse().read() == b"2023-11-14 22:13:20.123\n"
    connection.close()


def test_datetime64_from_integers(ch_client: Client, table: str) -> None:
    """Epoch ms ints: Native stores them as ticks; JSON needs the raw-value setting."""
    ch_client.insert(table, [[1, 1, "native", EPOCH_MS, {}, []]], column_names=COLUMNS)
    line = json.dumps([2, 1, "json-raw", EPOCH_MS, {}, []]) + "\n"
    raw = {"input_format_read_datetime_number_as_raw_value": 1}
    ch_client.raw_insert(table, COLUMNS, line, fmt="JSONCompactEachRow", settings=raw)
    line = json.dumps([3, 1, "json-default", EPOCH_MS, {}, []]) + "\n"
    ch_client.raw_insert(table, COLUMNS, line, fmt="JSONCompactEachRow")
    # Arrow: int64 is read as seconds even with the setting; timestamp("ms") is exact.
    for name, arrow_type in (("arrow-int64", pa.int64()), ("arrow-ts", pa.timestamp("ms"))):
        at = pa.array([EPOCH_MS], arrow_type)
        ch_client.insert_arrow(
            table,
            pa.table({"id": pa.array([4], pa.uint64()), "name": [name], "at": at}),
            settings=raw,
        )
    query = f"SELECT name, toUnixTimestamp64Milli(at) FROM {table}"
    stored = dict(ch_client.query(query).result_rows)
    assert stored["native"] == EPOCH_MS
    assert stored["json-raw"] == EPOCH_MS
    # Without the setting ClickHouse >= 26.8 reads the number as seconds (out of range).
    assert stored["json-default"] != EPOCH_MS
    assert stored["arrow-ts"] == EPOCH_MS
    assert stored["arrow-int64"] != EPOCH_MS


def test_split_insert_and_output_format() -> None:
    head = split_insert(b"INSERT INTO t (`format`) FORMAT CSV\n1\n2\n")
    assert head is not None and (head.statement, head.fmt) == ("INSERT INTO t (`format`)", "CSV")
    text = b"INSERT INTO t FORMAT CSV  \n1\n2\n"
    assert text[split_insert(text).data_offset :] == b"1\n2\n"
    inline = split_insert(b"INSERT INTO t SETTINGS a='FORMAT x' FORMAT JSONEachRow {\"a\": 1}")
    assert inline is not None and inline.fmt == "JSONEachRow"
    assert inline.statement == "INSERT INTO t SETTINGS a='FORMAT x'"
    assert split_insert(b"INSERT INTO t VALUES (1, 'FORMAT CSV')") is None
    assert split_insert(b"SELECT 1 FORMAT CSV") is None
    assert output_format("SELECT 'FORMAT JSON' FORMAT Native", "TSV") == "Native"
    assert output_format("SELECT 'FORMAT JSON'", "TSV") == "TSV"


def test_decompress_concatenated_frames() -> None:
    frames = [lz4.frame.compress(b"a" * 1000), lz4.frame.compress(b"b" * 10)]
    stream = frames[0] + frames[1]
    pieces = [stream[i : i + 7] for i in range(0, len(stream), 7)]
    assert b"".join(decompress(pieces, "lz4")) == b"a" * 1000 + b"b" * 10


def test_password_protected_endpoint(tmp_path: Path) -> None:
    with EmbeddedClickHouse(tmp_path / "ch", password="s3cr3t-pw") as endpoint:
        assert clickhouse_client(endpoint.url).command("SELECT 1") == 1
        wrong = endpoint.url.replace("s3cr3t-pw", "nope-pw")
        with pytest.raises(ClickHouseError, match="authentication failed") as refused:
            clickhouse_client(wrong)
        assert "nope-pw" not in str(refused.value)
        # The data dir is locked: a second engine on it fails with the server's own reason.
        with pytest.raises(ClickHouseError, match="is in use by pid"):
            EmbeddedClickHouse(tmp_path / "ch").start()


def test_unreachable_server_is_a_clear_error() -> None:
    with pytest.raises(ClickHouseError, match="connection refused") as refused:
        clickhouse_client("http://127.0.0.1:9?username=u&password=hunter22")
    assert "hunter22" not in str(refused.value)


def test_unknown_database_is_named_however_it_was_given(
    chdb_endpoint: EmbeddedClickHouse,
) -> None:
    with pytest.raises(ClickHouseError, match="database 'nowhere_a' does not exist"):
        clickhouse_client(f"{chdb_endpoint.url}/nowhere_a")
    with pytest.raises(ClickHouseError, match="database 'nowhere_b' does not exist"):
        clickhouse_client(chdb_endpoint.url, database="nowhere_b")


def test_stop_ends_the_process(tmp_path: Path) -> None:
    endpoint = EmbeddedClickHouse(tmp_path / "ch").start()
    pid = endpoint.pid
    endpoint.stop()
    assert pid is not None and not psutil.pid_exists(pid)
    with pytest.raises(ClickHouseError, match="not running"):
        _ = endpoint.url


def test_server_exits_when_its_parent_is_killed(tmp_path: Path) -> None:
    parent_code = textwrap.dedent(
        f"""
        import sys, time
        from rrlab.infra.clickhouse import EmbeddedClickHouse
        endpoint = EmbeddedClickHouse({str(tmp_path / "ch")!r}).start()
        print(endpoint.pid, flush=True)
        time.sleep(600)
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", parent_code], stdout=subprocess.PIPE)
    try:
        assert parent.stdout is not None
        server_pid = int(parent.stdout.readline())
        assert psutil.pid_exists(server_pid)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        server = psutil.Process(server_pid)
        # A deadline, not a timing assertion: the server polls its parent twice a second.
        server.wait(timeout=60)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
    assert not psutil.pid_exists(server_pid)


def test_client_side_never_imports_chdb() -> None:
    check = (
        "import sys, rrlab.infra.clickhouse, rrlab.infra.ch_migrations; "
        "sys.exit('chdb' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", check]).returncode == 0
