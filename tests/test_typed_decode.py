"""The C tuple decoder (load_tuple) types every value exactly as psycopg's loaders do.

The reference is :func:`rrlab.replication.values.row_loader` (psycopg's Transformer) on the
raw text, read here by a Python TupleData walker: same values, same types, same float bits,
same tzinfo objects, and the same errors for text psycopg refuses.
"""

from __future__ import annotations

import json
import math
import random
import struct
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest

from rrlab.config import load_config
from rrlab.exceptions import ReplicationError
from rrlab.replication.pgoutput import (
    UNCHANGED_TOAST,
    Delete,
    Insert,
    Relation,
    RelationCache,
    Update,
    decode_message,
)
from rrlab.replication.values import SUPPORTED_TYPES, TIMESTAMPTZ_TZ, column_kinds, row_loader
from rrlab.service.consumer import Consumer
from rrlab.service.sinks import MockSink
from rrlab.urls import PostgresUrl

OID = {name: oid for oid, name in SUPPORTED_TYPES.items()}
ENUM_OID = 16385  # an OID psycopg does not know: loads as str
RELATION_OID = 4242


# -- pgoutput messages and their raw text -----------------------------------------------------


def relation_message(type_oids: list[int]) -> bytes:
    payload = b"R" + struct.pack(">I", RELATION_OID) + b"public\x00t\x00d"
    payload += struct.pack(">H", len(type_oids))
    for i, oid in enumerate(type_oids):
        payload += b"\x00" + f"c{i}".encode() + b"\x00" + struct.pack(">Ii", oid, -1)
    return payload


def insert_message(texts: list[bytes | None]) -> bytes:
    payload = b"I" + struct.pack(">I", RELATION_OID) + b"N" + struct.pack(">H", len(texts))
    for text in texts:
        payload += b"n" if text is None else b"t" + struct.pack(">i", len(text)) + text
    return payload


def raw_texts(data: bytes, pos: int) -> tuple[list[bytes | None], list[int], int]:
    """The text of every column of the TupleData at ``pos`` (None for null and unchanged
    TOAST), the indexes of the unchanged ones, and the tuple's end."""
    (ncols,) = struct.unpack_from(">H", data, pos)
    pos += 2
    texts: list[bytes | None] = []
    unchanged = []
    for i in range(ncols):
        if data[pos] == ord("t"):
            (length,) = struct.unpack_from(">i", data, pos + 1)
            texts.append(data[pos + 5 : pos + 5 + length])
            pos += 5 + length
        else:
            unchanged += [i] if data[pos] == ord("u") else []
            texts.append(None)
            pos += 1
    return texts, unchanged, pos


def outcome(load: Any) -> Any:
    """What ``load()`` returns, or the message of the ReplicationError it raises."""
    try:
        return load()
    except ReplicationError as exc:
        return f"ReplicationError: {exc}"


def same(a: Any, b: Any) -> bool:
    """Equal, of the same exact types all the way down: floats bit for bit (NaN included),
    datetimes with the very same tzinfo object."""
    if type(a) is not type(b):
        return False
    if type(a) is float:
        return struct.pack("<d", a) == struct.pack("<d", b) or (math.isnan(a) and math.isnan(b))
    if type(a) is datetime:
        # psycopg gives its UTC tzinfo to each value, and a new timezone to the odd one
        # it cannot express in UTC (an offset moving it before year 1)
        zones_alike = a.tzinfo is b.tzinfo or (
            TIMESTAMPTZ_TZ not in (a.tzinfo, b.tzinfo) and type(a.tzinfo) is type(b.tzinfo)
        )
        return a == b and zones_alike and a.utcoffset() == b.utcoffset()
    if type(a) is Decimal:
        return str(a) == str(b)  # NaN too, and the digits written
    if type(a) is list:
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if type(a) is dict:
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    return a == b


def decode_and_reference(type_oids: list[int], rows: list[list[bytes | None]]) -> list:
    """(C decoder's outcome, psycopg's outcome) for each row."""
    relations = RelationCache()
    decode_message(relation_message(type_oids), relations)
    names = [f"c{i}" for i in range(len(type_oids))]
    load = row_loader(type_oids, names)
    pairs = []
    for texts in rows:
        mine = outcome(lambda texts=texts: decode_message(insert_message(texts), relations).new)
        theirs = outcome(lambda texts=texts: dict(zip(names, load(texts), strict=True)))
        pairs.append((mine, theirs))
    return pairs


def assert_typed_alike(type_name: str | int, texts: list[bytes]) -> None:
    oid = OID[type_name] if isinstance(type_name, str) else type_name
    pairs = decode_and_reference([oid], [[t] for t in texts])
    for text, (mine, theirs) in zip(texts, pairs, strict=True):
        assert same(mine, theirs), f"{type_name} {text!r}: {mine!r} != psycopg's {theirs!r}"


# -- edge cases per kind -----------------------------------------------------------------------

STR_TEXTS = [
    b"",
    b"abc",
    "héllo wörld".encode(),
    "😀 astral 𝄞".encode(),
    b"a\x00b",
    b"\xff",  # invalid UTF-8: psycopg's error
    b"\xed\xa0\x80",  # an encoded surrogate
    b"\xc0\x80",  # overlong
    b"ab\xc3",  # cut short
    b" padded  ",
]

INT_TEXTS = [
    b"0",
    b"-0",
    b"7",
    b"-32768",
    b"2147483647",
    str(2**63 - 1).encode(),
    str(-(2**63)).encode(),
    str(2**63).encode(),  # beyond int64: psycopg makes a bigger int
    str(-(2**63) - 1).encode(),
    b"99999999999999999999",
    b"18446744073709551616",
    b"0000000000000000000001",
    b"+5",
    b" 5",
    b"5 ",
    b"1_0",
    b"007",
    b"",
    b"-",
    b"1.5",
    b"1e3",
    "٣".encode(),
]

BOOL_TEXTS = [b"t", b"f", b"", b"true", b"false", b"T", b"x", b"tt", b"f "]

FLOAT_TEXTS = [
    b"0",
    b"-0",
    b"1.5",
    b"0.1",
    b"-2.5e-05",
    b"1e+100",
    b"1e308",
    b"1.7976931348623157e+308",
    b"1e309",  # overflow: psycopg's error
    b"-1e309",
    b"4.9e-324",
    b"2.4e-324",  # rounds to 0
    b"2.5e-324",
    b"2.2250738585072014e-308",
    b"1e-400",
    b"NaN",
    b"-NaN",
    b"nan",
    b"Infinity",
    b"-Infinity",
    b"inf",
    b"infinity",
    b"+1",
    b" 1",
    b"1 ",
    b"1.5x",
    b"1_0",
    b"0x10",
    b".5",
    b"5.",
    b"1e",
    b"1e+",
    b"1E5",
    b"",
    b"1" * 70,
    b"0." + b"3" * 80,
]

TIMESTAMP_TEXTS = [
    b"2024-03-10 06:30:00",
    b"2024-03-10 06:30:00.1",
    b"2024-03-10 06:30:00.12",
    b"2024-03-10 06:30:00.123",
    b"2024-03-10 06:30:00.1234",
    b"2024-03-10 06:30:00.12345",
    b"2024-03-10 06:30:00.123456",
    b"2024-03-10 06:30:00.1234567",
    b"2024-03-10 06:30:00.",
    b"0001-01-01 00:00:00",
    b"9999-12-31 23:59:59.999999",
    b"2024-02-29 12:00:00",
    b"2023-02-29 12:00:00",
    b"2100-02-29 12:00:00",
    b"2000-02-29 12:00:00",
    b"2024-04-31 12:00:00",
    b"2024-13-01 00:00:00",
    b"2024-01-01 24:00:00",
    b"2024-01-01 23:60:00",
    b"2024-01-01 23:59:60",
    b"0000-01-01 00:00:00",
    b"infinity",
    b"-infinity",
    b"2024-01-01 00:00:00 BC",
    b"10000-01-01 00:00:00",
    b"2024-01-01T00:00:00",
    b"2024-01-01 00:00",
    b"2024-1-01 00:00:00",
    b" 2024-01-01 00:00:00",
    b"2024-01-01 00:00:00 ",
    b"",
]

OFFSET_TEXTS = [
    b"2024-03-10 06:30:00+00",
    b"2024-03-10 06:30:00+05:30",
    b"2024-03-10 06:30:00-00:30:15",
    b"2024-03-10 06:30:00.5-04",
    b"2024-03-10 01:00:00+05:30",  # the day before in UTC
    b"2024-03-01 00:10:00+01",  # back over a leap day
    b"2023-03-01 00:10:00+01",
    b"2100-03-01 00:10:00+01",
    b"2000-02-28 23:50:00-01",
    b"2024-12-31 23:30:00-01",  # into the next year
    b"2024-01-01 00:00:00+14",
    b"2024-01-01 00:00:00-12",
    b"0001-01-01 00:00:00+01",  # before year 1 in UTC
    b"0001-01-01 00:00:00-01",
    b"9999-12-31 23:59:59-01",  # after year 9999 in UTC
    b"9999-12-31 23:59:59+01",
    b"2024-01-01 00:00:00+24",
    b"2024-01-01 00:00:00+05:60",
    b"2024-01-01 00:00:00+5",
    b"2024-01-01 00:00:00+05:3",
    b"2024-01-01 00:00:00+05:30:15:00",
    b"2024-01-01 00:00:00Z",
    b"2024-01-01 00:00:00 +05",
    b"2024-01-01 00:00:00.123456789+05",
    b"infinity",
    b"2024-01-01 00:00:00+05 BC",
]


@pytest.mark.parametrize("type_name", ["text", "varchar", "name", "bpchar", ENUM_OID])
def test_str_kinds(type_name: str | int) -> None:
    assert_typed_alike(type_name, STR_TEXTS)


@pytest.mark.parametrize("type_name", ["int2", "int4", "int8"])
def test_int_kinds(type_name: str) -> None:
    assert_typed_alike(type_name, INT_TEXTS)


def test_bool() -> None:
    assert_typed_alike("bool", BOOL_TEXTS)


@pytest.mark.parametrize("type_name", ["float4", "float8"])
def test_float_kinds(type_name: str) -> None:
    assert_typed_alike(type_name, FLOAT_TEXTS)


@pytest.mark.parametrize("type_name", ["timestamp", "timestamptz"])
def test_timestamps(type_name: str) -> None:
    assert_typed_alike(type_name, TIMESTAMP_TEXTS + OFFSET_TEXTS)


@pytest.mark.parametrize("type_name", ["jsonb", "json", "numeric", "date", "bool[]", "int4[]"])
def test_other_types_are_psycopgs(type_name: str) -> None:
    texts = [b'{"a": [1, 2.5, null]}', b"[1e400]", b"12.50", b"NaN", b"2024-02-29", b"{a,NULL}"]
    texts += [b"{1,2}", b"", b"\xff", b"{not json"]
    assert_typed_alike(type_name, texts)


# -- randomized ------------------------------------------------------------------------------


def random_int(rng: random.Random) -> bytes:
    bits = rng.choice([3, 15, 31, 53, 63, 64, 70])
    value = rng.getrandbits(bits) * rng.choice([1, -1])
    return str(value).encode()


def random_float(rng: random.Random) -> bytes:
    """A double of random bits, written as repr or PostgreSQL (NaN, Infinity, -0) write it."""
    value = struct.unpack("<d", rng.getrandbits(64).to_bytes(8, "little"))[0]
    if rng.random() < 0.3:
        value = rng.uniform(-1e6, 1e6)
    if math.isnan(value):
        return b"NaN"
    if math.isinf(value):
        return b"Infinity" if value > 0 else b"-Infinity"
    text = repr(value)
    return (text[:-2] if text.endswith(".0") else text).encode()


def random_timestamp(rng: random.Random, offset: bool) -> bytes:
    """PostgreSQL's ISO output: 0-6 fraction digits (trailing zeros trimmed), an offset of
    hours, minutes and seconds."""
    moment = datetime(1, 1, 1) + timedelta(seconds=rng.randrange(315537897600))
    text = moment.strftime("%Y-%m-%d %H:%M:%S").rjust(19, "0")
    digits = rng.randrange(7)
    if digits:
        text += "." + str(rng.randrange(1, 10**digits)).rjust(digits, "0").rstrip("0")
    if offset:
        seconds = rng.choice([0, 3600 * rng.randrange(16), rng.randrange(16 * 3600)])
        hours, rest = divmod(seconds, 3600)
        text += f"{rng.choice('+-')}{hours:02d}"
        if rest:
            text += f":{rest // 60:02d}" + (f":{rest % 60:02d}" if rest % 60 else "")
    return text.encode()


def random_text(rng: random.Random) -> bytes:
    if rng.random() < 0.1:
        return rng.randbytes(rng.randrange(8))
    alphabet = [(0x20, 0x7E), (0xA0, 0x17F), (0x4E00, 0x4FFF), (0x1F600, 0x1F64F), (1, 0xD7FF)]
    chars = []
    for _ in range(rng.randrange(12)):
        low, high = rng.choice(alphabet)
        chars.append(chr(rng.randint(low, high)))
    return "".join(chars).encode()


@pytest.mark.parametrize("seed", range(3))
def test_random_rows_of_every_kind(seed: int) -> None:
    rng = random.Random(seed)
    columns = [
        ("text", random_text),
        (ENUM_OID, random_text),
        ("int2", random_int),
        ("int8", random_int),
        ("bool", lambda rng: rng.choice([b"t", b"f"])),
        ("float4", random_float),
        ("float8", random_float),
        ("timestamp", lambda rng: random_timestamp(rng, False)),
        ("timestamptz", lambda rng: random_timestamp(rng, True)),
        (
            "jsonb",
            lambda rng: json.dumps({"k": random_text(rng).decode(errors="replace")}).encode(),
        ),
    ]
    oids = [OID[name] if isinstance(name, str) else name for name, _ in columns]
    rows = [[None if rng.random() < 0.1 else make(rng) for _, make in columns] for _ in range(400)]
    for texts, (mine, theirs) in zip(rows, decode_and_reference(oids, rows), strict=True):
        assert same(mine, theirs), f"{texts!r}: {mine!r} != psycopg's {theirs!r}"


# -- what the C code types itself ----------------------------------------------------------


def refuse(text: bytes) -> None:
    raise AssertionError(f"{text!r} reached psycopg")


CANONICAL = [
    ("text", "héllo 😀".encode(), "héllo 😀"),
    (ENUM_OID, b"HAPPY", "HAPPY"),
    ("int8", str(-(2**63)).encode(), -(2**63)),
    ("int4", b"-0", 0),
    ("bool", b"f", False),
    ("float8", b"-0", -0.0),
    ("float8", b"4.9e-324", 5e-324),
    ("float4", b"NaN", math.nan),
    ("float8", b"-Infinity", -math.inf),
    ("timestamp", b"0001-01-01 00:00:00.5", datetime(1, 1, 1, 0, 0, 0, 500000, UTC)),
    ("timestamptz", b"2024-12-31 23:30:00-01:00:15", datetime(2025, 1, 1, 0, 30, 15, tzinfo=UTC)),
]


def test_canonical_text_is_typed_without_psycopg() -> None:
    oids = [OID[name] if isinstance(name, str) else name for name, _, _ in CANONICAL]
    relations = RelationCache()
    relation = decode_message(relation_message(oids), relations)
    relation.plan = relation.plan._replace(loaders=(refuse,) * len(oids))
    row = decode_message(insert_message([text for _, text, _ in CANONICAL]), relations).new
    expected = {f"c{i}": value for i, (_, _, value) in enumerate(CANONICAL)}
    assert all(same(row[name], value) for name, value in expected.items()), row
    assert column_kinds(oids) == [1, 1, 2, 2, 3, 4, 4, 4, 4, 5, 6]


def test_unchanged_toast_and_nulls() -> None:
    relations = RelationCache()
    decode_message(relation_message([OID["int4"], OID["text"], OID["jsonb"]]), relations)
    update = b"U" + struct.pack(">I", RELATION_OID) + b"N\x00\x03t\x00\x00\x00\x012nu"
    message = decode_message(update, relations)
    assert isinstance(message, Update)
    assert message.new == {"c0": 2, "c1": None, "c2": UNCHANGED_TOAST}


class RecordingAssembler:
    def __init__(self) -> None:
        self.changes: list[tuple[str, dict[str, Any]]] = []

    def change(self, kind: str, run: dict[str, Any]) -> None:
        self.changes.append((kind, run))


def test_consumer_takes_unchanged_toast_values_from_the_old_row() -> None:
    """Under REPLICA IDENTITY FULL the old tuple carries what the new one marks 'u'."""
    consumer = Consumer(
        load_config(), "postgresql://u@localhost/db", MockSink(0), report=lambda body: None
    )
    consumer.relations = RelationCache()
    consumer.assembler = recorder = RecordingAssembler()  # type: ignore[assignment]
    consumer._handle(memoryview(relation_message([OID["int4"], OID["text"], OID["jsonb"]])))
    head = b"U" + struct.pack(">I", RELATION_OID)
    old = insert_message([b"1", b"big text", b'{"big": [1]}'])[6:]
    new = b"\x00\x03t\x00\x00\x00\x012uu"
    consumer._handle(memoryview(head + b"O" + old + b"N" + new))
    consumer._handle(memoryview(head + b"N" + new))  # no old row: the marker stays
    assert recorder.changes == [
        ("update", {"c0": 2, "c1": "big text", "c2": {"big": [1]}}),
        ("update", {"c0": 2, "c1": UNCHANGED_TOAST, "c2": UNCHANGED_TOAST}),
    ]


def test_a_value_psycopg_refuses_names_its_column() -> None:
    relations = RelationCache()
    decode_message(relation_message([OID["int4"], OID["timestamp"], OID["int8"]]), relations)
    with pytest.raises(ReplicationError) as raised:
        decode_message(insert_message([b"1", b"infinity", b"x"]), relations)
    assert str(raised.value) == (
        "Cannot convert column 'c1' (timestamp) value 'infinity': "
        "timestamp too large (after year 10K): 'infinity'"
    )


# -- real pgoutput ---------------------------------------------------------------------------

CAPTURE = json.loads((Path(__file__).parent / "data" / "pgoutput_capture.json").read_text())


def rows_of(message: Insert | Update | Delete) -> list[dict[str, Any]]:
    if isinstance(message, Insert):
        return [message.new]
    if isinstance(message, Delete):
        return [message.old]
    return [message.new] if message.old is None else [message.old, message.new]


def reference_rows(payload: bytes, relation: Relation) -> list[dict[str, Any]]:
    """psycopg's rows of a change: its old tuple, if any, then its new one."""
    names = relation.selected_names
    load = row_loader([c.type_oid for c in relation.columns], names)
    pos, rows = 6, []
    while True:
        texts, unchanged, pos = raw_texts(payload, pos)
        row = dict(zip(names, load(texts), strict=True))
        rows.append(row | {names[i]: UNCHANGED_TOAST for i in unchanged})
        if pos == len(payload):
            return rows
        pos += 1  # 'N' after an old tuple


def changes(payloads: list[bytes]) -> list[tuple[Any, Any]]:
    """(decoder's outcome, psycopg's outcome) for every change in ``payloads``: its rows, or
    the error of its first value that does not load."""
    relations = RelationCache()
    pairs = []
    for payload in payloads:
        if payload[:1] in (b"I", b"U", b"D"):
            relation = relations[struct.unpack_from(">I", payload, 1)[0]]
            mine = outcome(lambda p=payload: rows_of(decode_message(p, relations)))
            theirs = outcome(lambda p=payload, r=relation: reference_rows(p, r))
            pairs.append((mine, theirs))
        else:
            decode_message(payload, relations)
    return pairs


def test_captured_pgoutput_decodes_as_psycopg_loads_it() -> None:
    pairs = changes([bytes.fromhex(m["data"]) for m in CAPTURE["messages"]])
    assert len(pairs) >= 10 and all(isinstance(mine, list) for mine, _ in pairs)
    for mine, theirs in pairs:
        assert same(mine, theirs), f"{mine!r} != psycopg's {theirs!r}"


LIVE_COLUMNS = """
    id int PRIMARY KEY, t text, v varchar(20), n name, b bpchar(4), mood mood,
    i2 int2, i4 int4, i8 int8, flag bool, f4 float4, f8 float8,
    ts timestamp(3), ts6 timestamp, tz timestamptz, doc jsonb, tags text[], amount numeric
"""
LIVE_ROWS = """
    (1, 'héllo 😀', 'v', 'a_name', 'ab', 'HAPPY', -32768, 2147483647, -9223372036854775808,
     true, 'NaN', '-0', '2024-03-10 06:30:00.123', '0001-01-01 00:00:00.000001',
     '1900-01-01 00:00:00+00', '{"a": [1.5]}', '{x,NULL}', 1.10),
    (2, '', '', '', '', 'SAD', 32767, -2147483648, 9223372036854775807,
     false, '1.17549435e-38', '4.9e-324', '9999-12-31 23:59:59.999', '2024-02-29 12:00:00.5',
     '2024-12-31 23:59:59.5+00', '[]', '{}', 'NaN'),
    (3, NULL, NULL, NULL, NULL, NULL, 0, 0, 0, NULL, '-Infinity', '1e308',
     '2000-01-01', NULL, '0001-01-01 00:00:00+00', 'null', NULL, NULL),
    (4, 'x', 'x', 'x', 'x', 'HAPPY', 1, 1, 1, true, '3.4028235e+38', 'Infinity',
     'infinity', '-infinity', '2000-01-01 00:00:00 BC', '{}', '{}', 0),
    (5, 'x', 'x', 'x', 'x', 'HAPPY', 1, 1, 1, true, 1, 1,
     '2000-01-01 00:00:00 BC', '10000-01-01', '10000-01-01 00:00:00+00', '{}', '{}', 0)
"""


@contextmanager
def scratch_database(pg_url: PostgresUrl, *setup: str) -> Iterator[psycopg.Connection]:
    """An autocommit connection to a new database after its ``setup`` statements; the
    database and its replication slots are dropped afterwards."""
    name = f"decode_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_url.url, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    conn = psycopg.connect(pg_url.with_dbname(name).url, autocommit=True)
    try:
        for statement in setup:
            conn.execute(statement)
        yield conn
    finally:
        conn.execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
            "WHERE database = current_database()"
        )
        conn.close()
        with psycopg.connect(pg_url.url, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE {name} WITH (FORCE)")


def slot_payloads(conn: psycopg.Connection, slot: str, publication: str) -> list[bytes]:
    """The pgoutput messages (protocol 1) waiting in ``slot``, consumed."""
    return [
        bytes(data)
        for (data,) in conn.execute(
            "SELECT data FROM pg_logical_slot_get_binary_changes(%s, NULL, NULL, "
            "'proto_version', '1', 'publication_names', %s)",
            (slot, publication),
        )
    ]


@pytest.fixture
def decoding_db(pg_url: PostgresUrl) -> Iterator[psycopg.Connection]:
    with scratch_database(
        pg_url,
        "CREATE TYPE mood AS ENUM ('HAPPY', 'SAD')",
        f"CREATE TABLE typed ({LIVE_COLUMNS})",
        "ALTER TABLE typed REPLICA IDENTITY FULL",
        "CREATE PUBLICATION typed_pub FOR TABLE typed",
    ) as conn:
        yield conn


@pytest.mark.parametrize("zone", ["UTC", "Asia/Kolkata", "America/St_Johns", "Europe/Amsterdam"])
def test_live_pgoutput_decodes_as_psycopg_loads_it(
    decoding_db: psycopg.Connection, zone: str
) -> None:
    """Values as a real server writes them, timestamptz in the session's zone (Amsterdam's
    1900 offset has seconds: +00:19:32), including ones psycopg refuses (BC, infinity)."""
    conn = decoding_db
    conn.execute("SELECT pg_create_logical_replication_slot('typed_slot', 'pgoutput')")
    conn.execute(f"INSERT INTO typed VALUES {LIVE_ROWS}")
    conn.execute("UPDATE typed SET i4 = i4 / 2, tz = tz + interval '1 day' WHERE id < 4")
    conn.execute("DELETE FROM typed WHERE id = 2")
    conn.execute(f"SET TimeZone = '{zone}'")
    conn.execute("SET DateStyle = 'ISO'")
    payloads = slot_payloads(conn, "typed_slot", "typed_pub")
    pairs = changes(payloads)
    assert len(pairs) == 5 + 3 + 1
    for mine, theirs in pairs:
        assert same(mine, theirs), f"{mine!r} != psycopg's {theirs!r}"
    first = pairs[0][0][0]
    assert (first["tz"], first["mood"]) == (datetime(1900, 1, 1, tzinfo=UTC), "HAPPY")
    assert "Cannot convert column 'ts' (timestamp) value 'infinity'" in pairs[3][0]
