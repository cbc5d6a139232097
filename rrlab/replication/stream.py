"""Logical replication client: the copy-both wire protocol over ``psycopg.pq.PGconn``.

It reads XLogData, answers keepalives and sends standby status updates, but never
reports a flush position beyond the one its caller says is durable.
"""

from __future__ import annotations

import re
import select
import struct
import time
from typing import NamedTuple

from psycopg import pq
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from rrlab.exceptions import ReplicationError, SlotInUseError
from rrlab.service.events import PG_EPOCH_OFFSET_US, lsn_to_str
from rrlab.urls import mask_text

# XLogData 'w': wal_start, wal_end, send_time; keepalive 'k': wal_end, send_time, reply flag.
_XLOG_HEADER = struct.Struct(">QQq")
_KEEPALIVE = struct.Struct(">Qq?")
# Standby status update 'r': write, flush, apply, client time, reply requested.
_STATUS_UPDATE = struct.Struct(">cQQQq?")
_XLOG_DATA = 0x77  # 'w'
_KEEPALIVE_TAG = 0x6B  # 'k'

# PostgreSQL's own rule for replication slot names.
_SLOT_NAME = re.compile(r"[a-z0-9_]{1,63}")
# Output functions of the walsender follow its session settings; the value loaders
# (rrlab.replication.values) expect ISO dates and UTC offsets.
_SESSION_OPTIONS = "-c datestyle=ISO,YMD -c timezone=UTC -c intervalstyle=postgres"

_UNDEFINED_OBJECT = "42704"
_OBJECT_IN_USE = "55006"


class XLogData(NamedTuple):
    """One XLogData message: a pgoutput payload and the WAL positions around it."""

    wal_start: int
    wal_end: int
    send_time_us: int
    payload: memoryview


def now_pg_us() -> int:
    """The current time in µs since PostgreSQL's epoch (2000-01-01 UTC)."""
    return time.time_ns() // 1000 - PG_EPOCH_OFFSET_US


def _quote_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _quote_identifier(value: str) -> str:
    return '"' + value.replace('"', '""') + '"'


def _validate_names(slot: str, publication: str) -> None:
    if not _SLOT_NAME.fullmatch(slot):
        raise ReplicationError(
            f"Invalid replication slot name {slot!r}: PostgreSQL slot names are 1-63 "
            "characters of lower-case letters, digits and underscores."
        )
    if not publication or "\x00" in publication or len(publication.encode()) > 63:
        raise ReplicationError(
            f"Invalid publication name {publication!r}: give the name of an existing "
            "publication (1-63 bytes, no NUL)."
        )


class ReplicationStream:
    """A pgoutput (protocol v1) stream from one logical replication slot.

    ``read`` returns the XLogData messages available now (waiting at most
    ``timeout_s`` for the first one); keepalives are answered inside ``read``. Status
    updates report ``flushed_lsn`` as given to :meth:`send_status`, never more.
    """

    def __init__(
        self,
        conninfo: str,
        slot: str,
        publication: str,
        start_lsn: int = 0,
        *,
        status_interval_s: float = 10.0,
        max_batch: int = 10_000,
        connect_timeout_s: int = 10,
    ) -> None:
        _validate_names(slot, publication)
        self.slot = slot
        self.publication = publication
        self.status_interval_s = status_interval_s
        self.max_batch = max_batch
        self.last_received_lsn = start_lsn
        self.server_wal_end = 0
        self.flushed_lsn = start_lsn
        self.status_updates_sent = 0
        self._last_status = time.monotonic()
        self._secrets = _secrets_of(conninfo)
        self._conn = self._connect(conninfo, connect_timeout_s)
        try:
            self._check_slot_and_publication()
            self._start(start_lsn)
        except BaseException:
            self._conn.finish()
            raise
        self._fd = self._conn.socket
        self._streaming = True
        self._publication_missing = False
        self._conn.notice_handler = self._on_notice

    # -- setup -------------------------------------------------------------------------

    def _connect(self, conninfo: str, connect_timeout_s: int) -> pq.PGconn:
        try:
            params = conninfo_to_dict(conninfo)
        except Exception as exc:
            raise ReplicationError(
                f"Cannot parse the PostgreSQL connection string: {self._mask(str(exc))}"
            ) from None
        options = f"{params.get('options', '')} {_SESSION_OPTIONS}".strip()
        params.setdefault("connect_timeout", connect_timeout_s)
        full = make_conninfo("", **{**params, "replication": "database", "options": options})
        conn = pq.PGconn.connect(full.encode())
        if conn.status != pq.ConnStatus.OK:
            message = self._mask(conn.get_error_message())
            conn.finish()
            raise ReplicationError(
                f"Cannot open a replication connection to PostgreSQL ({message.strip()}). "
                "Check that the server is running and reachable, the credentials, and that "
                "the user has the REPLICATION privilege (pg_hba.conf must allow it)."
            )
        return conn

    def _query(self, sql: str) -> list[tuple[str | None, ...]]:
        result = self._conn.exec_(sql.encode())
        if result.status != pq.ExecStatus.TUPLES_OK:
            raise self._error_from_result(result, "querying the slot")
        return [
            tuple(
                None if (v := result.get_value(r, c)) is None else bytes(v).decode()
                for c in range(result.nfields)
            )
            for r in range(result.ntuples)
        ]

    def _check_slot_and_publication(self) -> None:
        # START_REPLICATION's own errors are terse and a missing publication may only
        # surface (or, on recent servers, be skipped with a warning) once data flows.
        rows = self._query(
            "SELECT s.plugin, s.slot_type, s.database, current_database(), s.active_pid, "
            "a.application_name, a.client_addr "
            "FROM pg_replication_slots s LEFT JOIN pg_stat_activity a ON a.pid = s.active_pid "
            f"WHERE s.slot_name = {_quote_literal(self.slot)}"
        )
        if not rows:
            raise self._missing_slot_error()
        plugin, slot_type, database, current_db, active_pid, app, addr = rows[0]
        if slot_type != "logical" or plugin != "pgoutput":
            raise ReplicationError(
                f"Replication slot {self.slot!r} is a {slot_type} slot with plugin "
                f"{plugin!r}; rrlab needs a logical slot using pgoutput. Drop it and create "
                f"it with SELECT pg_create_logical_replication_slot('{self.slot}', 'pgoutput')."
            )
        if database != current_db:
            raise ReplicationError(
                f"Replication slot {self.slot!r} belongs to database {database!r}, but the "
                f"connection is to {current_db!r}; connect to {database!r}."
            )
        if active_pid is not None:
            raise self._slot_in_use_error(active_pid, app, addr)
        if not self._query(
            f"SELECT 1 FROM pg_publication WHERE pubname = {_quote_literal(self.publication)}"
        ):
            raise self._missing_publication_error()

    def _start(self, start_lsn: int) -> None:
        publications = _quote_literal(_quote_identifier(self.publication))
        command = (
            f"START_REPLICATION SLOT {self.slot} LOGICAL {lsn_to_str(start_lsn)} "
            f"(proto_version '1', publication_names {publications})"
        )
        result = self._conn.exec_(command.encode())
        if result.status != pq.ExecStatus.COPY_BOTH:
            raise self._error_from_result(result, "starting replication")
        self._conn.nonblocking = 1

    # -- errors ------------------------------------------------------------------------

    def _mask(self, text: str) -> str:
        return mask_text(text, self._secrets)

    def _missing_slot_error(self) -> ReplicationError:
        return ReplicationError(
            f"Replication slot {self.slot!r} does not exist. Create it with "
            f"SELECT pg_create_logical_replication_slot('{self.slot}', 'pgoutput'), or let "
            "rrlab set up the database."
        )

    def _missing_publication_error(self) -> ReplicationError:
        return ReplicationError(
            f"Publication {self.publication!r} does not exist in this database. Create it "
            f'with CREATE PUBLICATION {_quote_identifier(self.publication)} FOR TABLE "TaskRun", '
            "or let rrlab set up the database."
        )

    def _slot_in_use_error(
        self, pid: str | None, app: str | None = None, addr: str | None = None
    ) -> SlotInUseError:
        holder = f"PostgreSQL process {pid}" if pid else "another process"
        details = ", ".join(
            part for part in (app and f"application {app!r}", addr and f"from {addr}") if part
        )
        if details:
            holder += f" ({details})"
        return SlotInUseError(
            f"Replication slot {self.slot!r} is already in use by {holder}. Only one "
            "consumer may read a slot: stop the other consumer, or "
            f"SELECT pg_terminate_backend({pid or '<pid>'}) if it is a leftover."
        )

    def _error_from_result(self, result: pq.PGresult, doing: str) -> ReplicationError:
        sqlstate = (result.error_field(pq.DiagnosticField.SQLSTATE) or b"").decode()
        message = (result.error_message or b"").decode(errors="replace").strip()
        if sqlstate == _UNDEFINED_OBJECT and "publication" in message:
            return self._missing_publication_error()
        if sqlstate == _UNDEFINED_OBJECT and "replication slot" in message:
            return self._missing_slot_error()
        if sqlstate == _OBJECT_IN_USE:
            pid = re.search(r"PID (\d+)", message)
            return self._slot_in_use_error(pid.group(1) if pid else None)
        message = message or self._conn.get_error_message()
        return ReplicationError(
            f"Replication failed while {doing} (slot {self.slot!r}, publication "
            f"{self.publication!r}): {self._mask(message)}"
        )

    def _stream_ended_error(self) -> ReplicationError:
        error: ReplicationError | None = None
        while (result := self._conn.get_result()) is not None:
            if result.status == pq.ExecStatus.FATAL_ERROR and error is None:
                error = self._error_from_result(result, "streaming")
        self._streaming = False
        return error or ReplicationError(
            f"PostgreSQL ended the replication stream of slot {self.slot!r} unexpectedly."
        )

    # -- streaming ---------------------------------------------------------------------

    def read(self, timeout_s: float) -> list[XLogData]:
        """Return the XLogData messages available now, waiting up to ``timeout_s`` for one.

        Keepalives are handled here (answered when the server asks) and a periodic
        status update is sent when ``status_interval_s`` has passed.
        """
        messages: list[XLogData] = []
        append = messages.append
        get_copy_data = self._conn.get_copy_data
        unpack_header = _XLOG_HEADER.unpack_from
        deadline = time.monotonic() + timeout_s
        max_batch = self.max_batch
        while len(messages) < max_batch:
            try:
                nbytes, data = get_copy_data(1)
            except Exception as exc:
                raise self._connection_lost(exc) from None
            if nbytes > 0:
                if data[0] == _XLOG_DATA:
                    wal_start, wal_end, send_time = unpack_header(data, 1)
                    append(XLogData(wal_start, wal_end, send_time, data[25:]))
                elif data[0] == _KEEPALIVE_TAG:
                    self._on_keepalive(data)
                continue
            if nbytes < 0:
                raise self._stream_ended_error()
            if messages or not self._wait_readable(deadline):
                break
        if self._publication_missing:
            raise self._missing_publication_error()
        # Relation and Type messages carry no position (0); look back to the last that does.
        for message in reversed(messages):
            if message.wal_start:
                self.last_received_lsn = max(self.last_received_lsn, message.wal_start)
                break
        if time.monotonic() - self._last_status >= self.status_interval_s:
            self.send_status(self.flushed_lsn)
        return messages

    def _on_notice(self, result: pq.PGresult) -> None:
        # PostgreSQL 18 skips a publication it cannot find with a warning (older servers
        # fail); either way the stream would silently carry nothing. Raised by read().
        message = (result.error_message or b"").decode(errors="replace")
        if "publication" in message and (
            "skipped loading" in message or "does not exist" in message
        ):
            self._publication_missing = True

    def _on_keepalive(self, data: memoryview) -> None:
        wal_end, _send_time, reply_requested = _KEEPALIVE.unpack_from(data, 1)
        self.server_wal_end = wal_end
        if reply_requested:
            self.send_status(self.flushed_lsn)

    def _wait_readable(self, deadline: float) -> bool:
        """Wait for input until ``deadline`` or the next status update; True if input came."""
        now = time.monotonic()
        remaining = deadline - now
        if remaining <= 0:
            return False
        status_due = self._last_status + self.status_interval_s - now
        if status_due <= 0:
            self.send_status(self.flushed_lsn)
            status_due = self.status_interval_s
        readable, _, _ = select.select([self._fd], [], [], min(remaining, status_due))
        if readable:
            try:
                self._conn.consume_input()
            except Exception as exc:
                raise self._connection_lost(exc) from None
        return True

    def send_status(self, flushed_lsn: int, reply: bool = False) -> None:
        """Report ``flushed_lsn`` (the caller's durable position) as flushed and applied.

        A position below one already reported is ignored: PostgreSQL never moves a
        slot back, and reporting less would only hide progress.
        """
        if flushed_lsn > self.flushed_lsn:
            self.flushed_lsn = flushed_lsn
        written = max(self.last_received_lsn, self.flushed_lsn)
        message = _STATUS_UPDATE.pack(
            b"r", written, self.flushed_lsn, self.flushed_lsn, now_pg_us(), reply
        )
        try:
            self._conn.put_copy_data(message)
            self._flush_output()
        except Exception as exc:
            raise self._connection_lost(exc) from None
        self._last_status = time.monotonic()
        self.status_updates_sent += 1

    def _flush_output(self) -> None:
        # In non-blocking mode libpq may keep part of the message; wait until it is out.
        while self._conn.flush() == 1:
            select.select([], [self._fd], [], 1.0)

    def _connection_lost(self, exc: Exception) -> ReplicationError:
        self._streaming = False
        return ReplicationError(
            f"The replication connection of slot {self.slot!r} was lost: "
            f"{self._mask(str(exc))}. Restart the consumer; it resumes from the last "
            "acknowledged position."
        )

    # -- shutdown ----------------------------------------------------------------------

    def close(self, timeout_s: float = 5.0) -> None:
        """End the stream (CopyDone), drain what the server still sends, and disconnect."""
        if self._conn.status == pq.ConnStatus.BAD or self._conn.pgconn_ptr is None:
            return
        try:
            if self._streaming:
                self._streaming = False
                self._conn.put_copy_end()
                self._flush_output()
                self._drain_until_copy_done(time.monotonic() + timeout_s)
        except Exception:  # a broken connection is closed all the same
            pass
        finally:
            self._conn.finish()

    def _drain_until_copy_done(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            nbytes, _ = self._conn.get_copy_data(1)
            if nbytes < 0:
                while self._conn.get_result() is not None:
                    pass
                return
            if nbytes == 0:
                select.select([self._fd], [], [], max(0.0, deadline - time.monotonic()))
                self._conn.consume_input()

    @property
    def closed(self) -> bool:
        return self._conn.pgconn_ptr is None

    def __enter__(self) -> ReplicationStream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _secrets_of(conninfo: str) -> tuple[str, ...]:
    try:
        password = conninfo_to_dict(conninfo).get("password")
    except Exception:
        return ()
    return (str(password),) if password else ()
