"""text[] and varchar[] values: the C tuple decoder reads PostgreSQL's canonical array output
itself and leaves every other text to psycopg's array loader, with identical results."""

from __future__ import annotations

import gc
import random
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from rrlab.replication.pgoutput import RelationCache, decode_message
from rrlab.replication.values import KIND_TEXT_ARRAY, column_kinds
from rrlab.urls import PostgresUrl
from tests.test_typed_decode import (
    OID,
    assert_typed_alike,
    changes,
    insert_message,
    refuse,
    relation_message,
    same,
    scratch_database,
    slot_payloads,
)

ARRAY_TYPES = ["text[]", "varchar[]"]

# psycopg's loader has its own reading of text array_out never writes: {a,,b} is two
# elements, {"a"b} is ['a"'], {a}{b} is ['b']; all of it must stay psycopg's.
EDGE_TEXTS = [
    b"{}",
    b"{a,b}",
    b"{NULL}",
    b"{null}",
    b"{Null}",
    b"{NULLx}",
    b'{"NULL"}',
    b'{"null"}',
    b'{""}',
    b'{"",""}',
    b'{"a b","c,d","{e}","f}","\\"","\\\\"}',
    b'{"a\\"b","c\\\\d"}',
    b'{"a\\bc"}',
    b'{"a\\\\"}',
    b"{\\\\}",
    b"{\\a}",
    b"{a\\,b}",
    b"{a,,b}",
    b"{,a}",
    b"{a,}",
    b'{"a",}',
    b"{,}",
    b"{ a , b }",
    b"{a b}",
    b"{\t}",
    b"{a\nb}",
    b"{{a,b},{c,d}}",
    b"{{}}",
    b"[1:2]={a,b}",
    b"[0:0]={a}",
    b"[1:1]=",
    b"{a",
    b"a}",
    b"{",
    b"}",
    b"",
    b"a",
    b"{a}x",
    b"{a}}",
    b"{}}",
    b"{a}{b}",
    b"{}{}",
    b'{"a"b}',
    b'{a"b"}',
    b'{"a\\"}',
    b'{"}',
    b'{"a",b}',
    b"{a;b}",
    b"{a\x00b}",
    b"{\xff}",
    b'{"\xff"}',
    b'{"a\\\xff"}',
    b"{\xed\xa0\x80}",  # a UTF-8-encoded surrogate
    '{é,😀,"日 本"}'.encode(),
]


def array_out(items: list[str | None]) -> bytes:
    """A one-dimension text array as PostgreSQL's array_out writes it."""

    def element(item: str | None) -> str:
        if item is None:
            return "NULL"
        if (
            item == ""
            or item.encode().lower() == b"null"
            or any(c in item for c in '{},"\\ \t\n\r\v\f')
        ):
            return '"' + item.replace("\\", "\\\\").replace('"', '\\"') + '"'
        return item

    return ("{" + ",".join(element(item) for item in items) + "}").encode()


PIECES = [
    "a",
    "NULL",
    "null",
    "",
    " ",
    "\t",
    "\n",
    ",",
    "{",
    "}",
    '"',
    "\\",
    "é",
    "😀",
    "[1:1]=",
    "x y",
]


def random_items(rng: random.Random) -> list[str | None]:
    items: list[str | None] = []
    for _ in range(rng.randrange(6)):
        if rng.random() < 0.15:
            items.append(None)
        else:
            items.append("".join(rng.choice(PIECES) for _ in range(rng.randrange(4))))
    return items


def mutated(text: bytes, rng: random.Random) -> bytes:
    """text with a byte removed, added or changed: mostly text array_out does not write."""
    at = rng.randrange(len(text) + 1)
    byte = bytes([rng.choice(b'{},"\\ aN\xff\xc3')])
    return rng.choice(
        [
            text[:at] + text[at + 1 :],
            text[:at] + byte + text[at:],
            text[:at] + byte + text[at + 1 :],
        ]
    )


@pytest.mark.parametrize("type_name", ARRAY_TYPES)
def test_edge_cases_load_as_psycopg_loads_them(type_name: str) -> None:
    assert_typed_alike(type_name, EDGE_TEXTS)


@pytest.mark.parametrize("type_name", ARRAY_TYPES)
def test_random_arrays_load_as_psycopg_loads_them(type_name: str) -> None:
    rng = random.Random(5)
    texts = []
    for _ in range(1_500):
        text = array_out(random_items(rng))
        texts.append(text if rng.random() < 0.5 else mutated(text, rng))
    assert_typed_alike(type_name, texts)


def decode_without_psycopg(type_name: str, texts: list[bytes]) -> list[Any]:
    """The values the C decoder gives texts, with psycopg's loaders replaced by refuse."""
    relations = RelationCache()
    relation = decode_message(relation_message([OID[type_name]] * len(texts)), relations)
    relation.plan = relation.plan._replace(loaders=(refuse,) * len(texts))
    return list(decode_message(insert_message(texts), relations).new.values())


@pytest.mark.parametrize("type_name", ARRAY_TYPES)
def test_canonical_arrays_are_typed_without_psycopg(type_name: str) -> None:
    assert column_kinds([OID[type_name]]) == [KIND_TEXT_ARRAY]
    rng = random.Random(9)
    arrays = [[], [None], ["NULL", "null", "", " a ", 'q"\\', "{x,y}", "é😀"]]
    arrays += [random_items(rng) for _ in range(500)]
    values = decode_without_psycopg(type_name, [array_out(items) for items in arrays])
    for items, value in zip(arrays, values, strict=True):
        assert same(value, items), (array_out(items), value)


ARRAY_COLUMNS = "id int PRIMARY KEY, tags text[], names varchar(12)[]"
# arrays array_out writes with decoration: psycopg's loader reads them
DECORATED = ["'[0:1]={a,b}'", "'{{a,b},{c,NULL}}'", "'[2:2]={\"x y\"}'"]


@pytest.fixture
def arrays_db(pg_url: PostgresUrl) -> Iterator[psycopg.Connection]:
    with scratch_database(
        pg_url,
        f"CREATE TABLE arrays ({ARRAY_COLUMNS})",
        "CREATE PUBLICATION arrays_pub FOR TABLE arrays",
    ) as conn:
        yield conn


def test_live_arrays_decode_as_written_and_as_psycopg_loads_them(
    arrays_db: psycopg.Connection,
) -> None:
    """Lists written by psycopg, read back through pgoutput: the canonical ones typed in C
    (never reaching psycopg), the decorated ones by psycopg, all as psycopg loads them."""
    conn = arrays_db
    conn.execute("SELECT pg_create_logical_replication_slot('arrays_slot', 'pgoutput')")
    rng = random.Random(17)
    written = [["NULL", "null", "", " a ", 'q"\\', "{x,y}", "é😀", None], [], None]
    written += [random_items(rng) for _ in range(200)]
    written = [None if items is None else [s and s[:12] for s in items] for items in written]
    with conn.cursor() as cursor:
        cursor.executemany(
            "INSERT INTO arrays VALUES (%s, %s, %s::varchar(12)[])",
            [(i, items, items) for i, items in enumerate(written)],
        )
    first = len(written)
    for i, literal in enumerate(DECORATED, start=first):
        conn.execute(f"INSERT INTO arrays VALUES ({i}, {literal}, {literal})")
    payloads = slot_payloads(conn, "arrays_slot", "arrays_pub")
    pairs = changes(payloads)
    assert len(pairs) == len(written) + len(DECORATED)
    for mine, theirs in pairs:
        assert same(mine, theirs), f"{mine!r} != psycopg's {theirs!r}"
    for items, (rows, _) in zip(written, pairs, strict=False):
        assert same(rows[0]["tags"], items) and same(rows[0]["names"], items)

    reached: list[bytes] = []

    def recording(load: Any) -> Any:
        return lambda text: reached.append(text) or load(text)

    relations = RelationCache()
    for payload in payloads:
        message = decode_message(payload, relations)
        if payload[:1] == b"R":
            id_loader, *array_loaders = message.plan.loaders
            loaders = (id_loader, *map(recording, array_loaders))
            message.plan = message.plan._replace(loaders=loaders)
    assert len(reached) == 2 * len(DECORATED)
    assert all(text[:1] == b"[" or text[:2] == b"{{" for text in reached), reached


def test_arrays_left_to_psycopg_leak_nothing() -> None:
    """The list begun in C for text that turns out not canonical is freed."""
    relations = RelationCache()
    decode_message(relation_message([OID["text[]"]]), relations)
    message = insert_message([b'{a,"b",NULL,,c}'])

    def lists() -> int:
        gc.collect()
        return sum(type(o) is list for o in gc.get_objects())

    decode_message(message, relations)
    before = lists()
    for _ in range(1_000):
        decode_message(message, relations)
    assert lists() - before < 100
