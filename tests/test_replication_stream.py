"""ReplicationStream against a real embedded PostgreSQL: reading, keepalives, acks, errors."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator

import psycopg
import pytest

from rrlab.exceptions import ReplicationError
from rrlab.replication.pgoutput import Begin, Commit, Insert, RelationCache, decode_message
from rrlab.replication.stream import ReplicationStream
from rrlab.service.events import lsn_to_int
from rrlab.urls import PostgresUrl

PUBLICATION = "stream_pub"
WAIT_S = 20  # upper bound for server-side effects to show; never a performance assertion


class Database:
    """A scratch database with table ``t``, publication ``stream_pub`` and slots on demand."""

    def __init__(self, url: PostgresUrl) -> None:
        self.url = url
        self.conn = psycopg.connect(url.url, autocommit=True)
        self.conn.execute("CREATE TABLE t (id int PRIMARY KEY, v text)")
        self.conn.execute(f"CREATE PUBLICATION {PUBLICATION} FOR TABLE t")
        self.slots: list[str] = []

    def slot(self) -> str:
        name = f"s_{uuid.uuid4().hex[:12]}"
        self.conn.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (name,))
        self.slots.append(name)
        return name

    def insert(self, *ids: int) -> None:
        with self.conn.transaction():
            for row_id in ids:
                self.conn.execute("INSERT INTO t VALUES (%s, %s)", (row_id, f"v{row_id}"))

    def slot_state(self, slot: str) -> tuple[int, int | None]:
        """(confirmed_flush_lsn, active_pid) of ``slot``."""
        lsn, pid = self.conn.execute(
            "SELECT confirmed_flush_lsn::text, active_pid FROM pg_replication_slots "
            "WHERE slot_name = %s",
            (slot,),
        ).fetchone()
        return lsn_to_int(lsn), pid

    def wait_for(self, slot: str, condition: Callable[[int, int | None], bool]) -> None:
        deadline = time.monotonic() + WAIT_S
        while not condition(*self.slot_state(slot)):
            assert time.monotonic() < deadline, f"slot state stayed {self.slot_state(slot)}"
            time.sleep(0.05)


@pytest.fixture
def db(pg_url: PostgresUrl) -> Iterator[Database]:
    name = f"stream_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_url.url, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    database = Database(pg_url.with_dbname(name))
    try:
        yield database
    finally:
        for slot in database.slots:
            database.wait_for(slot, lambda _lsn, pid: pid is None)
            database.conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
        database.conn.close()
        with psycopg.connect(pg_url.url, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE {name} WITH (FORCE)")


def read_messages(stream: ReplicationStream, relations: RelationCache, commits: int) -> list:
    """Decoded messages up to and including the ``commits``-th Commit."""
    messages: list = []
    deadline = time.monotonic() + WAIT_S
    while sum(isinstance(m, Commit) for m in messages) < commits:
        assert time.monotonic() < deadline, f"only got {messages}"
        messages += [decode_message(x.payload, relations) for x in stream.read(0.5)]
    return messages


def test_reads_begin_insert_commit(db: Database) -> None:
    slot = db.slot()
    db.insert(1, 2)
    with ReplicationStream(db.url.url, slot, PUBLICATION) as stream:
        messages = read_messages(stream, RelationCache(), 1)
        assert [type(m).__name__ for m in messages] == [
            "Begin",
            "Relation",
            "Insert",
            "Insert",
            "Commit",
        ]
        inserts = [m.new for m in messages if isinstance(m, Insert)]
        assert inserts == [{"id": 1, "v": "v1"}, {"id": 2, "v": "v2"}]
        assert stream.last_received_lsn == messages[-1].end_lsn
        assert db.slot_state(slot)[1] is not None
    db.wait_for(slot, lambda _lsn, pid: pid is None)
    assert stream.closed


def test_flush_position_is_only_what_the_caller_says(db: Database) -> None:
    slot = db.slot()
    created_lsn, _ = db.slot_state(slot)
    db.insert(1)
    db.insert(2)
    stream = ReplicationStream(db.url.url, slot, PUBLICATION, status_interval_s=0.2)
    try:
        messages = read_messages(stream, RelationCache(), 2)
        first_commit, second_commit = [m for m in messages if isinstance(m, Commit)]
        # periodic status updates go out while reading, but nothing was flushed yet
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            stream.read(0.1)
        assert stream.status_updates_sent > 0
        assert db.slot_state(slot)[0] == created_lsn
        stream.send_status(first_commit.end_lsn)
        db.wait_for(slot, lambda lsn, _pid: lsn == first_commit.end_lsn)
        assert stream.last_received_lsn >= second_commit.end_lsn
        stream.send_status(first_commit.commit_lsn)  # going back is ignored
        assert stream.flushed_lsn == first_commit.end_lsn
    finally:
        stream.close()
    db.wait_for(slot, lambda _lsn, pid: pid is None)
    assert db.slot_state(slot)[0] == first_commit.end_lsn
    # restarting resumes after the acknowledged transaction only
    with ReplicationStream(db.url.url, slot, PUBLICATION) as stream:
        messages = read_messages(stream, RelationCache(), 1)
        assert isinstance(messages[0], Begin)
        assert [m.new for m in messages if isinstance(m, Insert)] == [{"id": 2, "v": "v2"}]


def test_keepalives_are_answered_without_acknowledging(db: Database) -> None:
    slot = db.slot()
    created_lsn, _ = db.slot_state(slot)
    db.insert(1)
    # The server asks for a reply after half of wal_sender_timeout and drops a client that
    # stays silent for all of it; with periodic updates off, only keepalive replies remain.
    conninfo = db.url.url + "?options=-c%20wal_sender_timeout%3D1000"
    with ReplicationStream(conninfo, slot, PUBLICATION, status_interval_s=3600) as stream:
        relations = RelationCache()
        read_messages(stream, relations, 1)
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            assert stream.read(0.2) == []
        assert stream.status_updates_sent >= 2
        assert stream.server_wal_end > 0
        db.insert(2)
        assert [m.new for m in read_messages(stream, relations, 1) if isinstance(m, Insert)] == [
            {"id": 2, "v": "v2"}
        ]
        assert db.slot_state(slot)[0] == created_lsn


def test_missing_slot(db: Database) -> None:
    with pytest.raises(ReplicationError, match="'nope' does not exist.*pg_create_logical"):
        ReplicationStream(db.url.url, "nope", PUBLICATION)


def test_invalid_names_are_refused_before_connecting() -> None:
    with pytest.raises(ReplicationError, match="Invalid replication slot name"):
        ReplicationStream("postgresql://nowhere.invalid/x", "Bad-Name; DROP", PUBLICATION)
    with pytest.raises(ReplicationError, match="Invalid publication name"):
        ReplicationStream("postgresql://nowhere.invalid/x", "ok", "")


def test_slot_in_use_names_the_holder(db: Database) -> None:
    slot = db.slot()
    with ReplicationStream(db.url.url, slot, PUBLICATION):
        _lsn, pid = db.slot_state(slot)
        with pytest.raises(ReplicationError, match=f"already in use by PostgreSQL process {pid}"):
            ReplicationStream(db.url.url, slot, PUBLICATION)


def test_missing_publication(db: Database) -> None:
    slot = db.slot()
    with pytest.raises(ReplicationError, match="Publication 'other' does not exist"):
        ReplicationStream(db.url.url, slot, "other")


def test_publication_dropped_while_streaming(db: Database) -> None:
    slot = db.slot()
    with ReplicationStream(db.url.url, slot, PUBLICATION) as stream:
        db.conn.execute(f"DROP PUBLICATION {PUBLICATION}")
        db.insert(1)
        deadline = time.monotonic() + WAIT_S
        with pytest.raises(ReplicationError, match=f"Publication '{PUBLICATION}' does not exist"):
            while time.monotonic() < deadline:
                stream.read(0.2)


def test_wrong_plugin_slot(db: Database) -> None:
    name = f"s_{uuid.uuid4().hex[:12]}"
    db.conn.execute("SELECT pg_create_logical_replication_slot(%s, 'test_decoding')", (name,))
    db.slots.append(name)
    with pytest.raises(ReplicationError, match="pgoutput"):
        ReplicationStream(db.url.url, name, PUBLICATION)


def test_unreachable_server_error_hides_the_password() -> None:
    with pytest.raises(ReplicationError, match="Cannot open a replication connection") as info:
        ReplicationStream("postgresql://rr:s3cr3t-pw@127.0.0.1:1/x", "slot", PUBLICATION)
    assert "s3cr3t-pw" not in str(info.value)
