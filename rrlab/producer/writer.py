"""Writing generated TaskRun inserts, status updates and deletes to PostgreSQL with psycopg 3.

Each batch of records is split by the configured mix into inserts, updates and deletes;
each kind is one transaction, so a killed producer leaves whole statements or nothing,
and its latency (commit included) is measured on its own. Just before each COMMIT the
writer can announce the transaction's id (see :class:`RunWriter`), so whoever counts the
rows can later ask PostgreSQL whether a transaction it never heard back about committed.

Why binary COPY and ``UPDATE … FROM unnest(arrays)``: measured on this 2-core box with the
embedded server (batches of 500, 1 KB payloads, row generation included; CPU per row of
client + server backend, steadier than rows/s on a shared machine): inserts by binary COPY
~23 + 14 µs (up to ~25,700 rows/s seen), text COPY ~31–37 + 19–22 µs (~16,500/s),
pipelined executemany ~48 + 40 µs (~7,300/s). With 25% updates, unnest updates keep
~25 + 21 µs per record (up to ~17,200 records/s), per-row prepared UPDATEs ~45 + 30 µs.
"""

from __future__ import annotations

import random
import struct
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from fractions import Fraction

import psycopg
from psycopg import postgres, sql
from psycopg.adapt import Dumper
from psycopg.pq import Format

from rrlab.exceptions import PostgresError
from rrlab.infra.postgres import connect
from rrlab.infra.taskrun_schema import TABLE, enums, taskrun_columns
from rrlab.producer.generator import (
    COMPLETION_COLUMNS,
    EXECUTING_COLUMNS,
    INSERT_COLUMNS,
    JSONB_COLUMNS,
    NEXT_STATUSES,
    PENDING,
    RunGenerator,
    RunUpdate,
)
from rrlab.urls import PostgresUrl, mask_text

POOL_CAPACITY = 50_000
INSERT, UPDATE, DELETE = "insert", "update", "delete"

_PG_TYPES = {column.name: column.pg_type for column in taskrun_columns()}
_ENUMS = set(enums())
# Binary COPY type of each pg type: the binary form of an enum is its label, like text's.
_COPY_TYPES = {
    "timestamp(3) without time zone": "timestamp",
    "integer": "int4",
    "boolean": "bool",
    "double precision": "float8",
}


def _copy_type(column: str) -> str:
    pg_type = _PG_TYPES[column]
    return "text" if pg_type in _ENUMS else _COPY_TYPES.get(pg_type, pg_type)


def _sql_type(column: str) -> sql.Composable:
    pg_type = _PG_TYPES[column]
    return sql.Identifier(pg_type) if pg_type in _ENUMS else sql.SQL(pg_type)


def _array_type(column: str) -> sql.Composable:
    """Type of the array a column's values travel in; enums and jsonb go as text and are cast."""
    if _PG_TYPES[column] in _ENUMS or column in JSONB_COLUMNS:
        return sql.SQL("text[]")
    return sql.SQL(_copy_type(column) + "[]")


_COPY_SQL = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
    sql.Identifier(TABLE), sql.SQL(", ").join(map(sql.Identifier, INSERT_COLUMNS))
)
_COPY_TYPE_NAMES = [_copy_type(column) for column in INSERT_COLUMNS]
_DELETE_SQL = sql.SQL("DELETE FROM {} WHERE id = ANY(%s)").format(sql.Identifier(TABLE))
_XID_SQL = "SELECT pg_current_xact_id()::text"

# (operation, rows, transaction id): called inside the transaction, just before its COMMIT
Announce = Callable[[str, int, str], None]


def _update_sql(columns: tuple[str, ...]) -> sql.Composed:
    """One UPDATE for many runs: one array parameter per column, unnested into rows."""
    return sql.SQL(
        "UPDATE {table} AS t SET {assignments}"
        ' FROM unnest(%s::text[], {arrays}) AS v("id", {names}) WHERE t."id" = v."id"'
    ).format(
        table=sql.Identifier(TABLE),
        assignments=sql.SQL(", ").join(
            sql.SQL("{} = v.{}::{}").format(sql.Identifier(c), sql.Identifier(c), _sql_type(c))
            for c in columns
        ),
        arrays=sql.SQL(", ").join(sql.SQL("%s::{}").format(_array_type(c)) for c in columns),
        names=sql.SQL(", ").join(map(sql.Identifier, columns)),
    )


_UPDATE_SQL = {columns: _update_sql(columns) for columns in (EXECUTING_COLUMNS, COMPLETION_COLUMNS)}


class RunPool:
    """A bounded pool of this worker's runs that can still change status: id → status.

    Taking a run removes it, so a batch never touches one run twice; the caller puts it
    back (with its new status, or its old one when the write failed). When the pool is
    full, a random run is forgotten: it simply never changes again.
    """

    def __init__(self, rng: random.Random, capacity: int = POOL_CAPACITY) -> None:
        self._rng = rng
        self._capacity = capacity
        self._ids: list[str] = []
        self._statuses: list[str] = []
        self._index: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, run_id: str, status: str) -> None:
        if status not in NEXT_STATUSES:
            return
        if len(self._ids) >= self._capacity:
            self._remove(self._rng.randrange(len(self._ids)))
        self._index[run_id] = len(self._ids)
        self._ids.append(run_id)
        self._statuses.append(status)

    def take(self) -> tuple[str, str] | None:
        """Remove and return a random (run id, status); None when the pool is empty."""
        if not self._ids:
            return None
        return self._remove(self._rng.randrange(len(self._ids)))

    def _remove(self, position: int) -> tuple[str, str]:
        # swap with the last entry so removal is O(1)
        taken = self._ids[position], self._statuses[position]
        last_id, last_status = self._ids.pop(), self._statuses.pop()
        del self._index[taken[0]]
        if position < len(self._ids):
            self._ids[position], self._statuses[position] = last_id, last_status
            self._index[last_id] = position
        return taken


class WriteMix:
    """Splits batches into inserts, updates and deletes so the totals follow the ratios exactly."""

    def __init__(self, insert_ratio: float, delete_ratio: float) -> None:
        # decimal fractions from the config (0.8, 0.05) are exact this way
        self._insert = Fraction(str(insert_ratio))
        self._delete = Fraction(str(delete_ratio))
        self._total = 0

    def split(self, records: int) -> tuple[int, int, int]:
        """(inserts, updates, deletes) of the next ``records`` records."""
        before, self._total = self._total, self._total + records
        inserts = int(self._total * self._insert) - int(before * self._insert)
        deletes = int(self._total * self._delete) - int(before * self._delete)
        return inserts, records - inserts - deletes, deletes


@dataclass
class BatchOutcome:
    """What one batch wrote: counts, one latency per statement, and the error that stopped it."""

    inserts: int = 0
    updates: int = 0
    deletes: int = 0
    # (operation, rows, milliseconds including the commit)
    latencies: list[tuple[str, int, float]] = field(default_factory=list)
    error: str | None = None
    # the error struck the COMMIT of an announced transaction: whether it committed (the
    # connection broke after the server committed) only PostgreSQL can tell; not counted here
    commit_unknown: bool = False

    @property
    def records(self) -> int:
        return self.inserts + self.updates + self.deletes


class _JsonTextBinaryDumper(Dumper):
    """Binary jsonb from JSON text: version byte 1, then the text (the generator makes text)."""

    format = Format.BINARY
    oid = postgres.types["jsonb"].oid

    def dump(self, obj: str) -> bytes:
        return b"\x01" + obj.encode()


_TEXT_OID = postgres.types["text"].oid
_ARRAY_HEAD = struct.Struct("!iiIii")  # dimensions, has nulls, element oid, length, lower bound
_ITEM_LENGTH = struct.Struct("!i")


class _TextArrayBinaryDumper(Dumper):
    """Binary text[] from a list of str (the generator's arrays: one dimension, no NULLs).

    psycopg's own list dumper is generic Python that sizes and types every element: it was
    ~12% of a producer's CPU for the three (mostly empty) arrays of each inserted run.
    """

    format = Format.BINARY
    oid = postgres.types["text"].array_oid

    def dump(self, obj: list[str]) -> bytes:
        if not obj:
            return _EMPTY_TEXT_ARRAY
        parts = [_ARRAY_HEAD.pack(1, 0, _TEXT_OID, len(obj), 1)]
        for item in obj:
            data = item.encode()
            parts.append(_ITEM_LENGTH.pack(len(data)))
            parts.append(data)
        return b"".join(parts)


_EMPTY_TEXT_ARRAY = struct.pack("!iiI", 0, 0, _TEXT_OID)  # no dimensions


class RunWriter:
    """One worker's connection and the bookkeeping that keeps its status transitions real.

    ``announce``, when given, is called once per transaction after its statements and just
    before its COMMIT, with the operation, the rows and the transaction's id
    (``pg_current_xact_id``, one more round trip). A process killed after announcing has
    left a transaction whose fate ``pg_xact_status`` tells; one killed before announcing has
    left nothing (its transaction is rolled back when the connection drops).
    """

    def __init__(
        self,
        url: PostgresUrl,
        generator: RunGenerator,
        pool: RunPool,
        mix: WriteMix,
        announce: Announce | None = None,
    ) -> None:
        self._url = url
        self._generator = generator
        self._pool = pool
        self._mix = mix
        self._announce = announce
        self._conn: psycopg.Connection | None = None
        self._committing = False  # an announced transaction's COMMIT is under way

    def connect(self) -> None:
        """Open the connection now (it is also reopened on demand after a failure)."""
        if self._conn is None or self._conn.closed:
            conn = connect(self._url)
            # registered for private types: COPY's set_types finds them by the jsonb and
            # text[] oids, and no other query on this connection ever dumps through them
            conn.adapters.register_dumper(_JsonText, _JsonTextBinaryDumper)
            conn.adapters.register_dumper(_TextArray, _TextArrayBinaryDumper)
            self._conn = conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def write_batch(self, records: int) -> BatchOutcome:
        """Write ``records`` records (inserts, updates, deletes by the mix).

        A database error does not raise: the outcome names it (password masked), the runs
        taken for the failed statements go back to the pool unchanged, and a broken
        connection is reopened by the next call.
        """
        inserts, updates, deletes = self._mix.split(records)
        taken_for_update = self._take(updates)
        taken_for_delete = self._take(deletes)
        # runs the pool cannot supply (e.g. at the very start) are written as inserts instead
        inserts += updates - len(taken_for_update) + deletes - len(taken_for_delete)
        now = datetime.now(UTC).replace(tzinfo=None)
        outcome = BatchOutcome()
        self._committing = False
        try:
            self.connect()
            if inserts:
                self._insert([self._generator.new_run(now) for _ in range(inserts)], outcome)
            if taken_for_update:
                self._update(taken_for_update, now, outcome)
                taken_for_update = []
            if taken_for_delete:
                self._delete(taken_for_delete, outcome)
                taken_for_delete = []
        except (psycopg.Error, PostgresError) as exc:
            outcome.commit_unknown = self._committing
            for run_id, status in taken_for_update + taken_for_delete:
                self._pool.add(run_id, status)
            outcome.error = mask_text(str(exc).strip(), (self._url.password,))
            if self._conn is not None and (self._conn.closed or self._conn.broken):
                self.close()
        return outcome

    def _take(self, count: int) -> list[tuple[str, str]]:
        taken = []
        for _ in range(count):
            run = self._pool.take()
            if run is None:
                break
            taken.append(run)
        return taken

    def _insert(self, rows: list[tuple], outcome: BatchOutcome) -> None:
        started = time.perf_counter()
        with self._transaction(INSERT, len(rows)) as cursor, cursor.copy(_COPY_SQL) as copy:
            copy.set_types(_COPY_TYPE_NAMES)
            for row in rows:
                copy.write_row(row)
        outcome.latencies.append((INSERT, len(rows), _ms_since(started)))
        outcome.inserts += len(rows)
        for row in rows:
            self._pool.add(row[0], PENDING)

    def _update(self, taken: list[tuple[str, str]], now: datetime, outcome: BatchOutcome) -> None:
        groups: dict[tuple[str, ...], list[RunUpdate]] = {}
        for run_id, status in taken:
            update = self._generator.transition(run_id, status, now)
            groups.setdefault(update.columns, []).append(update)
        started = time.perf_counter()
        with self._transaction(UPDATE, len(taken)) as cursor:
            for columns, group in groups.items():
                arrays = [list(values) for values in zip(*(u.values for u in group), strict=True)]
                cursor.execute(_UPDATE_SQL[columns], [[u.run_id for u in group], *arrays])
        outcome.latencies.append((UPDATE, len(taken), _ms_since(started)))
        outcome.updates += len(taken)
        for group in groups.values():
            for update in group:
                self._pool.add(update.run_id, update.status)

    def _delete(self, taken: list[tuple[str, str]], outcome: BatchOutcome) -> None:
        started = time.perf_counter()
        with self._transaction(DELETE, len(taken)) as cursor:
            cursor.execute(_DELETE_SQL, [[run_id for run_id, _ in taken]])
        outcome.latencies.append((DELETE, len(taken), _ms_since(started)))
        outcome.deletes += len(taken)

    @contextmanager
    def _transaction(self, operation: str, rows: int) -> Iterator[psycopg.Cursor]:
        """A binary cursor in a transaction: announced and committed on success, rolled back
        on error."""
        assert self._conn is not None
        with self._conn.transaction(), self._conn.cursor(binary=True) as cursor:
            yield cursor
            if self._announce is not None:
                xid = cursor.execute(_XID_SQL).fetchone()[0]
                self._announce(operation, rows, xid)
                self._committing = True
        self._committing = False


class _JsonText(str):
    """Never instantiated: the Python type the jsonb COPY dumper is registered under."""


class _TextArray(list):
    """Never instantiated: the Python type the text[] COPY dumper is registered under."""


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)
