"""Where rows go: ClickHouse through clickhouse-connect, or an in-process mock.

Both sinks encode a batch the same way, as JSONCompactEachRow (one JSON array per row),
chosen by measurement through the embedded endpoint (20,000 task_runs_v2 rows, 56 columns,
3 runs each): the consumer spent ~100–125k rows per CPU-second encoding JSONCompactEachRow
with the stdlib encoder, ~50–87k building Arrow from Python rows, ~60k for
clickhouse-connect's Native; the endpoint's CPU was similar for all three (0.47–0.69 s).
The consumer is the process under test, and ClickHouse's "(at row N)" errors name a poison
row exactly in this format. DateTime64 values are epoch-millisecond integers, read as
milliseconds thanks to ``input_format_read_datetime_number_as_raw_value``.

One call of :meth:`Sink.insert` is one attempt; retries belong to the caller (see
:mod:`rrlab.service.retry`). A row whose JSON ClickHouse cannot ingest never fails its
batch: :class:`ClickHouseSink` sanitizes the batch, then stores the row with its JSON
stripped to ``{}``, then, as a last resort, skips bad rows, counting each step.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from rrlab.exceptions import SinkError
from rrlab.service._json_walk import is_plain

log = logging.getLogger(__name__)

Row = Sequence[Any]

INSERT_FORMAT = "JSONCompactEachRow"
INSERT_SETTINGS: dict[str, Any] = {
    "enable_json_type": 1,
    "type_json_skip_duplicated_paths": 1,
    "input_format_json_infer_array_of_dynamic_from_array_of_different_types": 1,
    "input_format_read_datetime_number_as_raw_value": 1,
    # Synchronous: the answer comes after the rows are in a part, which is what lets the
    # consumer acknowledge the LSN. Servers may default to async inserts (chdb does), whose
    # buffers live in server memory; the reference's task_runs_v2 insert is synchronous too.
    "async_insert": 0,
}
# the reference's recovery inserts: serial as well, so "(at row N)" counts from 1
ISOLATION_SETTINGS: dict[str, Any] = {"input_format_parallel_parsing": 0}
INVALID_UTF16 = "[invalid-utf16]"
JSON_PARSE_ERROR = "cannot parse json object"
_AT_ROW = re.compile(r"\(at row (\d+)\)")
_INT_MIN, _UINT_MAX = -(1 << 63), (1 << 64) - 1

# rows are built by the transform and never circular: skipping the check is ~5% faster
_encode_row = json.JSONEncoder(separators=(",", ":"), check_circular=False).encode
_fast_encode_row = orjson.dumps


def encode_row(row: Row) -> bytes:
    """One row's line of a JSONCompactEachRow body (no newline).

    A row of plain JSON values (``is_plain``, below) is written by orjson (~8× the stdlib
    encoder), non-ASCII text as UTF-8; any other row by the stdlib encoder with
    ``ensure_ascii``, exactly as before: non-finite floats as ``NaN``/``Infinity`` (which
    ClickHouse rejects and recovery handles; orjson would write ``null``), lone surrogates
    as escapes (orjson raises on them), integers beyond 64 bits in full (orjson raises), and
    other types as the stdlib does (orjson would serialize datetimes, UUIDs, enums).
    """
    # Plain (is_plain, in C): only str/int/bool/None, finite floats, and dicts (their
    # values)/lists/tuples of those, by exact type: what orjson writes like the stdlib
    # encoder, bar the non-ASCII escapes. Rows nested deeper than orjson's limit are not.
    if is_plain(row):
        try:
            line = _fast_encode_row(row)
        except orjson.JSONEncodeError:  # a lone surrogate, an integer beyond 64 bits
            pass
        else:
            # orjson's bytes keep its whole output buffer (at least 4 KiB, ~10× the length
            # beyond that): a 1–2 KB line held 4–16 KiB. Pending changes keep their lines
            # until their flush, so they get a copy of the line's size (~0.1 µs).
            return memoryview(line).tobytes()
    return _encode_row(row).encode("ascii")


def encode_rows(rows: Sequence[Row]) -> bytes:
    """The JSONCompactEachRow body of ``rows``: their :func:`encode_row` lines."""
    body = bytearray()
    # Appending each row as it is made, not joining a list: orjson's output buffers, all
    # alive at once, made glibc trim and re-fault the heap on every batch (8× slower).
    for row in rows:
        body += encode_row(row)
        body += b"\n"
    del body[-1:]
    return bytes(body)


def body_of(rows: Sequence[Row]) -> bytes:
    """The JSONCompactEachRow body of ``rows``: the one :class:`EncodedRows` carries, or
    :func:`encode_rows` of plain rows."""
    return rows.body if isinstance(rows, EncodedRows) else encode_rows(rows)


class EncodedRows(Sequence[Row]):
    """Rows given by their encoded lines (:func:`encode_row`), decoded only when read.

    The consumer encodes each row as its change arrives and keeps only the bytes: a sink
    needs the rows themselves just to count them (``len``, free) and, rarely, to recover
    from a poison row. The stdlib ``json`` reads back exactly what was written (``NaN``,
    lone surrogates, integers beyond 64 bits, UTF-8 text); tuples come back as lists.
    ``body`` is ``encode_rows`` of the rows, byte for byte.
    """

    def __init__(self, lines: Sequence[bytes]) -> None:
        self.body = b"\n".join(lines)
        self._count = len(lines)
        self._rows: list[Row] | None = None

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, index: Any) -> Any:
        return self._decoded()[index]

    def _decoded(self) -> list[Row]:
        """All rows, decoded once (a sink that reads one usually reads them all)."""
        if self._rows is None:
            lines = self.body.split(b"\n") if self._count else []
            self._rows = [json.loads(line) for line in lines]
        return self._rows


@dataclass
class InsertResult:
    """What one insert call stored (rows and bytes sent) and how it dealt with poison rows."""

    rows: int = 0
    bytes: int = 0
    sanitized_rows: int = 0
    stripped_rows: int = 0
    skipped_rows: int = 0

    def add(self, other: InsertResult) -> None:
        self.rows += other.rows
        self.bytes += other.bytes
        self.sanitized_rows += other.sanitized_rows
        self.stripped_rows += other.stripped_rows
        self.skipped_rows += other.skipped_rows


class Sink(Protocol):
    """One insert attempt of rows into a table; raises when the attempt failed.

    ``rows`` is usually an :class:`EncodedRows` (the consumer encodes each row as its change
    arrives): a sink sends :func:`body_of` the rows, and reads the rows themselves (which
    decodes them) only when it must change them: poison-row recovery encodes its fixed rows
    afresh.
    """

    def insert(
        self, table: str, columns: Sequence[str], rows: Sequence[Row], json_columns: frozenset[str]
    ) -> InsertResult: ...

    def close(self) -> None: ...


class SinkTotals:
    """Thread-safe running totals of a sink (flushes run in several threads)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.totals = InsertResult()
        self.inserts = 0

    def record(self, result: InsertResult) -> InsertResult:
        with self._lock:
            self.totals.add(result)
            self.inserts += 1
        return result


class MockSink(SinkTotals):
    """No I/O: encodes the rows like the real sink (so the consumer's CPU profile keeps that
    cost), counts rows and bytes, and waits ``delay_ms`` per insert to stand in for the
    network round trip."""

    def __init__(self, delay_ms: float = 0.0) -> None:
        super().__init__()
        self._delay_s = delay_ms / 1000

    def insert(
        self, table: str, columns: Sequence[str], rows: Sequence[Row], json_columns: frozenset[str]
    ) -> InsertResult:
        body = body_of(rows)
        if self._delay_s:
            time.sleep(self._delay_s)
        return self.record(InsertResult(rows=len(rows), bytes=len(body)))

    def close(self) -> None:
        pass


class ClickHouseSink(SinkTotals):
    """Inserts through a clickhouse-connect client: the embedded endpoint or a user's server.

    ``extra_settings`` are added to every insert (e.g. an insert strategy's async settings).
    ``max_poison_strips`` bounds the rounds that store a named bad row with its JSON
    stripped, as the reference's ``maxPoisonStripsPerBatch``.
    """

    def __init__(
        self,
        client: Any,
        *,
        max_poison_strips: int = 1,
        extra_settings: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self._client = client
        self._max_strips = max_poison_strips
        self._settings = {**INSERT_SETTINGS, **(extra_settings or {})}

    def insert(
        self, table: str, columns: Sequence[str], rows: Sequence[Row], json_columns: frozenset[str]
    ) -> InsertResult:
        try:
            return self.record(self._send(table, columns, rows, self._settings))
        except Exception as exc:
            if JSON_PARSE_ERROR not in str(exc).lower():
                raise
            log.warning("%s: ClickHouse cannot parse a JSON value; recovering: %s", table, exc)
        json_indexes = [i for i, name in enumerate(columns) if name in json_columns]
        return self.record(self._recover(table, columns, list(rows), json_indexes))

    def close(self) -> None:
        self._client.close()

    def _send(
        self, table: str, columns: Sequence[str], rows: Sequence[Row], settings: dict[str, Any]
    ) -> InsertResult:
        body = body_of(rows)
        summary = self._client.raw_insert(
            table, list(columns), body, settings=settings, fmt=INSERT_FORMAT
        )
        reported = getattr(summary, "summary", None) or {}
        if "written_rows" in reported and int(reported["written_rows"]) < len(rows):
            # an answer that stored fewer rows than sent must not let the LSN be acknowledged
            raise SinkError(
                f"ClickHouse accepted an insert into {table} but reports "
                f"{reported['written_rows']} rows written of {len(rows)} sent; retrying."
            )
        return InsertResult(rows=len(rows), bytes=len(body))

    def _recover(
        self, table: str, columns: Sequence[str], rows: list[Row], json_indexes: list[int]
    ) -> InsertResult:
        """The reference's steps: sanitize and retry; strip named rows; skip bad rows."""
        sanitized = 0
        for position, row in enumerate(rows):
            clean = sanitize_row(row, json_indexes)
            if clean is not row:
                rows[position] = clean
                sanitized += 1
        settings = self._settings
        if sanitized:
            log.warning("%s: %d row(s) sanitized", table, sanitized)
        else:
            # the plain insert already failed on these very rows: go straight to isolation
            settings = {**self._settings, **ISOLATION_SETTINGS}
        stripped = 0
        while True:
            try:
                result = self._send(table, columns, rows, settings)
                result.sanitized_rows, result.stripped_rows = sanitized, stripped
                return result
            except Exception as exc:
                if JSON_PARSE_ERROR not in str(exc).lower():
                    raise
                error = exc
            if settings is self._settings:
                settings = {**self._settings, **ISOLATION_SETTINGS}
                continue
            bad = _row_named_in(error, len(rows))
            if bad is None or stripped >= self._max_strips:
                break
            rows[bad] = strip_row(rows[bad], json_indexes)
            stripped += 1
            log.warning("%s: row %d stored with its JSON stripped to {}", table, bad + 1)
        return self._skip_bad_rows(table, columns, rows, settings, sanitized, stripped)

    def _skip_bad_rows(
        self,
        table: str,
        columns: Sequence[str],
        rows: list[Row],
        settings: dict[str, Any],
        sanitized: int,
        stripped: int,
    ) -> InsertResult:
        """Last resort: let ClickHouse skip every row it cannot parse, and count them."""
        lenient = {
            **settings,
            "input_format_allow_errors_num": len(rows),
            "input_format_allow_errors_ratio": 1,
        }
        body = encode_rows(rows)
        summary = self._client.raw_insert(
            table, list(columns), body, settings=lenient, fmt=INSERT_FORMAT
        )
        written = int(summary.written_rows) if summary.written_rows else 0
        skipped = len(rows) - written
        log.error("%s: %d row(s) with unparseable JSON skipped", table, skipped)
        return InsertResult(
            rows=written,
            bytes=len(body),
            sanitized_rows=sanitized,
            stripped_rows=stripped,
            skipped_rows=skipped,
        )


def _row_named_in(error: BaseException, row_count: int) -> int | None:
    """The 0-based index of the row an "(at row N)" error names, if it is one of ours."""
    match = _AT_ROW.search(str(error))
    if match is None:
        return None
    index = int(match.group(1)) - 1
    return index if 0 <= index < row_count else None


def strip_row(row: Row, json_indexes: list[int]) -> list[Any]:
    """The row with every JSON column replaced by ``{}``."""
    stripped = list(row)
    for i in json_indexes:
        stripped[i] = {}
    return stripped


def sanitize_row(row: Row, json_indexes: list[int]) -> Row:
    """The row with bad surrogates and out-of-range integers fixed; ``row`` itself if clean."""
    fixed: list[Any] | None = None
    for i in json_indexes:
        value = row[i]
        clean = sanitize_json(value)
        if clean is not value:
            if fixed is None:
                fixed = list(row)
            fixed[i] = clean
    return row if fixed is None else fixed


def sanitize_json(value: Any) -> Any:
    """Strings with unpaired surrogates → "[invalid-utf16]"; integers outside the
    Int64/UInt64 range → strings. Returns ``value`` itself when nothing changed."""
    if isinstance(value, str):
        return value if value.isascii() or _encodable(value) else INVALID_UTF16
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value if _INT_MIN <= value <= _UINT_MAX else str(value)
    if isinstance(value, dict):
        changed = False
        items = []
        for key, item in value.items():
            clean_key, clean_item = sanitize_json(key), sanitize_json(item)
            changed = changed or clean_key is not key or clean_item is not item
            items.append((clean_key, clean_item))
        return dict(items) if changed else value
    if isinstance(value, list):
        cleaned = [sanitize_json(item) for item in value]
        changed = any(c is not v for c, v in zip(cleaned, value, strict=True))
        return cleaned if changed else value
    return value


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
