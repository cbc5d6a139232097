"""ClickHouse for a run: the embedded chdb endpoint's lifecycle, and one client code path.

:class:`EmbeddedClickHouse` runs :mod:`rrlab.infra.chdb_server` in its own process (chdb is
never imported here); :func:`clickhouse_client` opens a clickhouse-connect client to that
endpoint or to a user's server given by CLICKHOUSE_URL, with clear errors.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote

import clickhouse_connect
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import DatabaseError, Error

from rrlab.exceptions import ClickHouseError
from rrlab.urls import ClickHouseUrl, mask_text, mask_url, parse_clickhouse_url

READY_FILE = "rrlab-server.ready.json"
LOG_FILE = "rrlab-server.log"
_AUTH_CODES = {192, 193, 194, 516}  # UNKNOWN_USER, WRONG_PASSWORD, REQUIRED_PASSWORD, AUTH_FAILED
_ACCESS_DENIED = 497
_UNKNOWN_DATABASE = 81
_UNREACHABLE_HINTS = (
    ("Connection refused", "connection refused"),
    ("Name or service not known", "unknown host name"),
    ("Failed to resolve", "unknown host name"),
    ("nodename nor servname", "unknown host name"),
    ("timed out", "connection timed out"),
    ("CERTIFICATE_VERIFY_FAILED", "TLS certificate not trusted"),
    ("SSL", "TLS handshake failed (is it http:// rather than https://, or the wrong port?)"),
)


class EmbeddedClickHouse:
    """The chdb endpoint for one run: start, wait until ready, stop; never orphaned.

    The server process watches this process and exits when it dies, so a crashed runner
    leaves nothing behind. Use as a context manager, or call :meth:`start` / :meth:`stop`.
    ``port`` 0 picks a free port; once started, a later :meth:`start` (after a crash or a
    stop) binds the same port again, so clients holding the URL reconnect on their own.
    """

    def __init__(
        self,
        data_dir: Path | str,
        *,
        password: str | None = None,
        port: int = 0,
        startup_timeout: float = 60.0,
        stop_timeout: float = 10.0,
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self._password = password
        self._bind_port = port
        self._process: subprocess.Popen[bytes] | None = None
        self.port: int | None = None
        self.version: str | None = None

    def __repr__(self) -> str:
        where = f"port {self.port}" if self.port else "not running"
        return f"EmbeddedClickHouse({str(self.data_dir)!r}, {where})"

    @property
    def log_path(self) -> Path:
        return self.data_dir / LOG_FILE

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    @property
    def url(self) -> str:
        """The endpoint's URL, in the CLICKHOUSE_URL form (holds the password if one is set)."""
        if self.port is None:
            raise ClickHouseError("The embedded ClickHouse is not running: call start() first.")
        url = f"http://127.0.0.1:{self.port}"
        if self._password is not None:
            url += f"?username=default&password={quote(self._password, safe='')}"
        return url

    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> EmbeddedClickHouse:
        """Start the server (on the port of the previous start, if any) and wait for ``/ping``."""
        if self.is_running():
            return self
        # Imported here: the consumer imports this module for clickhouse_client alone, and
        # the server module (http.server and its own ~700 lines) cost its start-up ~12 ms of
        # CPU in every drain with the chdb sink.
        from rrlab.infra.chdb_server import PASSWORD_ENV

        self.data_dir.mkdir(parents=True, exist_ok=True)
        ready_file = self.data_dir / READY_FILE
        ready_file.unlink(missing_ok=True)
        env = dict(os.environ)
        env.pop(PASSWORD_ENV, None)
        if self._password is not None:
            env[PASSWORD_ENV] = self._password
        command = [
            sys.executable,
            "-m",
            "rrlab.infra.chdb_server",
            "--data-dir",
            str(self.data_dir),
            "--port",
            str(self._bind_port),
            "--ready-file",
            str(ready_file),
            "--parent-pid",
            str(os.getpid()),
        ]
        with open(self.log_path, "ab") as log:
            # A session of its own: a Ctrl-C meant for the notebook or CLI must not kill the
            # server before the runner stops it; the server still dies with its parent.
            self._process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        try:
            info = self._wait_ready(ready_file)
        except BaseException:
            self._kill()
            raise
        self.port, self.version = int(info["port"]), str(info["version"])
        self._bind_port = self.port
        return self

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after ``stop_timeout`` seconds."""
        process, self._process, self.port = self._process, None, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(self.stop_timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def __enter__(self) -> EmbeddedClickHouse:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _wait_ready(self, ready_file: Path) -> dict[str, Any]:
        assert self._process is not None
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            code = self._process.poll()
            if code is not None:
                raise ClickHouseError(
                    f"The embedded ClickHouse (chdb) exited with code {code} while starting, "
                    f"data dir {self.data_dir}. Last lines of {self.log_path}:\n{self.log_tail()}"
                )
            if ready_file.exists():
                info = json.loads(ready_file.read_text())
                if info.get("pid") == self._process.pid and _answers_ping(info["port"]):
                    return info
            time.sleep(0.05)
        raise ClickHouseError(
            f"The embedded ClickHouse (chdb) did not become ready within "
            f"{self.startup_timeout:g} s (data dir {self.data_dir}). "
            f"Last lines of {self.log_path}:\n{self.log_tail()}"
        )

    def _kill(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()

    def log_tail(self, lines: int = 20) -> str:
        """The last lines the server wrote (stdout and stderr)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:]) or "(empty log)"


def _answers_ping(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2) as response:
            return response.read() == b"Ok.\n"
    except OSError:
        return False


def clickhouse_client(url: str | ClickHouseUrl, **options: Any) -> Client:
    """A clickhouse-connect client for the embedded endpoint or a user's server alike.

    ``url`` is in CLICKHOUSE_URL form (``https://host:8443?username=u&password=p`` or
    ``http://...``). The client uses no HTTP session, so flush threads can share it.
    ``options`` go to ``clickhouse_connect.get_client`` (e.g. ``settings``, ``compress``).
    Raises :class:`ClickHouseError` naming the problem; the password is never shown.
    """
    target = url if isinstance(url, ClickHouseUrl) else parse_clickhouse_url(url)
    kwargs: dict[str, Any] = {"autogenerate_session_id": False, "connect_timeout": 10}
    kwargs |= target.connect_kwargs() | options
    try:
        return clickhouse_connect.get_client(**kwargs)
    except Error as exc:
        raise _connect_error(target, exc, kwargs.get("database")) from None


def _connect_error(target: ClickHouseUrl, exc: Error, database: str | None) -> ClickHouseError:
    where = f"ClickHouse at {mask_url(target.url)}"
    detail = mask_text(str(exc), (target.password,))
    code = getattr(exc, "code", None)
    if isinstance(exc, DatabaseError) and code in _AUTH_CODES:
        return ClickHouseError(
            f"{where} refused user {target.username!r}: authentication failed. Check the "
            "username and password in CLICKHOUSE_URL (…?username=USER&password=PASSWORD)."
        )
    if isinstance(exc, DatabaseError) and code == _ACCESS_DENIED:
        return ClickHouseError(
            f"{where}: user {target.username!r} lacks a privilege rrlab needs ({detail}). "
            "Grant it, or use a user that may create databases and tables and insert."
        )
    if isinstance(exc, DatabaseError) and code == _UNKNOWN_DATABASE:
        return ClickHouseError(
            f"{where}: database {database!r} does not exist. Create it, or leave the "
            "database out of CLICKHOUSE_URL (rrlab creates its own)."
        )
    if isinstance(exc, DatabaseError) and code is not None:
        return ClickHouseError(f"{where} answered with an error: {detail}")
    reason = next((hint for needle, hint in _UNREACHABLE_HINTS if needle in str(exc)), detail)
    return ClickHouseError(
        f"Cannot reach {where}: {reason}. Check the host and port (https usually 8443, "
        "http 8123) and that the server is running."
    )
