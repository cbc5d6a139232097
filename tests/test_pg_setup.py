"""Set-up of the profiling database: schema fidelity, fixtures, idempotence, publication, slot."""

from __future__ import annotations

import csv
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from rrlab.config import Secret
from rrlab.exceptions import ConfigError, PostgresError
from rrlab.infra.embedded_postgres import pg_binary
from rrlab.infra.pg_setup import (
    current_wal_lsn,
    drop_profiling_database,
    load_fixtures,
    setup_profiling_database,
)
from rrlab.urls import PostgresUrl
from tests.fixtures.postgres import ProfilingDatabase, unique_profiling_config

REFERENCE = Path(__file__).resolve().parent.parent / "rrlab" / "reference"


def _tsv(name: str) -> list[dict[str, str]]:
    with open(REFERENCE / name, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def _columns(url: PostgresUrl) -> list[tuple[str, str, str, str]]:
    """(name, type, nullable, default) of TaskRun as the catalog reports them, in order."""
    with psycopg.connect(url.url) as conn:
        rows = conn.execute(
            """SELECT a.attname, format_type(a.atttypid, a.atttypmod),
                      CASE WHEN a.attnotnull THEN 'NO' ELSE 'YES' END,
                      coalesce(pg_get_expr(d.adbin, d.adrelid), '')
            FROM pg_attribute a
            LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
            WHERE a.attrelid = '"TaskRun"'::regclass AND a.attnum > 0 AND NOT a.attisdropped
            ORDER BY a.attnum"""
        ).fetchall()
    return [
        (name, pg_type.replace('"', ""), nullable, default)
        for name, pg_type, nullable, default in rows
    ]


def _expected_columns() -> list[tuple[str, str, str, str]]:
    return [
        (r["column"], r["pg_type"], r["nullable"], r["default"])
        for r in _tsv("taskrun_postgres.tsv")
    ]


def test_taskrun_columns_match_the_reference(profiling_db: ProfilingDatabase) -> None:
    assert _columns(profiling_db.url) == _expected_columns()


def test_enum_labels_match_the_reference(profiling_db: ProfilingDatabase) -> None:
    with psycopg.connect(profiling_db.url.url) as conn:
        rows = conn.execute(
            """SELECT t.typname, array_agg(e.enumlabel::text ORDER BY e.enumsortorder)
            FROM pg_type t JOIN pg_enum e ON e.enumtypid = t.oid GROUP BY t.typname"""
        ).fetchall()
    expected = {r["enum"]: r["values"].split(",") for r in _tsv("postgres_enums.tsv")}
    assert dict(rows) == expected


def test_indexes_match_the_reference(profiling_db: ProfilingDatabase) -> None:
    with psycopg.connect(profiling_db.url.url) as conn:
        rows = conn.execute(
            """SELECT am.amname, i.indisunique, i.indisprimary,
                      (SELECT string_agg(a.attname || CASE WHEN i.indoption[k.n - 1] & 1 = 1
                                                           THEN ' DESC' ELSE '' END,
                                         ', ' ORDER BY k.n)
                       FROM unnest(i.indkey[0:i.indnkeyatts - 1]) WITH ORDINALITY AS k(attnum, n)
                       JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum),
                      (SELECT string_agg(a.attname, ', ')
                       FROM unnest(i.indkey[i.indnkeyatts:]) AS k(attnum)
                       JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum),
                      c.reloptions
            FROM pg_index i
            JOIN pg_class c ON c.oid = i.indexrelid
            JOIN pg_am am ON am.oid = c.relam
            WHERE i.indrelid = '"TaskRun"'::regclass"""
        ).fetchall()
    found = {
        (columns, method, "yes" if unique else "no"): (primary, include, options)
        for method, unique, primary, columns, include, options in rows
    }
    expected = {
        (r["columns"], r["method"], r["unique"]) for r in _tsv("taskrun_postgres_indexes.tsv")
    }
    assert set(found) == expected
    assert found[("id", "btree", "yes")][0] is True  # the primary key
    assert found[("runtimeEnvironmentId, createdAt DESC", "btree", "no")][1:] == (
        "id",
        ["fillfactor=90"],
    )


def _one_row(conn: psycopg.Connection, query: str, *params: object) -> tuple:
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return row


def test_set_up_state_and_idempotent_second_set_up(
    pg_url: PostgresUrl, profiling_db: ProfilingDatabase
) -> None:
    db = profiling_db
    with psycopg.connect(db.url.url, autocommit=True) as conn:
        conn.execute(
            """INSERT INTO "TaskRun" ("id", "payload", "runtimeEnvironmentId", "projectId",
                "updatedAt", "taskIdentifier", "friendlyId", "spanId", "traceId", "queue")
            VALUES ('run_1', '{}', %s, %s, now(), 'task', 'run_1', 's', 't', 'q')""",
            (db.fixtures.environment_id, db.fixtures.project_id),
        )
        first_slot = _one_row(
            conn,
            "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = %s",
            db.slot_name,
        )

    assert setup_profiling_database(pg_url, db.config) == db.url

    with psycopg.connect(db.url.url) as conn:
        assert load_fixtures(conn) == db.fixtures
        assert db.fixtures.environment_type == "PRODUCTION"
        for table in ("Organization", "Project", "RuntimeEnvironment"):
            count = _one_row(conn, sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table)))
            assert count == (1,)
        assert _one_row(conn, 'SELECT count(*) FROM "TaskRun"') == (0,)
        assert _one_row(
            conn, "SELECT relreplident FROM pg_class WHERE oid = '\"TaskRun\"'::regclass"
        ) == ("f",)
        publication = conn.execute(
            """SELECT p.pubinsert, p.pubupdate, p.pubdelete, p.pubtruncate, t.tablename
            FROM pg_publication p JOIN pg_publication_tables t ON t.pubname = p.pubname
            WHERE p.pubname = %s""",
            (db.publication_name,),
        ).fetchall()
        assert publication == [(True, True, True, False, "TaskRun")]
        slot = _one_row(
            conn,
            """SELECT plugin, slot_type, database, active, confirmed_flush_lsn > %s::pg_lsn
            FROM pg_replication_slots WHERE slot_name = %s""",
            str(first_slot[0]),
            db.slot_name,
        )
        # a new slot: it starts after the insert's WAL, where the first one started before it
        assert slot == ("pgoutput", "logical", db.config.postgres.database_name, False, True)


def _slot_active_pid(url: PostgresUrl, slot: str) -> int | None:
    with psycopg.connect(url.url) as conn:
        row = conn.execute(
            "SELECT active_pid FROM pg_replication_slots WHERE slot_name = %s", (slot,)
        ).fetchone()
    return row[0] if row else None


def test_set_up_takes_the_slot_from_a_walsender_that_holds_it(
    pg_url: PostgresUrl, profiling_db: ProfilingDatabase
) -> None:
    db = profiling_db
    receiver = subprocess.Popen(
        [pg_binary("pg_recvlogical"), "--dbname", db.url.url, "--slot", db.slot_name]
        + ["--start", "--no-loop", "--file", "-", "--option", "proto_version=1"]
        + ["--option", f"publication_names={db.publication_name}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while _slot_active_pid(pg_url, db.slot_name) is None:
            assert receiver.poll() is None, receiver.stderr.read() if receiver.stderr else ""
            assert time.monotonic() < deadline, "pg_recvlogical never took the slot"
            time.sleep(0.05)
        holder = _slot_active_pid(pg_url, db.slot_name)

        setup_profiling_database(pg_url, db.config)

        receiver.wait(timeout=60)  # its walsender was terminated
        assert receiver.returncode != 0
        with psycopg.connect(db.url.url) as conn:
            pids = [p for (p,) in conn.execute("SELECT pid FROM pg_stat_replication").fetchall()]
            assert holder not in pids
        assert _slot_active_pid(pg_url, db.slot_name) is None
    finally:
        receiver.kill()
        receiver.wait()


def test_schema_from_copies_an_upstream_like_schema(
    pg_url: PostgresUrl, profiling_db: ProfilingDatabase
) -> None:
    # The source looks like upstream: fixture tables with more NOT NULL columns rrlab
    # does not know, which the fixtures must fill.
    with psycopg.connect(profiling_db.url.url, autocommit=True) as conn:
        conn.execute('TRUNCATE "Organization", "Project", "RuntimeEnvironment"')
        conn.execute(
            """ALTER TABLE "Project" ADD COLUMN "version" integer NOT NULL,
                ADD COLUMN "deletedFlag" boolean NOT NULL, ADD COLUMN "builderRef" text NOT NULL,
                ADD COLUMN "settings" jsonb NOT NULL, ADD COLUMN "tags" text[] NOT NULL,
                ADD COLUMN "environmentKind" "RuntimeEnvironmentType" NOT NULL,
                ADD COLUMN "archivedAt" timestamp(3) NOT NULL"""
        )
        # pg_dump reads the source as a password-protected role (the password travels in
        # PGPASSWORD, never on the command line)
        reader = f"reader_{profiling_db.config.postgres.database_name}"
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD 'r3ader' IN ROLE pg_read_all_data").format(
                sql.Identifier(reader)
            )
        )
    source = profiling_db.url.url.replace("postgres@", f"{reader}:r3ader@")
    wrong = unique_profiling_config(**{"postgres.schema_from": source.replace("r3ader", "b4d")})
    try:
        with pytest.raises(PostgresError, match="Could not dump the schema") as caught:
            setup_profiling_database(pg_url, wrong)
        assert "b4d" not in str(caught.value)
    finally:
        drop_profiling_database(pg_url, wrong)
    config = unique_profiling_config()
    config = replace(config, postgres=replace(config.postgres, schema_from=Secret(source)))
    try:
        url = setup_profiling_database(pg_url, config)
        assert _columns(url) == _expected_columns()
        with psycopg.connect(url.url) as conn:
            fixtures = load_fixtures(conn)
            project = _one_row(
                conn,
                'SELECT "version", "deletedFlag", "environmentKind"::text FROM "Project"'
                " WHERE id = %s",
                fixtures.project_id,
            )
        assert project == (0, False, "PRODUCTION")
    finally:
        drop_profiling_database(pg_url, config)


def test_names_that_are_not_identifiers_are_refused(pg_url: PostgresUrl) -> None:
    config = unique_profiling_config()
    bad_slot = replace(config, consumer=replace(config.consumer, slot_name='x"; DROP TABLE y; --'))
    with pytest.raises(ConfigError, match="consumer.slot_name"):
        setup_profiling_database(pg_url, bad_slot)
    bad_publication = replace(config, consumer=replace(config.consumer, publication_name="a b"))
    with pytest.raises(ConfigError, match="consumer.publication_name"):
        setup_profiling_database(pg_url, bad_publication)
    bad_db = replace(config, postgres=replace(config.postgres, database_name="Trigger-DB"))
    with pytest.raises(ConfigError, match="postgres.database_name"):
        setup_profiling_database(pg_url, bad_db)
    with psycopg.connect(pg_url.url) as conn:
        created = conn.execute(
            "SELECT datname FROM pg_database WHERE datname IN (%s, 'Trigger-DB')",
            (config.postgres.database_name,),
        )
        assert created.fetchall() == []  # refused before anything was created


def test_current_wal_lsn_moves_forward(profiling_db: ProfilingDatabase) -> None:
    with psycopg.connect(profiling_db.url.url, autocommit=True) as conn:
        before = current_wal_lsn(conn)
        conn.execute('UPDATE "Organization" SET "title" = "title" || \'!\'')
        after = current_wal_lsn(conn)

    def as_int(lsn: str) -> int:
        high, low = lsn.split("/")
        return (int(high, 16) << 32) + int(low, 16)

    assert as_int(after) > as_int(before)
