"""Connecting to PostgreSQL and checking that a user's server can feed logical replication.

Every failure a user can cause (bad URL, unreachable server, wrong password, missing
database, ``wal_level`` or privileges) becomes a :class:`PostgresError` (or
:class:`UrlError`) whose message names the problem and the fix, without the password.
"""

from __future__ import annotations

import socket

import psycopg

from rrlab.config import PostgresConfig
from rrlab.exceptions import PostgresError
from rrlab.infra.embedded_postgres import EmbeddedPostgres
from rrlab.urls import PostgresUrl, mask_text, parse_postgres_url

CONNECT_TIMEOUT_S = 10
APPLICATION_NAME = "rrlab"


def consumer_application_name(pid: int) -> str:
    """What a consumer calls its replication connection: a slot's holder is then known by
    name (PostgreSQL keeps 63 bytes of it)."""
    return f"rrlab consumer pid {pid} on {socket.gethostname()}"[:63]


_AUTH_FAILURES = (
    "password authentication failed",
    "no password supplied",
    "authentication failed",
    "pg_hba.conf",
    "role ",  # role "x" does not exist
)
_UNREACHABLE = (
    "connection refused",
    "failed to resolve host",
    "could not translate host name",
    "timeout expired",
    "no route to host",
    "network is unreachable",
    "name or service not known",
    "no such file or directory",
)


def connect(url: PostgresUrl, *, autocommit: bool = True, **kwargs: object) -> psycopg.Connection:
    """Open a connection to ``url``; a failure becomes a :class:`PostgresError` naming the cause."""
    try:
        return psycopg.connect(
            url.url,
            autocommit=autocommit,
            connect_timeout=CONNECT_TIMEOUT_S,
            application_name=APPLICATION_NAME,
            **kwargs,
        )
    except psycopg.OperationalError as exc:
        raise PostgresError(explain_connect_error(url, exc)) from None


def explain_connect_error(url: PostgresUrl, exc: Exception) -> str:
    """The user-facing paragraph for a failed connection (never containing the password)."""
    detail = mask_text(str(exc).strip(), (url.password,))
    where = f"PostgreSQL at {url.host}:{url.port}"
    lowered = detail.lower()
    if f'database "{url.dbname.lower()}" does not exist' in lowered:
        return (
            f"{where} has no database {url.dbname!r} (the database named in DATABASE_URL "
            f"{url.masked}). Create it, or name an existing database such as postgres in the URL."
        )
    if any(marker in lowered for marker in _AUTH_FAILURES):
        return (
            f"{where} refused role {url.user!r}: wrong password or unknown role ({detail}). "
            "Check the user name and password in DATABASE_URL."
        )
    if any(marker in lowered for marker in _UNREACHABLE):
        return (
            f"{where} is unreachable ({detail}). Check the host and port in DATABASE_URL and "
            "that the server is running and accepts TCP connections from this machine."
        )
    return f"Could not connect to {where} ({detail}). Check DATABASE_URL {url.masked}."


def check_user_postgres(url: PostgresUrl, database_name: str | None = None) -> None:
    """Check that ``url`` can host rrlab's profiling database and logical replication.

    Raises :class:`PostgresError` with a paragraph naming the setting and the fix.
    ``database_name`` is the profiling database, checked for CREATE privilege if it exists.
    """
    with connect(url) as conn:
        problems = _replication_problems(conn, url, database_name)
    if problems:
        raise PostgresError(
            f"PostgreSQL at {url.host}:{url.port} (DATABASE_URL {url.masked}) cannot be used "
            "by rrlab yet:\n- " + "\n- ".join(problems)
        )


def _replication_problems(
    conn: psycopg.Connection, url: PostgresUrl, database_name: str | None
) -> list[str]:
    problems = []
    settings = dict(
        conn.execute(
            "SELECT name, setting FROM pg_settings "
            "WHERE name IN ('wal_level', 'max_replication_slots', 'max_wal_senders')"
        ).fetchall()
    )
    if settings.get("wal_level") != "logical":
        problems.append(
            f"wal_level is {settings.get('wal_level')!r}, but logical replication needs "
            "'logical'. Fix: as a superuser run `ALTER SYSTEM SET wal_level = logical;` and "
            "restart PostgreSQL (on a managed service set its logical-replication parameter, "
            "e.g. rds.logical_replication = 1, and reboot). Or unset DATABASE_URL to let rrlab "
            "start its own server."
        )
    for name in ("max_replication_slots", "max_wal_senders"):
        if int(settings.get(name) or 0) < 1:
            problems.append(
                f"{name} is 0; rrlab needs at least one. Fix: `ALTER SYSTEM SET {name} = 10;` "
                "and restart PostgreSQL."
            )
    role = conn.execute(
        "SELECT rolsuper, rolreplication, rolcreatedb FROM pg_roles WHERE rolname = current_user"
    ).fetchone()
    superuser, replication, createdb = role if role else (False, False, False)
    if not (superuser or replication):
        problems.append(
            f"role {url.user!r} cannot replicate. Fix: as a superuser run "
            f'`ALTER ROLE "{url.user}" REPLICATION;` (rrlab creates a logical replication slot).'
        )
    if not (superuser or createdb):
        problems.append(
            f"role {url.user!r} cannot create databases, and rrlab creates its profiling "
            f'database and publication. Fix: `ALTER ROLE "{url.user}" CREATEDB;`.'
        )
    if database_name is not None:
        allowed = conn.execute(
            "SELECT has_database_privilege(datname, 'CREATE') FROM pg_database WHERE datname = %s",
            (database_name,),
        ).fetchone()
        if allowed is not None and not allowed[0]:
            problems.append(
                f"role {url.user!r} may not create objects (schema, publication) in the existing "
                f'database {database_name!r}. Fix: `GRANT CREATE ON DATABASE "{database_name}" '
                f'TO "{url.user}";` or choose another postgres.database_name.'
            )
    return problems


def resolve_postgres(config: PostgresConfig) -> PostgresUrl:
    """The server a run uses: the user's DATABASE_URL after the checks, else the embedded one."""
    if config.database_url is None:
        return EmbeddedPostgres().start()
    url = parse_postgres_url(config.database_url.reveal())
    check_user_postgres(url, config.database_name)
    return url
