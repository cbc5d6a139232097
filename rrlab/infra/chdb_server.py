"""The embedded ClickHouse: chdb's engine in its own process behind ClickHouse's HTTP interface.

Run as ``python -m rrlab.infra.chdb_server --data-dir DIR --port 0 --ready-file FILE``. It
answers the part of the HTTP interface clickhouse-connect uses (queries, streamed inserts,
settings, sessions, ``/ping``, errors in ClickHouse's format) and exits when its parent dies.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import fcntl
import hmac
import json
import os
import re
import signal
import sys
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qsl, urlsplit

PASSWORD_ENV = "RRLAB_CHDB_PASSWORD"
LOCK_FILE = "rrlab-chdb-server.lock"
READ_CHUNK = 1 << 20
PARENT_POLL_SECONDS = 0.5
DRAIN_SECONDS = 10.0

# URL parameters the HTTP layer consumes itself; every other parameter is a ClickHouse setting.
TRANSPORT_PARAMS = frozenset(
    {
        "query",
        "database",
        "default_format",
        "user",
        "password",
        "session_id",
        "session_timeout",
        "session_check",
        "query_id",
        "quota_key",
        "compress",
        "decompress",
        "buffer_size",
        "wait_end_of_query",
        "client_protocol_version",
        "role",
        "send_progress_in_http_headers",
        "http_headers_progress_interval_ms",
        "enable_http_compression",
    }
)
RESULT_STATEMENTS = frozenset({"SELECT", "WITH", "SHOW", "DESCRIBE", "DESC", "EXISTS", "EXPLAIN"})
# A subset of ClickHouse's exceptionCodeToHTTPStatus; everything else is 500.
HTTP_STATUS_BY_CODE = {
    36: 400,  # BAD_ARGUMENTS
    47: 400,  # UNKNOWN_IDENTIFIER
    62: 400,  # SYNTAX_ERROR
    115: 400,  # UNKNOWN_SETTING
    46: 404,  # UNKNOWN_FUNCTION
    60: 404,  # UNKNOWN_TABLE
    81: 404,  # UNKNOWN_DATABASE
    372: 404,  # SESSION_NOT_FOUND
    194: 401,  # REQUIRED_PASSWORD
    516: 403,  # AUTHENTICATION_FAILED
    48: 501,  # NOT_IMPLEMENTED
}
_CODE = re.compile(r"Code: (\d+)\.")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
# SQL tokens: quoted strings/identifiers and comments are skipped whole, so a FORMAT inside
# them is never taken for the clause.
_TOKEN = re.compile(
    rb"""'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|`(?:[^`\\]|\\.)*`|--[^\n]*|/\*.*?\*/"""
    rb"""|[A-Za-z_][A-Za-z0-9_]*|\s+|.""",
    re.S,
)


class ClickHouseServerError(Exception):
    """An error answered in ClickHouse's format: ``Code: N. DB::Exception: ... (NAME)``."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(text)
        self.code = code

    @classmethod
    def of(cls, code: int, name: str, message: str) -> ClickHouseServerError:
        return cls(code, f"Code: {code}. DB::Exception: {message}. ({name})")


# --- SQL and body parsing (pure) ------------------------------------------------


@dataclass(frozen=True)
class InsertHead:
    """An ``INSERT ... FORMAT <fmt>`` statement split from the data that follows it."""

    statement: str
    fmt: str
    data_offset: int


def split_insert(text: bytes) -> InsertHead | None:
    """Split ``INSERT ... FORMAT X <data>`` into statement, format and data offset.

    Returns None for anything else (a query, ``INSERT ... VALUES``, ``INSERT ... SELECT``),
    which then runs whole. Data starts after the first newline following the format name if
    only blanks precede it, else after the blanks (ClickHouse's own rule).
    """
    words = (m for m in _TOKEN.finditer(text) if not m.group().isspace())
    first = next(words, None)
    if first is None or first.group().upper() != b"INSERT":
        return None
    for token in words:
        word = token.group().upper()
        if word in (b"VALUES", b"SELECT", b"WITH"):
            return None
        if word != b"FORMAT":
            continue
        fmt = next(words, None)
        if fmt is None or not re.fullmatch(rb"[A-Za-z][A-Za-z0-9_]*", fmt.group()):
            return None
        end = fmt.end()
        newline = text.find(b"\n", end)
        blanks = text[end:newline] if newline >= 0 else text[end:]
        if newline >= 0 and not blanks.strip():
            offset = newline + 1
        else:
            offset = end + len(blanks) - len(blanks.lstrip())
        statement = text[: token.start()].decode("utf-8").strip()
        return InsertHead(statement, fmt.group().decode(), offset)
    return None


def output_format(sql: str, default_format: str) -> str:
    """The format a query answers in: its own trailing FORMAT clause, else the default."""
    words = [m.group() for m in _TOKEN.finditer(sql.encode("utf-8")) if not m.group().isspace()]
    for i in range(len(words) - 2, -1, -1):
        if words[i].upper() == b"FORMAT" and re.fullmatch(rb"[A-Za-z][A-Za-z0-9_]*", words[i + 1]):
            return words[i + 1].decode()
    return default_format


def returns_result(sql: str) -> bool:
    """Whether a statement produces a result set (for the X-ClickHouse-Format header)."""
    for m in _TOKEN.finditer(sql.encode("utf-8")):
        token = m.group()
        if token.isspace() or token.startswith((b"--", b"/*")) or token == b"(":
            continue
        return token.upper().decode("utf-8", "replace") in RESULT_STATEMENTS
    return False


def content_type(fmt: str) -> str:
    """The Content-Type ClickHouse sends for a result in ``fmt``."""
    lowered = fmt.lower()
    if lowered.startswith("json"):
        return "application/json; charset=UTF-8"
    if lowered.startswith(("tabseparated", "tsv")):
        return "text/tab-separated-values; charset=UTF-8"
    if lowered.startswith("csv"):
        return "text/csv; charset=UTF-8; header=absent"
    if lowered.startswith(("pretty", "values", "vertical", "markdown", "xml")):
        return "text/plain; charset=UTF-8"
    return "application/octet-stream"


class _FrameDecoder(Protocol):
    eof: bool
    unused_data: bytes

    def decompress(self, data: bytes) -> bytes: ...


def _decoder_factory(encoding: str) -> Callable[[], _FrameDecoder] | None:
    """A factory of one-frame decoders for a Content-Encoding, None for identity."""
    if encoding in ("", "identity"):
        return None
    if encoding == "gzip":
        return lambda: zlib.decompressobj(16 + zlib.MAX_WBITS)
    if encoding == "deflate":
        return zlib.decompressobj
    if encoding == "lz4":
        import lz4.frame

        return lz4.frame.LZ4FrameDecompressor
    if encoding == "zstd":
        if sys.version_info >= (3, 14):
            from compression import zstd
        else:
            from backports import zstd
        return zstd.ZstdDecompressor
    raise ClickHouseServerError.of(
        36, "BAD_ARGUMENTS", f"Unsupported Content-Encoding {encoding!r} (gzip, deflate, lz4, zstd)"
    )


def decompress(chunks: Iterable[bytes], encoding: str) -> Iterator[bytes]:
    """Decode a body made of one or more concatenated compressed frames.

    clickhouse-connect compresses each block of a streamed insert as its own frame.
    """
    factory = _decoder_factory(encoding.strip().lower())
    if factory is None:
        yield from chunks
        return
    decoder = factory()
    for chunk in chunks:
        while chunk:
            out = decoder.decompress(chunk)
            if out:
                yield out
            if decoder.eof:
                chunk = decoder.unused_data
                decoder = factory()
            else:
                chunk = b""


# --- the engine -------------------------------------------------------------------


@dataclass
class Statement:
    """One request, parsed: what to run, where, and with which settings."""

    sql: str
    insert_format: str | None = None
    data: Iterable[bytes] = ()
    database: str | None = None
    settings: dict[str, str] = field(default_factory=dict)
    query_params: dict[str, str] = field(default_factory=dict)
    default_format: str = "TabSeparated"


@dataclass
class Outcome:
    """What a statement returned: result bytes and the counters of X-ClickHouse-Summary."""

    body: bytes = b""
    result_format: str | None = None
    read_rows: int = 0
    read_bytes: int = 0
    written_rows: int = 0
    written_bytes: int = 0
    elapsed_ns: int = 0
    result_rows: int = 0

    def summary(self) -> str:
        return json.dumps(
            {
                "read_rows": str(self.read_rows),
                "read_bytes": str(self.read_bytes),
                "written_rows": str(self.written_rows),
                "written_bytes": str(self.written_bytes),
                "total_rows_to_read": str(self.read_rows),
                "result_rows": str(self.result_rows),
                "result_bytes": str(len(self.body)),
                "elapsed_ns": str(self.elapsed_ns),
            },
            separators=(",", ":"),
        )


@dataclass
class _Session:
    handle: Any
    lock: threading.Lock
    timeout: float
    last_used: float


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _check_identifier(name: str, what: str) -> str:
    if not _IDENTIFIER.match(name):
        raise ClickHouseServerError.of(36, "BAD_ARGUMENTS", f"Invalid {what} name {name!r}")
    return name


class ChdbEngine:
    """chdb's engine over one data dir: a fresh handle per request, one per HTTP session.

    chdb handles to one engine are cheap (~0.1 ms) and each keeps its own settings and
    current database, so per-request settings never leak between concurrent requests.
    """

    def __init__(self, data_dir: Path) -> None:
        import chdb

        self._connect = chdb.connect
        self._path = str(data_dir)
        self._root = chdb.connect(self._path)
        row = self._root.query("SELECT version(), timezone()", "TSV").bytes().decode()
        self.version, self.timezone = row.strip().split("\t")
        self._sessions: dict[str, _Session] = {}
        self._sessions_lock = threading.Lock()

    def close(self) -> None:
        with self._sessions_lock:
            for session in self._sessions.values():
                session.handle.close()
            self._sessions.clear()
        self._root.close()

    def expire_sessions(self) -> None:
        now = time.monotonic()
        with self._sessions_lock:
            for sid, session in list(self._sessions.items()):
                if now - session.last_used > session.timeout and session.lock.acquire(False):
                    del self._sessions[sid]
                    session.handle.close()

    @contextlib.contextmanager
    def _session(self, session_id: str, timeout: float, check: bool) -> Iterator[Any]:
        with self._sessions_lock:
            session = self._sessions.get(session_id)
            if session is None:
                if check:
                    raise ClickHouseServerError.of(
                        372, "SESSION_NOT_FOUND", f"Session {session_id} not found"
                    )
                session = _Session(self._connect(self._path), threading.Lock(), timeout, 0.0)
                self._sessions[session_id] = session
            if not session.lock.acquire(False):
                raise ClickHouseServerError.of(
                    373,
                    "SESSION_IS_LOCKED",
                    f"Session {session_id} is locked by a concurrent client",
                )
        try:
            session.timeout = timeout
            yield session.handle
        finally:
            session.last_used = time.monotonic()
            session.lock.release()

    def execute(
        self, statement: Statement, session_id: str | None, session_timeout: float, check: bool
    ) -> Outcome:
        if not session_id:
            handle = self._connect(self._path)
            try:
                return self._run(handle, statement)
            finally:
                handle.close()
        with self._session(session_id, session_timeout, check) as handle:
            if not (statement.settings or statement.database):
                return self._run(handle, statement)
            saved = self._session_state(handle, statement.settings)
            try:
                return self._run(handle, statement)
            finally:
                self._run(handle, saved)

    @staticmethod
    def _session_state(handle: Any, names: Iterable[str]) -> Statement:
        """A statement restoring a session's database and settings: URL ones last one request."""
        database = handle.query("SELECT currentDatabase()", "TSV").bytes().decode().strip()
        quoted = ", ".join(_quote(_check_identifier(n, "setting")) for n in names) or "''"
        rows = handle.query(
            f"SELECT name, value FROM system.settings WHERE name IN ({quoted})", "JSONCompact"
        ).bytes()
        settings = dict(json.loads(rows)["data"])
        return Statement(sql="SELECT 1 FORMAT Null", database=database, settings=settings)

    @staticmethod
    def _run(handle: Any, statement: Statement) -> Outcome:
        if statement.settings:
            assignments = ", ".join(
                f"{_check_identifier(k, 'setting')} = {_quote(v)}"
                for k, v in statement.settings.items()
            )
            handle.query(f"SET {assignments}", "TSV")
        if statement.database:
            handle.query(f"USE `{_check_identifier(statement.database, 'database')}`", "TSV")
        sql: str | bytes = statement.sql
        if statement.insert_format is not None:
            # Not chdb's streaming send_insert: it swallows errors raised while writing
            # (TOO_MANY_PARTS, a violated constraint), answering "0 rows written" or even
            # counting rows it never stored. The whole statement through query() raises them.
            head = f"{statement.sql} FORMAT {statement.insert_format}\n".encode()
            sql = b"".join((head, *statement.data))
        fmt = output_format(statement.sql, statement.default_format)
        result = handle.query(sql, statement.default_format, params=statement.query_params)
        body = result.bytes()
        return Outcome(
            body=body,
            result_format=fmt if body or returns_result(statement.sql) else None,
            read_rows=result.rows_read(),
            read_bytes=result.bytes_read(),
            written_rows=result.rows_written(),
            written_bytes=result.bytes_written(),
            elapsed_ns=int(result.elapsed() * 1e9),
        )


def as_server_error(exc: Exception) -> ClickHouseServerError:
    """Turn a chdb exception into its ClickHouse code and message."""
    if isinstance(exc, ClickHouseServerError):
        return exc
    text = str(exc)
    match = _CODE.search(text)
    if match is None:
        return ClickHouseServerError.of(1001, "STD_EXCEPTION", text)
    # chdb prefixes some messages (e.g. "Streaming insert finish failed: "); drop that.
    return ClickHouseServerError(int(match.group(1)), text[match.start() :].strip())


# --- HTTP ---------------------------------------------------------------------------


class ChdbHTTPServer(ThreadingHTTPServer):
    """A threaded HTTP server that owns the engine and counts requests in flight."""

    daemon_threads = True
    allow_reuse_address = True
    # socketserver's default backlog of 5 overflowed when a consumer with 100 flushes in
    # flight reconnected at once: dropped SYNs became 10 s connect timeouts (seen in a soak)
    request_queue_size = 256

    def __init__(self, address: tuple[str, int], engine: ChdbEngine, password: str | None):
        super().__init__(address, ChdbRequestHandler)
        self.engine = engine
        self.password = password
        self.in_flight = 0
        self.idle = threading.Condition()

    @contextlib.contextmanager
    def tracked(self) -> Iterator[None]:
        with self.idle:
            self.in_flight += 1
        try:
            yield
        finally:
            with self.idle:
                self.in_flight -= 1
                self.idle.notify_all()

    def drain(self, timeout: float) -> None:
        with self.idle:
            self.idle.wait_for(lambda: self.in_flight == 0, timeout)


class ChdbRequestHandler(BaseHTTPRequestHandler):
    """One HTTP request: parse, run on the engine, answer like ClickHouse does."""

    protocol_version = "HTTP/1.1"
    # headers and body go out in two writes: with Nagle's algorithm the body waited for the
    # client's delayed ACK of the headers, 40 ms on every small answer (a SELECT 1 took 44 ms)
    disable_nagle_algorithm = True
    server: ChdbHTTPServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        """Quiet: request lines would carry queries (and maybe passwords) into the log."""

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def _handle(self) -> None:
        url = urlsplit(self.path)
        params = dict(parse_qsl(url.query, keep_blank_values=True))
        chunked = "chunked" in self.headers.get("Transfer-Encoding", "").lower()
        self._body_pending = chunked or int(self.headers.get("Content-Length") or 0) > 0
        if url.path == "/ping" or (url.path == "/" and not params and not self._body_pending):
            self._reply(200, b"Ok.\n", {"Content-Type": "text/html; charset=UTF-8"})
            return
        query_id = params.get("query_id") or str(uuid.uuid4())
        body = self._body_chunks(chunked)
        try:
            if url.path != "/":
                raise ClickHouseServerError.of(
                    48, "NOT_IMPLEMENTED", f"There is no handle {url.path}; use / or /ping"
                )
            self._authenticate(params)
            if params.get("decompress", "0") not in ("0", "false"):
                raise ClickHouseServerError.of(
                    48,
                    "NOT_IMPLEMENTED",
                    "decompress=1 (ClickHouse-native compression) is not supported",
                )
            statement = self._statement(params, body)
            session_timeout = float(params.get("session_timeout") or 60)
            check = params.get("session_check", "0") not in ("0", "false")
            with self.server.tracked():
                outcome = self.server.engine.execute(
                    statement, params.get("session_id"), session_timeout, check
                )
        except Exception as exc:  # every failure is answered, in ClickHouse's format
            self._reply_error(as_server_error(exc), query_id)
            return
        headers = {
            "X-ClickHouse-Query-Id": query_id,
            "X-ClickHouse-Summary": outcome.summary(),
            "X-ClickHouse-Timezone": self.server.engine.timezone,
            "Content-Type": content_type(outcome.result_format or "TabSeparated"),
        }
        if outcome.result_format:
            headers["X-ClickHouse-Format"] = outcome.result_format
        self._reply(200, outcome.body, headers)

    def _authenticate(self, params: dict[str, str]) -> None:
        expected = self.server.password
        if expected is None:
            return
        user = self.headers.get("X-ClickHouse-User") or params.get("user")
        password = self.headers.get("X-ClickHouse-Key") or params.get("password")
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Basic "):
            with contextlib.suppress(ValueError):
                user, _, password = base64.b64decode(auth[6:]).decode().partition(":")
        if (user or "default") != "default" or not hmac.compare_digest(
            (password or "").encode(), expected.encode()
        ):
            raise ClickHouseServerError.of(
                516,
                "AUTHENTICATION_FAILED",
                f"{user or 'default'}: Authentication failed: password is incorrect, "
                "or there is no user with such name",
            )

    def _statement(self, params: dict[str, str], body: Iterator[bytes]) -> Statement:
        data = decompress(body, self.headers.get("Content-Encoding", ""))
        settings = {k: v for k, v in params.items() if k not in TRANSPORT_PARAMS}
        statement = Statement(
            sql="",
            database=params.get("database") or None,
            settings={k: v for k, v in settings.items() if not k.startswith("param_")},
            query_params={k[6:]: v for k, v in settings.items() if k.startswith("param_")},
            default_format=params.get("default_format") or "TabSeparated",
        )
        query = params.get("query", "").encode("utf-8")
        head = split_insert(query) if query else None
        if head is not None and head.data_offset >= len(query.rstrip()):
            # The statement is in the URL and the (possibly compressed) data is the body.
            statement.sql, statement.insert_format, statement.data = head.statement, head.fmt, data
            return statement
        text = b"\n".join(part for part in (query, b"".join(data)) if part)
        head = split_insert(text)
        if head is None:
            statement.sql = text.decode("utf-8")
        else:
            statement.sql, statement.insert_format = head.statement, head.fmt
            statement.data = (text[head.data_offset :],)
        if not statement.sql.strip():
            raise ClickHouseServerError(62, "SYNTAX_ERROR", "Empty query")
        return statement

    def _body_chunks(self, chunked: bool) -> Iterator[bytes]:
        """The request body, de-chunked, read as it arrives (a decompressor may follow)."""
        if chunked:
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunk = self.rfile.read(size)
                self.rfile.readline()
                if len(chunk) < size:
                    raise ConnectionError("request body ended early")
                yield chunk
        else:
            remaining = int(self.headers.get("Content-Length") or 0)
            while remaining > 0:
                chunk = self.rfile.read(min(remaining, READ_CHUNK))
                if not chunk:
                    raise ConnectionError("request body ended early")
                remaining -= len(chunk)
                yield chunk
        self._body_pending = False

    def _reply_error(self, error: ClickHouseServerError, query_id: str) -> None:
        # An unread request body would desynchronise a kept-alive connection: drop it.
        if self._body_pending:
            self.close_connection = True
        message = str(error)
        if "(version " not in message:
            message += f" (version {self.server.engine.version})"
        self._reply(
            HTTP_STATUS_BY_CODE.get(error.code, 500),
            (message + "\n").encode("utf-8"),
            {
                "Content-Type": "text/plain; charset=UTF-8",
                "X-ClickHouse-Exception-Code": str(error.code),
                "X-ClickHouse-Query-Id": query_id,
            },
        )

    def _reply(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)


# --- process ------------------------------------------------------------------------


def _lock_data_dir(data_dir: Path) -> Any:
    """Hold an exclusive lock on the data dir: two engines on one dir would corrupt it."""
    lock = open(data_dir / LOCK_FILE, "a+")  # noqa: SIM115 - held for the process lifetime
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        holder = lock.read().strip() or "another process"
        raise SystemExit(
            f"rrlab chdb server: data dir {data_dir} is in use by pid {holder}; "
            "stop that server or give another --data-dir"
        ) from None
    lock.truncate(0)
    lock.write(str(os.getpid()))
    lock.flush()
    return lock


def _write_ready_file(path: Path, info: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(info))
    tmp.replace(path)


def serve(data_dir: Path, host: str, port: int, ready_file: Path | None, parent_pid: int) -> int:
    """Run the endpoint until SIGTERM/SIGINT or until the parent process goes away."""
    data_dir.mkdir(parents=True, exist_ok=True)
    lock = _lock_data_dir(data_dir)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    engine = ChdbEngine(data_dir)
    server = ChdbHTTPServer((host, port), engine, os.environ.pop(PASSWORD_ENV, None))
    thread = threading.Thread(target=server.serve_forever, name="http", daemon=True)
    thread.start()
    bound_host, bound_port = server.server_address[:2]
    if ready_file is not None:
        info = {"pid": os.getpid(), "host": bound_host, "port": bound_port}
        _write_ready_file(ready_file, info | {"version": engine.version})
    print(f"rrlab chdb server {engine.version} on http://{bound_host}:{bound_port}", flush=True)
    # Polling getppid() (not PR_SET_PDEATHSIG) because the death signal fires when the
    # parent *thread* that forked us exits, which a notebook or runner thread may do early.
    while not stop.wait(PARENT_POLL_SECONDS):
        if os.getppid() != parent_pid:
            print("rrlab chdb server: parent process exited; stopping", flush=True)
            break
        engine.expire_sessions()
    server.shutdown()
    server.server_close()
    server.drain(DRAIN_SECONDS)
    engine.close()
    if ready_file is not None:
        ready_file.unlink(missing_ok=True)
    lock.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m rrlab.infra.chdb_server", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--data-dir", type=Path, required=True, help="chdb data directory")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=0, help="port (0 picks a free one)")
    parser.add_argument("--ready-file", type=Path, help="JSON file written once listening")
    parser.add_argument(
        "--parent-pid", type=int, default=os.getppid(), help="exit when this process exits"
    )
    args = parser.parse_args(argv)
    return serve(args.data_dir.resolve(), args.host, args.port, args.ready_file, args.parent_pid)


if __name__ == "__main__":
    sys.exit(main())
