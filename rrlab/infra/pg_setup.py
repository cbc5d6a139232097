"""Idempotent set-up of the profiling database: schema, fixtures, clean TaskRun, publication, slot.

Names of the database, slot and publication are checked against the identifier rule of
:mod:`rrlab.config` and only ever reach SQL through :class:`psycopg.sql.Identifier` or as
bound parameters.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from rrlab.config import IDENTIFIER, RunConfig
from rrlab.exceptions import ConfigError, PostgresError
from rrlab.infra.embedded_postgres import pg_binary
from rrlab.infra.postgres import CONNECT_TIMEOUT_S, connect, consumer_application_name
from rrlab.infra.taskrun_schema import TABLE, schema_ddl
from rrlab.urls import PostgresUrl, mask_text, parse_postgres_url

FIXTURE_SLUG = "rrlab-profiling"
ENVIRONMENT_SLUG = "prod"
ENVIRONMENT_TYPE = "PRODUCTION"
# Serialises concurrent set-ups of one database (any constant unique to rrlab).
SETUP_LOCK_KEY = 0x7272_6C61_6273_6574
SLOT_DROP_ATTEMPTS = 40
SLOT_DROP_PAUSE_S = 0.25


@dataclass(frozen=True)
class Fixtures:
    """The organization, project and environment every produced TaskRun belongs to."""

    organization_id: str
    organization_slug: str
    project_id: str
    project_slug: str
    environment_id: str
    environment_slug: str
    environment_type: str


def identifier(name: str, what: str) -> sql.Identifier:
    """``name`` as a SQL identifier after checking it against rrlab's identifier rule."""
    if not isinstance(name, str) or not IDENTIFIER.match(name):
        raise ConfigError(
            f"{what} {name!r} is not allowed: use lower-case letters, digits and _, starting "
            "with a letter or _, at most 63 characters."
        )
    return sql.Identifier(name)


def setup_profiling_database(server_url: PostgresUrl, config: RunConfig) -> PostgresUrl:
    """Make the profiling database ready for a run and return its URL.

    Creates the database when missing, the schema when missing (generated, or copied from
    ``config.postgres.schema_from``), the fixtures when missing; then empties TaskRun, sets
    REPLICA IDENTITY FULL and recreates the publication and the logical slot.
    """
    database = config.postgres.database_name
    slot = config.consumer.slot_name
    publication = config.consumer.publication_name
    # refuse a bad name before anything is created
    identifier(slot, "consumer.slot_name")
    identifier(publication, "consumer.publication_name")
    create_database(server_url, database)
    url = server_url.with_dbname(database)
    try:
        with connect(url) as conn:
            conn.execute("SELECT pg_advisory_lock(%s)", (SETUP_LOCK_KEY,))
            if not _table_exists(conn, TABLE):
                if config.postgres.schema_from is not None:
                    copy_schema(parse_postgres_url(config.postgres.schema_from.reveal()), url)
                else:
                    with conn.transaction():
                        for statement in schema_ddl():
                            conn.execute(statement)
            with conn.transaction():
                ensure_fixtures(conn)
                conn.execute(sql.SQL("TRUNCATE {}").format(sql.Identifier(TABLE)))
                conn.execute(
                    sql.SQL("ALTER TABLE {} REPLICA IDENTITY FULL").format(sql.Identifier(TABLE))
                )
                recreate_publication(conn, publication)
            recreate_slot(conn, slot)
    except psycopg.Error as exc:
        raise PostgresError(
            f"Setting up the profiling database {database!r} on {url.host}:{url.port} failed: "
            f"{mask_text(str(exc).strip(), (url.password,))}"
        ) from None
    return url


def create_database(server_url: PostgresUrl, database: str) -> bool:
    """Create ``database`` unless it exists; return whether it was created."""
    name = identifier(database, "postgres.database_name")
    with connect(server_url) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone():
            return False
        try:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(name))
        except psycopg.errors.DuplicateDatabase:
            return False  # a concurrent set-up created it first
        except psycopg.Error as exc:
            raise PostgresError(
                f"Could not create database {database!r} on {server_url.host}:{server_url.port}: "
                f"{mask_text(str(exc).strip(), (server_url.password,))}"
            ) from None
    return True


def drop_profiling_database(server_url: PostgresUrl, config: RunConfig) -> None:
    """Drop the run's slot and its profiling database (used by tests and clean-ups)."""
    database = config.postgres.database_name
    with connect(server_url) as conn:
        drop_slot(conn, config.consumer.slot_name)
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                identifier(database, "postgres.database_name")
            )
        )


def recreate_publication(conn: psycopg.Connection, publication: str) -> None:
    name = identifier(publication, "consumer.publication_name")
    conn.execute(sql.SQL("DROP PUBLICATION IF EXISTS {}").format(name))
    conn.execute(
        sql.SQL(
            "CREATE PUBLICATION {} FOR TABLE {} WITH (publish = 'insert, update, delete')"
        ).format(name, sql.Identifier(TABLE))
    )


def drop_slot(conn: psycopg.Connection, slot: str) -> bool:
    """Drop ``slot`` if it exists, terminating a walsender that holds it; True if dropped.

    A walsender left by a dead consumer (or a pg_recvlogical) is taken back; one serving a
    consumer that is still running on this machine is refused with its name, since taking
    its slot would silently end that consumer. ``conn`` must be in autocommit mode. A
    terminated walsender takes a moment to release the slot, hence the retries.
    """
    identifier(slot, "consumer.slot_name")
    query = """SELECT s.active_pid, a.application_name FROM pg_replication_slots s
               LEFT JOIN pg_stat_activity a ON a.pid = s.active_pid WHERE s.slot_name = %s"""
    for _attempt in range(SLOT_DROP_ATTEMPTS):
        row = conn.execute(query, (slot,)).fetchone()
        if row is None:
            return False
        walsender, name = row
        if walsender is not None:
            if _is_live_consumer(name or ""):
                raise PostgresError(
                    f"Replication slot {slot!r} is being read by a running consumer ({name}). "
                    "Stop that consumer first, or choose another consumer.slot_name."
                )
            conn.execute("SELECT pg_terminate_backend(%s, 5000)", (walsender,))
        try:
            conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
            return True
        except psycopg.errors.ObjectInUse:
            time.sleep(SLOT_DROP_PAUSE_S)
        except psycopg.errors.UndefinedObject:
            return False  # dropped meanwhile by someone else
    raise PostgresError(
        f"Replication slot {slot!r} is still in use after {SLOT_DROP_ATTEMPTS} attempts to "
        "terminate its walsender. Stop the process reading it (another rrlab run or "
        "pg_recvlogical), or choose another consumer.slot_name."
    )


def _is_live_consumer(application_name: str) -> bool:
    """Whether a walsender's application name is that of an rrlab consumer still running here."""
    pid = application_name.removeprefix("rrlab consumer pid ").partition(" ")[0]
    if not pid.isdigit() or application_name != consumer_application_name(int(pid)):
        return False  # another tool, another machine, or a name truncated past the pid
    try:
        process = psutil.Process(int(pid))
        return process.status() != psutil.STATUS_ZOMBIE and any(
            "rrlab.service.consumer" in part for part in process.cmdline()
        )
    except psutil.Error:
        return False  # it died; its walsender has not noticed yet


def recreate_slot(conn: psycopg.Connection, slot: str) -> str:
    """Drop and recreate the logical slot ``slot`` (pgoutput) in ``conn``'s database.

    Returns the slot's consistent point (an LSN string); ``conn`` must be in autocommit mode.
    """
    drop_slot(conn, slot)
    row = conn.execute(
        "SELECT lsn::text FROM pg_create_logical_replication_slot(%s, 'pgoutput')", (slot,)
    ).fetchone()
    assert row is not None
    return str(row[0])


def current_wal_lsn(conn: psycopg.Connection) -> str:
    """The server's current WAL write position, e.g. ``0/1A2B3C4``."""
    row = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
    assert row is not None
    return str(row[0])


# --- fixtures -------------------------------------------------------------------


def load_fixtures(conn: psycopg.Connection) -> Fixtures:
    """The fixture rows of a set-up profiling database; raises if set-up has not run."""
    fixtures = _find_fixtures(conn)
    if fixtures is None:
        raise PostgresError(
            "The profiling database has no rrlab fixtures (organization, project, environment). "
            "Run the set-up first (rrlab.infra.pg_setup.setup_profiling_database)."
        )
    return fixtures


def ensure_fixtures(conn: psycopg.Connection) -> Fixtures:
    """Reuse the fixture organization, project and PRODUCTION environment, or create them."""
    organization_id = _find_or_insert(
        conn,
        "Organization",
        {"slug": FIXTURE_SLUG},
        {"id": "rrlab_organization", "title": "rrlab profiling"},
    )
    project_id = _find_or_insert(
        conn,
        "Project",
        {"slug": FIXTURE_SLUG, "organizationId": organization_id},
        {"id": "rrlab_project", "name": "rrlab profiling", "externalRef": "proj_rrlabprofiling"},
    )
    _find_or_insert(
        conn,
        "RuntimeEnvironment",
        {"projectId": project_id, "type": ENVIRONMENT_TYPE},
        {"id": "rrlab_environment", "slug": ENVIRONMENT_SLUG, "organizationId": organization_id},
    )
    return load_fixtures(conn)


def _find_fixtures(conn: psycopg.Connection) -> Fixtures | None:
    row = conn.execute(
        """SELECT o."id", o."slug", p."id", p."slug", e."id", e."slug", e."type"::text
        FROM "Organization" o
        JOIN "Project" p ON p."organizationId" = o."id" AND p."slug" = o."slug"
        JOIN "RuntimeEnvironment" e ON e."projectId" = p."id" AND e."type"::text = %s
        WHERE o."slug" = %s
        ORDER BY e."id" LIMIT 1""",
        (ENVIRONMENT_TYPE, FIXTURE_SLUG),
    ).fetchone()
    return Fixtures(*row) if row else None


def _find_or_insert(
    conn: psycopg.Connection, table: str, key: dict[str, str], values: dict[str, str]
) -> str:
    """The id of the row of ``table`` matching ``key``, inserted with ``values`` if absent.

    Other NOT NULL columns without a default get a neutral value of their type, so this also
    fills the full upstream tables of a schema copied with ``--schema-from``.
    """
    where = sql.SQL(" AND ").join(
        sql.SQL("{}::text = %s").format(sql.Identifier(column)) for column in key
    )
    found = conn.execute(
        sql.SQL("SELECT {} FROM {} WHERE {} LIMIT 1").format(
            sql.Identifier("id"), sql.Identifier(table), where
        ),
        list(key.values()),
    ).fetchone()
    if found:
        return str(found[0])
    row = {**_required_filler(conn, table), **key, **values}
    conn.execute(
        sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
            sql.Identifier(table),
            sql.SQL(", ").join(map(sql.Identifier, row)),
            sql.SQL(", ").join(sql.Placeholder() * len(row)),
        ),
        list(row.values()),
    )
    return values["id"]


# Text input for a NOT NULL column without default, by pg_type.typcategory; the server
# casts it to the column's type (psycopg sends str parameters untyped).
_NEUTRAL_BY_CATEGORY = {"N": "0", "B": "false", "D": "now", "A": "{}", "U": "{}"}


def _required_filler(conn: psycopg.Connection, table: str) -> dict[str, str]:
    rows = conn.execute(
        """SELECT a.attname, t.typcategory,
               (SELECT e.enumlabel FROM pg_enum e WHERE e.enumtypid = t.oid
                ORDER BY e.enumsortorder LIMIT 1)
        FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
        WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped
          AND a.attnotnull AND NOT a.atthasdef AND a.attidentity = '' AND a.attgenerated = ''""",
        (sql.Identifier(table).as_string(conn),),
    ).fetchall()
    filler = {}
    for column, category, first_label in rows:
        if category == "S":
            filler[column] = f"rrlab_{table}_{column}"
        elif category == "E":
            filler[column] = first_label
        elif category in _NEUTRAL_BY_CATEGORY:
            filler[column] = _NEUTRAL_BY_CATEGORY[category]
    return filler


def _table_exists(conn: psycopg.Connection, table: str) -> bool:
    row = conn.execute("SELECT to_regclass(%s)", (sql.Identifier(table).as_string(conn),))
    return row.fetchone() != (None,)


# --- schema copy --------------------------------------------------------------------


def _libpq_target(url: PostgresUrl) -> tuple[str, dict[str, str]]:
    """A conninfo without the password, and the environment that carries it (argv is public)."""
    params = conninfo_to_dict(url.url)
    password = str(params.pop("password", "") or "")
    params.setdefault("connect_timeout", str(CONNECT_TIMEOUT_S))
    env = {"PGPASSWORD": password} if password else {}
    return make_conninfo(**params), env


def copy_schema(source: PostgresUrl, target: PostgresUrl) -> None:
    """Copy the whole schema of ``source`` into ``target`` with pg_dump --schema-only and psql."""
    source_conninfo, source_env = _libpq_target(source)
    target_conninfo, target_env = _libpq_target(target)
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    with tempfile.TemporaryDirectory(prefix="rrlab-schema-") as folder:
        dump = Path(folder) / "schema.sql"
        _run_client(
            [pg_binary("pg_dump"), "--schema-only", "--no-owner", "--no-privileges"]
            + ["--no-publications", "--no-subscriptions", "--file", str(dump), source_conninfo],
            {**base_env, **source_env},
            f"dump the schema of {source.masked} (--schema-from)",
            source.password,
        )
        _run_client(
            [pg_binary("psql"), "--no-psqlrc", "--quiet", "--single-transaction"]
            + ["--set", "ON_ERROR_STOP=1"]
            + ["--file", str(dump), "--dbname", target_conninfo],
            {**base_env, **target_env},
            f"load the schema copied from {source.masked} into {target.masked}",
            target.password,
        )


def _run_client(argv: list[str], env: dict[str, str], purpose: str, password: str) -> None:
    result = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        detail = mask_text(result.stderr.strip(), (password,))
        raise PostgresError(f"Could not {purpose}: {detail}")
