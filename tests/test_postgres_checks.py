"""Checks of a user's PostgreSQL (DATABASE_URL): each bad case gets its own clear error."""

from __future__ import annotations

import shutil
import socket
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from rrlab.config import PostgresConfig, Secret
from rrlab.exceptions import PostgresError, UrlError
from rrlab.infra.embedded_postgres import EmbeddedPostgres
from rrlab.infra.postgres import check_user_postgres, resolve_postgres
from rrlab.urls import PostgresUrl, parse_postgres_url

PASSWORD = "s3cret-Pa55"


def _role(pg_url: PostgresUrl, *attributes: str) -> PostgresUrl:
    """A new login role with a password and the given attributes; its URL."""
    name = f"role_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_url.url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {} {}").format(
                sql.Identifier(name), sql.Literal(PASSWORD), sql.SQL(" ".join(attributes))
            )
        )
    return parse_postgres_url(f"postgresql://{name}:{PASSWORD}@127.0.0.1:{pg_url.port}/postgres")


def _resolve(url: str) -> PostgresUrl:
    # a database name no other test creates: whether the role may use an existing profiling
    # database must not depend on which tests ran before
    name = f"check_{uuid.uuid4().hex[:12]}"
    return resolve_postgres(PostgresConfig(database_url=Secret(url), database_name=name))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_a_capable_role_passes(pg_url: PostgresUrl) -> None:
    url = _role(pg_url, "REPLICATION", "CREATEDB")
    assert _resolve(url.url) == url


def test_no_database_url_means_the_embedded_server(pg_url: PostgresUrl) -> None:
    # the pg_server fixture points RRLAB_HOME at the session's server
    assert resolve_postgres(PostgresConfig()) == pg_url


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://user:hunter2@localhost:notaport/db",
        "mysql://user:hunter2@localhost:3306/db",
        "postgresql:///db?password=hunter2",
    ],
)
def test_malformed_url(url: str) -> None:
    with pytest.raises(UrlError) as caught:
        _resolve(url)
    assert "hunter2" not in str(caught.value)
    assert "postgresql://user:password@host:5432/dbname" in str(caught.value)


def test_unreachable_port() -> None:
    with pytest.raises(PostgresError, match="unreachable") as caught:
        _resolve(f"postgresql://u:hunter2@127.0.0.1:{_free_port()}/postgres")
    assert "hunter2" not in str(caught.value)


def test_wrong_password(pg_url: PostgresUrl) -> None:
    url = _role(pg_url, "REPLICATION", "CREATEDB")
    wrong = url.url.replace(PASSWORD, "not-the-password")
    with pytest.raises(PostgresError, match="wrong password or unknown role") as caught:
        _resolve(wrong)
    assert "not-the-password" not in str(caught.value)
    assert url.user in str(caught.value)


def test_unknown_role(pg_url: PostgresUrl) -> None:
    with pytest.raises(PostgresError, match="wrong password or unknown role"):
        _resolve(f"postgresql://nobody_here:x@127.0.0.1:{pg_url.port}/postgres")


def test_missing_database(pg_url: PostgresUrl) -> None:
    with pytest.raises(PostgresError, match="has no database 'no_such_db'"):
        _resolve(pg_url.with_dbname("no_such_db").url)


def test_role_without_replication(pg_url: PostgresUrl) -> None:
    url = _role(pg_url, "CREATEDB")
    with pytest.raises(PostgresError, match="cannot replicate") as caught:
        check_user_postgres(url)
    assert f'ALTER ROLE "{url.user}" REPLICATION' in str(caught.value)
    assert "cannot create databases" not in str(caught.value)
    assert PASSWORD not in str(caught.value)


def test_role_without_createdb(pg_url: PostgresUrl) -> None:
    url = _role(pg_url, "REPLICATION")
    with pytest.raises(PostgresError, match="cannot create databases") as caught:
        check_user_postgres(url)
    assert "cannot replicate" not in str(caught.value)


def test_existing_profiling_database_without_create_privilege(pg_url: PostgresUrl) -> None:
    url = _role(pg_url, "REPLICATION", "CREATEDB")
    database = f"locked_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_url.url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    with pytest.raises(PostgresError, match=f'GRANT CREATE ON DATABASE "{database}"'):
        check_user_postgres(url, database)


@pytest.fixture(scope="module")
def replica_server() -> Iterator[EmbeddedPostgres]:
    """A second server whose wal_level was set to replica the way a user's would be."""
    home = Path(tempfile.mkdtemp(prefix="rrlab-wal-"))
    server = EmbeddedPostgres(home)
    try:
        url = server.start()
        with psycopg.connect(url.url, autocommit=True) as conn:
            conn.execute("ALTER SYSTEM SET wal_level = replica")
        server.stop(force=True)
        server.start()
        yield server
    finally:
        server.stop(force=True)
        shutil.rmtree(home, ignore_errors=True)


def test_wal_level_not_logical_and_its_fix(replica_server: EmbeddedPostgres) -> None:
    url = replica_server.url()
    with pytest.raises(PostgresError, match="wal_level is 'replica'") as caught:
        check_user_postgres(url)
    assert "ALTER SYSTEM SET wal_level = logical;" in str(caught.value)
    assert "restart" in str(caught.value)

    # the fix the message names works
    with psycopg.connect(url.url, autocommit=True) as conn:
        conn.execute("ALTER SYSTEM SET wal_level = logical")
    replica_server.stop(force=True)
    check_user_postgres(replica_server.start())
