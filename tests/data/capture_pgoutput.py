"""Capture real pgoutput (protocol v1) messages for the decoder's unit tests.

Starts a throwaway embedded PostgreSQL (wal_level=logical), runs the scenario below and
writes every message the slot produced to ``pgoutput_capture.json`` beside this file::

    .venv/bin/python tests/data/capture_pgoutput.py

The tests assert the values the scenario wrote, so keep the two in step.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import psycopg

from rrlab.infra.embedded_postgres import EmbeddedPostgres

OUTPUT = Path(__file__).with_name("pgoutput_capture.json")
SLOT = "capture_slot"
PUBLICATION = "capture_pub"

SCHEMA = """
CREATE TYPE "Mood" AS ENUM ('HAPPY', 'SAD');
CREATE TABLE items (
    id bigint PRIMARY KEY, small smallint, num integer, ratio real, score double precision,
    amount numeric(12, 3), flag boolean, title text, code varchar(10), fixed char(4),
    label name, created timestamp(3), seen timestamptz, day date, doc json, meta jsonb,
    tags text[], counts integer[], mood "Mood", big text
);
CREATE TABLE items_full (id text PRIMARY KEY, status "Mood", note text, updated timestamp(3));
ALTER TABLE items_full REPLICA IDENTITY FULL;
"""

# 300 md5 digests: 9,600 characters that pglz cannot shrink enough, so they are
# TOASTed out of line and an update that leaves them alone sends 'u'.
BIG = "(SELECT string_agg(md5(i::text), '') FROM generate_series(1, 300) AS i)"

# Each entry is one transaction; the tests refer to them by these names.
SCENARIO: list[tuple[str, list[str]]] = [
    (
        "insert",
        [
            "INSERT INTO items VALUES (1, -32768, 2147483647, 1.5, 0.1, 12345.678, true, "
            "'héllo wörld', 'varchar', 'ab', 'a_name', '2024-03-10 06:30:00.123', "
            "'2024-03-10 06:30:00.123456+00', '2024-02-29', '{\"b\": [1, 2], \"a\": \"x\"}', "
            '\'{"nested": {"k": [true, null, 1.5]}, "s": "é"}\', '
            "ARRAY['plain', 'with space', 'quote\"d', 'back\\slash', 'comma,brace{}', NULL, "
            "'NULL', '', 'ünïcode'], '{1,NULL,3}', 'HAPPY', " + BIG + ")",
            "INSERT INTO items (id) VALUES (2)",
        ],
    ),
    ("update_toast_unchanged", ["UPDATE items SET num = 2 WHERE id = 1"]),
    ("update_key_changed", ["UPDATE items SET id = 10 WHERE id = 2"]),
    (
        "full_identity",
        [
            "INSERT INTO items_full VALUES ('run_1', 'HAPPY', 'first', '2024-01-01 00:00:00')",
            "UPDATE items_full SET status = 'SAD', note = 'second' WHERE id = 'run_1'",
            "DELETE FROM items_full WHERE id = 'run_1'",
        ],
    ),
    ("delete_by_key", ["DELETE FROM items WHERE id = 10"]),
    (
        "column_added",
        [
            "ALTER TABLE items ADD COLUMN extra text DEFAULT 'added'",
            "INSERT INTO items (id, title) VALUES (3, 'after alter')",
        ],
    ),
    ("truncate", ["TRUNCATE items_full"]),
    (
        "logical_message",
        [
            "SELECT pg_logical_emit_message(true, 'rrlab', 'hello'::bytea)",
            "INSERT INTO items (id) VALUES (4)",
        ],
    ),
]


def run_scenario(conn: psycopg.Connection) -> None:
    for _name, statements in SCENARIO:
        with conn.transaction():
            for statement in statements:
                conn.execute(statement)
    # An origin on the session makes pgoutput send an Origin message.
    conn.execute("SELECT pg_replication_origin_create('capture_origin')")
    conn.execute("SELECT pg_replication_origin_session_setup('capture_origin')")
    with conn.transaction():
        conn.execute("INSERT INTO items (id) VALUES (5)")
    conn.execute("SELECT pg_replication_origin_session_reset()")


def capture(url: str) -> list[dict[str, object]]:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(SCHEMA)
        conn.execute(f"CREATE PUBLICATION {PUBLICATION} FOR TABLE items, items_full")
        conn.execute(f"SELECT pg_create_logical_replication_slot('{SLOT}', 'pgoutput')")
        run_scenario(conn)
        # A non-UTC session zone makes timestamptz values carry an offset to parse.
        conn.execute("SET timezone = 'Asia/Kolkata'")
        rows = conn.execute(
            "SELECT lsn::text, xid::text, data FROM pg_logical_slot_get_binary_changes("
            f"'{SLOT}', NULL, NULL, 'proto_version', '1', 'publication_names', "
            f"'{PUBLICATION}', 'messages', 'true')"
        ).fetchall()
    return [{"lsn": lsn, "xid": int(xid), "data": data.hex()} for lsn, xid, data in rows]


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="rrlab-capture-") as home:
        server = EmbeddedPostgres(home)
        url = server.start()
        try:
            messages = capture(url.url)
        finally:
            server.stop(force=True)
    scenario = [{"name": name, "statements": statements} for name, statements in SCENARIO]
    OUTPUT.write_text(json.dumps({"scenario": scenario, "messages": messages}, indent=1) + "\n")
    print(f"{len(messages)} messages written to {OUTPUT}")


if __name__ == "__main__":
    main()
