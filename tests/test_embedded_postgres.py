"""The embedded PostgreSQL: start, settings, reuse of the data dir, sharing, stop and reset."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psutil
import psycopg
import pytest

from rrlab.cli.main import main as rrlab_main
from rrlab.exceptions import EmbeddedPostgresError
from rrlab.infra import embedded_postgres
from rrlab.infra.embedded_postgres import SERVER_USER, EmbeddedPostgres


@pytest.fixture
def home() -> Iterator[Path]:
    """A fresh rrlab home; any server left in it is stopped afterwards."""
    path = Path(tempfile.mkdtemp(prefix="rrlab-ep-"))
    try:
        yield path
    finally:
        EmbeddedPostgres(path).stop(force=True)
        shutil.rmtree(path, ignore_errors=True)


def _setting(url: str, name: str) -> str:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT current_setting(%s)", (name,)).fetchone()
    assert row is not None
    return str(row[0])


def test_start_configures_a_logical_loopback_server(home: Path) -> None:
    server = EmbeddedPostgres(home)
    url = server.start()

    assert url.host == "127.0.0.1" and url.password == "" and url.user == "postgres"
    assert _setting(url.url, "wal_level") == "logical"
    assert int(_setting(url.url, "max_replication_slots")) >= 20
    assert int(_setting(url.url, "max_wal_senders")) >= 20
    assert _setting(url.url, "listen_addresses") == "127.0.0.1"
    assert _setting(url.url, "unix_socket_directories") == str(server.data_dir)
    assert server.data_dir == home / "postgres"

    # the unix socket in the data dir answers too
    socket_url = f"postgresql://postgres@/postgres?host={server.data_dir}&port={url.port}"
    assert _setting(socket_url, "port") == str(url.port)

    postmaster = psutil.Process(server.status()["pid"])
    listening = [c.laddr for c in postmaster.net_connections(kind="inet") if c.status == "LISTEN"]
    assert listening == [("127.0.0.1", url.port)]
    expected_user = SERVER_USER if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
    assert postmaster.username() == expected_user


def test_start_is_idempotent_and_a_restart_reuses_the_data_dir(home: Path) -> None:
    server = EmbeddedPostgres(home)
    first = server.start()
    pid = server.status()["pid"]
    assert server.start() == first
    assert server.status()["pid"] == pid  # the running server was returned, not a new one

    with psycopg.connect(first.url, autocommit=True) as conn:
        system_id = conn.execute("SELECT system_identifier FROM pg_control_system()").fetchone()
        conn.execute("CREATE DATABASE kept_between_runs")

    assert server.stop() is True
    assert server.status()["running"] is False
    assert server.stop() is False

    again = EmbeddedPostgres(home).start()
    assert again.port == first.port  # a restart keeps the port: clients reconnect on their own
    with psycopg.connect(again.url) as conn:
        assert conn.execute("SELECT system_identifier FROM pg_control_system()").fetchone() == (
            system_id
        )
        kept = conn.execute("SELECT 1 FROM pg_database WHERE datname = 'kept_between_runs'")
        assert kept.fetchone() == (1,)


def test_url_and_status_of_a_stopped_server(home: Path) -> None:
    server = EmbeddedPostgres(home)
    status = server.status()
    assert status["running"] is False and status["initialized"] is False
    with pytest.raises(EmbeddedPostgresError, match="not running"):
        server.url()


def test_stop_refuses_while_another_session_is_connected(home: Path) -> None:
    server = EmbeddedPostgres(home)
    url = server.start()
    with psycopg.connect(url.url, application_name="other-rrlab-run"):
        with pytest.raises(EmbeddedPostgresError, match="other-rrlab-run"):
            server.stop()
        assert server.status()["running"] is True
    assert server.stop() is True


def test_reset_deletes_the_data_dir(home: Path) -> None:
    server = EmbeddedPostgres(home)
    server.start()
    server.reset()
    assert not server.data_dir.exists()
    assert server.status()["running"] is False


_STARTER = """
import json, sys
from rrlab.infra.embedded_postgres import EmbeddedPostgres
server = EmbeddedPostgres(sys.argv[1])
url = server.start()
print(json.dumps({"url": url.url, "pid": server.status()["pid"]}))
"""


def test_two_concurrent_starters_share_one_server(home: Path) -> None:
    starters = [
        subprocess.Popen(
            [sys.executable, "-c", _STARTER, str(home)], stdout=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    results = []
    for starter in starters:
        out, _ = starter.communicate(timeout=120)
        assert starter.returncode == 0
        results.append(json.loads(out))
    assert results[0] == results[1]
    postmasters = [
        p
        for p in psutil.process_iter(["name", "cmdline"])
        if p.info["name"] == "postgres" and str(home) in " ".join(p.info["cmdline"] or [])
    ]
    assert [p.pid for p in postmasters] == [results[0]["pid"]]


def test_cli_status_url_stop(home: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setenv("RRLAB_HOME", str(home))
    assert rrlab_main(["pg", "url"]) == 2
    assert "not running" in capsys.readouterr().err

    assert rrlab_main(["pg", "start"]) == 0
    url = capsys.readouterr().out.strip()
    assert url.startswith("postgresql://postgres@127.0.0.1:")
    assert rrlab_main(["pg", "url"]) == 0
    assert capsys.readouterr().out.strip() == url
    assert rrlab_main(["pg", "status", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["running"] is True and status["url"] == url

    assert rrlab_main(["pg", "stop"]) == 0
    assert capsys.readouterr().out.strip() == "stopped"
    assert rrlab_main(["pg", "reset"]) == 0
    assert not (home / "postgres").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="switching to an unprivileged user needs root")
def test_works_for_an_unprivileged_user(home: Path) -> None:
    nobody = pwd.getpwnam("nobody")
    try:
        probe = subprocess.run(
            [sys.executable, "-c", "import rrlab.infra.embedded_postgres"],
            user=nobody.pw_uid,
            group=nobody.pw_gid,
            extra_groups=[],
            capture_output=True,
        )
    except OSError:
        probe = None
    if probe is None or probe.returncode != 0:
        pytest.skip("this Python or checkout cannot be run by the user nobody")
    os.chown(home, nobody.pw_uid, nobody.pw_gid)
    code = _STARTER + "print(server.stop(force=True))\n"
    result = subprocess.run(
        [sys.executable, "-c", code, str(home)],
        user=nobody.pw_uid,
        group=nobody.pw_gid,
        extra_groups=[],
        env={**os.environ, "HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    started, stopped = result.stdout.splitlines()
    assert json.loads(started)["url"].startswith("postgresql://postgres@127.0.0.1:")
    assert stopped == "True"
    assert (home / "postgres").stat().st_uid == nobody.pw_uid


def test_a_server_whose_installation_was_deleted_is_refused_with_the_fix(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # as when the clone or virtual environment that started the shared server is deleted
    package = embedded_postgres.bin_dir().parent.parent  # .../embedded_postgres
    copy = home / "site"  # the binaries find their libraries at ../../../embedded_postgres.libs
    for name in (package.name, f"{package.name}.libs"):
        shutil.copytree(package.parent / name, copy / name, symlinks=True)
    with monkeypatch.context() as patched:
        patched.setattr(embedded_postgres, "bin_dir", lambda: copy / package.name / "pginstall/bin")
        EmbeddedPostgres(home).start()
    shutil.rmtree(copy)
    with pytest.raises(EmbeddedPostgresError, match="no longer exists.*rrlab pg stop --force"):
        EmbeddedPostgres(home).start()
    assert EmbeddedPostgres(home).stop(force=True) is True  # this installation's pg_ctl
    EmbeddedPostgres(home).start()  # and a fresh start from it
