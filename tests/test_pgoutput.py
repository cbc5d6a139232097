"""The pgoutput decoder on messages captured from a real server (tests/data/capture_pgoutput.py)."""

from __future__ import annotations

import hashlib
import json
import struct
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from rrlab.exceptions import ReplicationError
from rrlab.replication.pgoutput import (
    UNCHANGED_TOAST,
    Begin,
    Commit,
    Delete,
    Insert,
    LogicalMessage,
    Origin,
    Relation,
    RelationCache,
    Truncate,
    TypeMessage,
    Update,
    decode_message,
    read_tuple,
    skip_tuple,
)

CAPTURE = json.loads((Path(__file__).parent / "data" / "pgoutput_capture.json").read_text())
PAYLOADS = [bytes.fromhex(m["data"]) for m in CAPTURE["messages"]]
BIG = "".join(hashlib.md5(str(i).encode()).hexdigest() for i in range(1, 301))


def decode_all(relations: RelationCache | None = None, **kwargs: bool) -> list:
    relations = relations if relations is not None else RelationCache()
    return [decode_message(p, relations, **kwargs) for p in PAYLOADS]


def transactions(messages: list) -> list[list]:
    """Messages grouped Begin..Commit (inclusive)."""
    groups: list[list] = []
    for message in messages:
        if isinstance(message, Begin):
            groups.append([])
        groups[-1].append(message)
    return groups


def named(messages: list) -> dict[str, list]:
    names = [entry["name"] for entry in CAPTURE["scenario"]] + ["origin"]
    groups = transactions(messages)
    assert len(groups) == len(names)
    return dict(zip(names, groups, strict=True))


def kinds(group: list) -> list[str]:
    return [type(m).__name__ for m in group]


def test_every_message_decodes_and_transactions_are_framed() -> None:
    messages = decode_all()
    assert len(messages) == len(PAYLOADS)
    for group in transactions(messages):
        begin, commit = group[0], group[-1]
        assert isinstance(begin, Begin) and isinstance(commit, Commit)
        assert begin.final_lsn == commit.commit_lsn < commit.end_lsn
        assert begin.commit_time_us == commit.commit_time_us
        # µs since 2000-01-01: the capture happened after 2024
        assert commit.commit_time_us > 24 * 365 * 86_400 * 1_000_000
    xids = [m["xid"] for m in CAPTURE["messages"]]
    assert [g[0].xid for g in transactions(messages)] == sorted(set(xids))


def test_insert_types_every_column() -> None:
    group = named(decode_all())["insert"]
    assert kinds(group) == ["Begin", "TypeMessage", "Relation", "Insert", "Insert", "Commit"]
    type_message, relation, first, second = group[1:5]
    assert type_message == TypeMessage(type_message.oid, "public", "Mood")
    assert (relation.namespace, relation.name, relation.replica_identity) == (
        "public",
        "items",
        "d",
    )
    assert [c.name for c in relation.columns if c.is_key] == ["id"]
    assert relation.columns[-2].type_oid == type_message.oid  # mood is the user enum
    row = first.new
    assert row == {
        "id": 1,
        "small": -32768,
        "num": 2147483647,
        "ratio": 1.5,
        "score": 0.1,
        "amount": Decimal("12345.678"),
        "flag": True,
        "title": "héllo wörld",
        "code": "varchar",
        "fixed": "ab  ",
        "label": "a_name",
        "created": datetime(2024, 3, 10, 6, 30, 0, 123000, tzinfo=UTC),
        "seen": datetime(2024, 3, 10, 6, 30, 0, 123456, tzinfo=UTC),
        "day": date(2024, 2, 29),
        "doc": {"b": [1, 2], "a": "x"},
        "meta": {"nested": {"k": [True, None, 1.5]}, "s": "é"},
        "tags": ["plain", "with space", 'quote"d', "back\\slash", "comma,brace{}", None, "NULL"]
        + ["", "ünïcode"],
        "counts": [1, None, 3],
        "mood": "HAPPY",
        "big": BIG,
    }
    assert second.new == {name: None for name in relation.selected_names} | {"id": 2}


def test_update_under_default_identity_marks_unchanged_toast() -> None:
    group = named(decode_all())["update_toast_unchanged"]
    assert kinds(group) == ["Begin", "Update", "Commit"]
    update = group[1]
    assert update.old is None and update.old_kind is None
    row = update.new
    assert row["big"] is UNCHANGED_TOAST
    assert (row["id"], row["num"], row["title"]) == (1, 2, "héllo wörld")


def test_update_of_the_key_carries_the_old_key() -> None:
    update = named(decode_all())["update_key_changed"][1]
    assert isinstance(update, Update) and update.old_kind == "K"
    assert update.old["id"] == 2
    assert update.new["id"] == 10


def test_replica_identity_full_sends_whole_old_rows() -> None:
    group = named(decode_all())["full_identity"]
    assert kinds(group) == [
        "Begin",
        "TypeMessage",
        "Relation",
        "Insert",
        "Update",
        "Delete",
        "Commit",
    ]
    relation, update, delete = group[2], group[4], group[5]
    assert relation.replica_identity == "f"
    assert all(c.is_key for c in relation.columns)
    assert update.old_kind == "O"
    assert update.old == {
        "id": "run_1",
        "status": "HAPPY",
        "note": "first",
        "updated": datetime(2024, 1, 1, tzinfo=UTC),
    }
    assert update.new["status"] == "SAD"
    assert delete.old_kind == "O"
    assert delete.old["note"] == "second"


def test_old_tuple_can_be_skipped() -> None:
    full = named(decode_all())["full_identity"][4]
    skipped = named(decode_all(decode_old=False))["full_identity"][4]
    assert skipped.old is None and skipped.old_kind == "O"
    assert skipped.new == full.new


def test_delete_under_default_identity_has_only_the_key() -> None:
    delete = named(decode_all())["delete_by_key"][1]
    assert isinstance(delete, Delete) and delete.old_kind == "K"
    row = delete.old
    assert row["id"] == 10
    assert {v for k, v in row.items() if k != "id"} == {None}


def test_column_added_mid_stream_replaces_the_relation() -> None:
    relations = RelationCache()
    cached = []
    for payload in PAYLOADS:
        message = decode_message(payload, relations)
        if isinstance(message, Insert):
            cached.append((message, relations[message.relation.oid]))
    by_name = named(decode_all())
    before = by_name["insert"][2]
    group = by_name["column_added"]
    assert kinds(group) == ["Begin", "TypeMessage", "Relation", "Insert", "Commit"]
    after, insert = group[2], group[3]
    assert after.oid == before.oid and after is not before
    assert [c.name for c in after.columns] == [c.name for c in before.columns] + ["extra"]
    assert insert.relation is after
    row = insert.new
    assert (row["id"], row["title"], row["extra"]) == (3, "after alter", "added")
    # the cache always holds the relation the change was decoded with
    assert all(message.relation is current for message, current in cached)
    assert len({len(current.columns) for _m, current in cached if current.name == "items"}) == 2


def test_truncate_message_and_origin() -> None:
    by_name = named(decode_all())
    truncate = by_name["truncate"][-2]
    assert isinstance(truncate, Truncate)
    assert truncate.options == 0
    assert [r.name for r in truncate.relations] == ["items_full"]
    origin = by_name["origin"][1]
    assert isinstance(origin, Origin) and origin.name == "capture_origin"
    assert isinstance(by_name["origin"][2], Insert)


def test_logical_message() -> None:
    message = by_kind(decode_all(), LogicalMessage)[0]
    assert message.transactional is True
    assert (message.prefix, message.content) == ("rrlab", b"hello")
    assert message.lsn > 0


def by_kind(messages: list, kind: type) -> list:
    return [m for m in messages if isinstance(m, kind)]


def test_subset_of_columns_in_table_order() -> None:
    relations = RelationCache(["title", "id", "tags", "not_a_column"])
    insert = by_kind(decode_all(relations), Insert)[0]
    assert insert.relation.selected_names == ("id", "title", "tags")
    assert list(insert.new) == ["id", "title", "tags"]
    assert (insert.new["id"], insert.new["title"]) == (1, "héllo wörld")
    assert insert.new["tags"][2] == 'quote"d'


def test_untyped_decoding_keeps_text() -> None:
    insert = by_kind(decode_all(RelationCache(["id", "created", "counts"], typed=False)), Insert)[0]
    assert insert.new == {"id": "1", "created": "2024-03-10 06:30:00.123", "counts": "{1,NULL,3}"}


def test_payloads_as_memoryviews_decode_the_same() -> None:
    relations = RelationCache()
    as_bytes = decode_all()
    as_views = [decode_message(memoryview(b"xx" + p)[2:], relations) for p in PAYLOADS]
    assert [getattr(m, "new", None) for m in as_views] == [
        getattr(m, "new", None) for m in as_bytes
    ]


def test_skip_tuple_ends_where_read_tuple_ends() -> None:
    relations = RelationCache(["id"])
    for payload in PAYLOADS:
        message = decode_message(payload, relations)
        if isinstance(message, Insert):
            assert skip_tuple(payload, 6) == len(payload)
            assert read_tuple(payload, 6, message.relation)[1] == len(payload)


# -- bad input -------------------------------------------------------------------------------


def one_column_relation(relations: RelationCache) -> Relation:
    payload = b"R" + struct.pack(">I", 77) + b"s\x00t\x00d" + struct.pack(">H", 1)
    payload += b"\x01c\x00" + struct.pack(">Ii", 25, -1)
    return decode_message(payload, relations)


def test_change_before_its_relation_is_an_error() -> None:
    insert = next(p for p in PAYLOADS if p[:1] == b"I")
    with pytest.raises(ReplicationError, match="before its Relation message"):
        decode_message(insert, RelationCache())


def test_unknown_message_type_is_an_error() -> None:
    with pytest.raises(ReplicationError, match="protocol version 1"):
        decode_message(b"S\x00\x00", RelationCache())
    with pytest.raises(ReplicationError, match="Empty"):
        decode_message(b"", RelationCache())


def test_truncated_message_is_an_error() -> None:
    relations = RelationCache()
    payloads = iter(PAYLOADS)
    for payload in payloads:
        if payload[:1] == b"I":
            break
        decode_message(payload, relations)
    with pytest.raises(ReplicationError, match="malformed"):
        decode_message(payload[:-3], relations)


def test_binary_values_and_column_count_mismatch_are_errors() -> None:
    relations = RelationCache()
    relation = one_column_relation(relations)
    assert relation.columns[0].is_key and relation.name == "t"
    assert decode_message(b"I" + struct.pack(">I", 77) + b"N\x00\x01t\x00\x00\x00\x01x", relations)
    binary = b"I" + struct.pack(">I", 77) + b"N\x00\x01b\x00\x00\x00\x01x"
    with pytest.raises(ReplicationError, match="binary"):
        decode_message(binary, relations)
    two = b"I" + struct.pack(">I", 77) + b"N\x00\x02nn"
    with pytest.raises(ReplicationError, match="has 2 columns"):
        decode_message(two, relations)


_UPDATE_HEAD = b"U" + struct.pack(">I", 77)
_ONE_NEW = b"N\x00\x01t\x00\x00\x00\x01x"


def test_skipped_old_tuple_leaves_the_new_one() -> None:
    relations = RelationCache()
    one_column_relation(relations)
    update = decode_message(_UPDATE_HEAD + b"O\x00\x01n" + _ONE_NEW, relations, decode_old=False)
    assert update.new == {"c": "x"} and update.old is None and update.old_kind == "O"


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (_UPDATE_HEAD + b"N\x00\x01t\x00\x00\x00\x09x", "truncated"),  # length past the end
        (_UPDATE_HEAD + b"N\x00\x01t\xff\xff\xff\xffx", "truncated"),  # negative length
        (_UPDATE_HEAD + b"O\x00\x02n", "truncated"),  # skipped old tuple cut short
        (_UPDATE_HEAD + b"O\x00\x01?" + _ONE_NEW, "Unknown pgoutput value kind"),
    ],
    ids=["length-past-end", "negative-length", "old-cut-short", "old-unknown-kind"],
)
def test_malformed_tuples_are_errors(payload: bytes, message: str) -> None:
    relations = RelationCache()
    one_column_relation(relations)
    with pytest.raises(ReplicationError, match=message):
        decode_message(payload, relations, decode_old=False)
