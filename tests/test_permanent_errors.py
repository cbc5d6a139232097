"""Permanent or transient: real errors of the embedded ClickHouse, classified as the sink's
retry loop does (rrlab.service.retry.is_permanent)."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import clickhouse_connect
import pytest
from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError

from rrlab.exceptions import SinkError
from rrlab.infra.clickhouse import EmbeddedClickHouse
from rrlab.service.retry import (
    PERMANENT_ERRORS,
    RetryPolicy,
    clickhouse_error_code,
    is_permanent,
    with_retry,
)

ROW = b"[1]\n"


@pytest.fixture(scope="module")
def scratch(ch_client: Any) -> Iterator[str]:
    """A database of this module's own: a plain table, a checked one, one that takes 1 part."""
    database = f"errors_{uuid.uuid4().hex[:8]}"
    ch_client.command(f"CREATE DATABASE {database}")
    ch_client.command(f"CREATE TABLE {database}.plain (x UInt8) ENGINE = MergeTree ORDER BY x")
    ch_client.command(
        f"CREATE TABLE {database}.checked (x UInt8, CONSTRAINT big CHECK x > 3) "
        "ENGINE = MergeTree ORDER BY x"
    )
    ch_client.command(
        f"CREATE TABLE {database}.one_part (x UInt8) ENGINE = MergeTree ORDER BY x "
        "SETTINGS parts_to_throw_insert = 1, parts_to_delay_insert = 1, max_delay_to_insert = 0"
    )
    ch_client.command(f"SYSTEM STOP MERGES {database}.one_part")
    yield database
    ch_client.command(f"DROP DATABASE {database}")


def insert(client: Any, table: str, columns: list[str] | None = None) -> None:
    client.raw_insert(
        table, columns or ["x"], ROW, fmt="JSONCompactEachRow", settings={"async_insert": 0}
    )


def server_error(action: Callable[[], object]) -> DatabaseError:
    with pytest.raises(DatabaseError) as caught:
        action()
    return caught.value


PERMANENT = {
    "unknown table": (60, lambda c, db: insert(c, f"{db}.no_such_table")),
    "unknown database": (81, lambda c, db: insert(c, "no_such_database.plain")),
    "unknown column": (16, lambda c, db: insert(c, f"{db}.plain", ["no_such_column"])),
    "syntax": (62, lambda c, db: c.command("SELEC 1")),
    "type mismatch": (53, lambda c, db: c.command("SELECT 1 IN ('a')")),
    "illegal type": (43, lambda c, db: c.command("SELECT toDate([1])")),
    "constraint violated": (469, lambda c, db: insert(c, f"{db}.checked")),
}


@pytest.mark.parametrize("case", PERMANENT)
def test_clickhouse_refusals_are_permanent_by_their_code(
    case: str, ch_client: Any, scratch: str
) -> None:
    code, action = PERMANENT[case]
    error = server_error(lambda: action(ch_client, scratch))
    assert clickhouse_error_code(error) == code
    assert is_permanent(error)
    # a server that sends no X-ClickHouse-Exception-Code: the message alone still says it
    message_only = RuntimeError(str(error))
    assert clickhouse_error_code(message_only) == code
    assert is_permanent(message_only)


def test_the_reference_substrings_alone_miss_clickhouses_wording(
    ch_client: Any, scratch: str
) -> None:
    """Why the codes are needed: "Table x does not exist" names none of the substrings."""
    for case in ("unknown table", "unknown database", "constraint violated"):
        _, action = PERMANENT[case]
        message = str(server_error(lambda a=action: a(ch_client, scratch))).lower()
        assert not any(marker in message for marker in PERMANENT_ERRORS), case


def test_an_insert_into_a_missing_table_is_tried_once(ch_client: Any, scratch: str) -> None:
    calls = []

    def attempt() -> None:
        calls.append(1)
        insert(ch_client, f"{scratch}.no_such_table")

    with pytest.raises(SinkError, match=r"permanent error.*UNKNOWN_TABLE"):
        with_retry(attempt, RetryPolicy(5, 1, 1), sleep=lambda s: None)
    assert len(calls) == 1


TRANSIENT = {
    "timeout": (
        159,
        lambda c, db: c.command(
            "SELECT count() FROM numbers(10000000000)", settings={"max_execution_time": 0.2}
        ),
    ),
    "memory": (
        241,
        lambda c, db: c.command(
            "SELECT groupArray(number) FROM numbers(10000000)",
            settings={"max_memory_usage": 1_000_000},
        ),
    ),
}


@pytest.mark.parametrize("case", TRANSIENT)
def test_overload_errors_are_retried(case: str, ch_client: Any, scratch: str) -> None:
    code, action = TRANSIENT[case]
    error = server_error(lambda: action(ch_client, scratch))
    assert clickhouse_error_code(error) == code
    assert not is_permanent(error)


def test_too_many_parts_is_retried_until_the_attempts_run_out(ch_client: Any, scratch: str) -> None:
    insert(ch_client, f"{scratch}.one_part")  # the table's one allowed part
    calls = []

    def attempt() -> None:
        calls.append(1)
        insert(ch_client, f"{scratch}.one_part")

    with pytest.raises(SinkError, match=r"every retry.*TOO_MANY_PARTS"):
        with_retry(attempt, RetryPolicy(3, 1, 1), sleep=lambda s: None)
    assert len(calls) == 3


def test_a_transient_code_wins_over_a_substring_its_message_quotes() -> None:
    """Messages can quote the rows sent; a quoted "permission denied" must not stop retries."""
    error = RuntimeError(
        "Code: 241. DB::Exception: Memory limit exceeded while reading 'permission denied' "
        "(MEMORY_LIMIT_EXCEEDED)"
    )
    assert not is_permanent(error)
    error = RuntimeError(
        "Code: 202. DB::Exception: Too many simultaneous queries. Maximum: 100. "
        "(TOO_MANY_SIMULTANEOUS_QUERIES)"
    )
    assert not is_permanent(error)


def test_a_refused_connection_is_retried() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(OperationalError) as caught:
        clickhouse_connect.get_client(host="127.0.0.1", port=port, connect_timeout=2)
    assert clickhouse_error_code(caught.value) is None
    assert not is_permanent(caught.value)


def test_a_wrong_password_is_permanent(tmp_path: Path) -> None:
    with EmbeddedClickHouse(tmp_path / "ch", password="right-pw") as endpoint:
        error = server_error(
            lambda: clickhouse_connect.get_client(
                host="127.0.0.1", port=endpoint.port, username="default", password="wrong-pw"
            )
        )
    assert clickhouse_error_code(error) == 516
    assert is_permanent(error)
