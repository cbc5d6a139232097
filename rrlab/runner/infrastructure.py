"""Bringing up what a run needs: PostgreSQL set up for profiling, and the ClickHouse sink.

The result is an :class:`Infrastructure` whose clear-text URLs are handed to child
processes through their environment only.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg

from rrlab.config import RunConfig
from rrlab.exceptions import PostgresError, RrlabError
from rrlab.infra.ch_migrations import check_schema, run_migrations
from rrlab.infra.clickhouse import EmbeddedClickHouse, clickhouse_client
from rrlab.infra.pg_setup import drop_slot, setup_profiling_database
from rrlab.infra.postgres import connect, resolve_postgres
from rrlab.urls import PostgresUrl

log = logging.getLogger(__name__)

ENV_DATABASE_URL = "RRLAB_DATABASE_URL"
ENV_CLICKHOUSE_URL = "RRLAB_CLICKHOUSE_URL"


@dataclass
class Infrastructure:
    """Connection details of a prepared run (URLs hold secrets: never print them)."""

    database: PostgresUrl
    clickhouse_url: str | None
    postgres_version: str
    clickhouse_version: str | None
    clickhouse_pid: int | None = None

    def child_environment(self) -> dict[str, str]:
        env = {ENV_DATABASE_URL: self.database.url}
        if self.clickhouse_url:
            env[ENV_CLICKHOUSE_URL] = self.clickhouse_url
        return env


@contextlib.contextmanager
def profiling_database_claim(server: PostgresUrl, database_name: str) -> Iterator[None]:
    """Hold a session advisory lock naming the profiling database for the whole run.

    Set-up truncates TaskRun and takes the slot from whatever walsender holds it, which is
    right for a crashed run's leftovers and wrong for a run still going. A live run holds
    this lock on its own connection (a crashed one lost it with its connection), so a second
    run on the same database is refused instead of breaking the first.
    """
    conn = connect(server)
    try:
        # the name a refused run sees in its error, to tell which run holds the database
        conn.execute(
            "SELECT set_config('application_name', %s, false)",
            (f"rrlab run pid {os.getpid()} on {socket.gethostname()}"[:63],),
        )
        claimed = conn.execute(
            "SELECT pg_try_advisory_lock(hashtext('rrlab profiling database ' || %s))",
            (database_name,),
        ).fetchone()[0]
        if not claimed:
            raise PostgresError(
                f"Another rrlab run{_claim_holder(conn, database_name)} is using the "
                f"profiling database {database_name!r} on "
                f"{server.masked}. Wait for it to end, or give this run its own database, "
                f"slot and publication: --set postgres.database_name=... "
                "--set consumer.slot_name=... --set consumer.publication_name=..."
            )
        yield
    finally:
        conn.close()


def _claim_holder(conn: psycopg.Connection, database_name: str) -> str:
    """`` (who holds it, since when)`` for the claim on ``database_name``; empty when the
    holder has just released it."""
    row = conn.execute(
        """
        WITH claim AS (SELECT hashtext('rrlab profiling database ' || %s)::bigint AS key)
        SELECT a.application_name, a.pid, a.backend_start
        FROM claim, pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
        WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
          AND l.classid::bigint = (claim.key >> 32) & 4294967295
          AND l.objid::bigint = claim.key & 4294967295
        """,
        (database_name,),
    ).fetchone()
    if row is None:
        return ""
    name, pid, since = row
    return f" ({name or f'PostgreSQL process {pid}'}, since {since:%Y-%m-%d %H:%M:%S %Z})"


def _drop_run_slot(database: PostgresUrl, slot: str) -> None:
    """After the run nothing reads the slot, and a slot nobody reads keeps all later WAL
    of the server (every database's): drop it; the next run creates its own."""
    try:
        with connect(database) as conn:
            drop_slot(conn, slot)
    except RrlabError as exc:
        log.warning("could not drop replication slot %s after the run: %s", slot, exc)


@contextlib.contextmanager
def prepared_infrastructure(config: RunConfig, run_dir: Path) -> Iterator[Infrastructure]:
    """Set up PostgreSQL and ClickHouse for one run; stop what was started on exit."""
    server = resolve_postgres(config.postgres)
    with contextlib.ExitStack() as stack:
        stack.enter_context(profiling_database_claim(server, config.postgres.database_name))
        database = setup_profiling_database(server, config)
        stack.callback(_drop_run_slot, database, config.consumer.slot_name)
        with psycopg.connect(database.url, autocommit=True) as conn:
            postgres_version = conn.execute("SHOW server_version").fetchone()[0]
        clickhouse_url, clickhouse_version, clickhouse_pid = None, None, None
        if config.clickhouse.sink == "chdb":
            embedded = stack.enter_context(EmbeddedClickHouse(run_dir / "clickhouse"))
            clickhouse_url, clickhouse_pid = embedded.url, embedded.pid
        elif config.clickhouse.sink == "clickhouse":
            clickhouse_url = config.clickhouse.clickhouse_url.reveal()
        if clickhouse_url:
            client = clickhouse_client(clickhouse_url)
            run_migrations(client, config.clickhouse.database)
            # a user's database may hold tables from another version: refuse, naming the drift
            check_schema(client, config.clickhouse.database)
            clickhouse_version = client.server_version
            client.close()
        yield Infrastructure(
            database, clickhouse_url, postgres_version, clickhouse_version, clickhouse_pid
        )
