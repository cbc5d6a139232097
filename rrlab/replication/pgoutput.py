"""pgoutput (logical replication protocol v1) decoder: pure functions of message bytes.

:func:`decode_message` turns one XLogData payload into a message object. Tuples are
decoded into row dicts of the columns a :class:`RelationCache` selects, typed by the column
type OIDs (see :mod:`rrlab.replication.values`); the old tuple of an update can be skipped.
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import tzinfo
from typing import Any, NamedTuple

from psycopg.abc import Buffer

from rrlab.exceptions import ReplicationError
from rrlab.replication._tuples import load_tuple
from rrlab.replication._tuples import skip_tuple as _skip_tuple
from rrlab.replication.values import (
    TEXT_OID,
    TIMESTAMP_TZ,
    TIMESTAMPTZ_TZ,
    ValueLoader,
    column_kinds,
    column_loaders,
    conversion_error,
)

_U16 = struct.Struct(">H").unpack_from
_I32 = struct.Struct(">i").unpack_from
_U32 = struct.Struct(">I").unpack_from
_BEGIN = struct.Struct(">QqI").unpack_from
_COMMIT = struct.Struct(">BQQq").unpack_from
_ORIGIN_LSN = struct.Struct(">Q").unpack_from
_COLUMN_TAIL = struct.Struct(">Ii").unpack_from
_TRUNCATE_HEAD = struct.Struct(">IB").unpack_from
_MESSAGE_HEAD = struct.Struct(">BQ").unpack_from

_B = b"b"[0]
_NEW = b"N"[0]


class _UnchangedToast:
    """The marker for a TOASTed value that an update left unchanged (pgoutput ``u``)."""

    _instance: _UnchangedToast | None = None

    def __new__(cls) -> _UnchangedToast:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNCHANGED_TOAST"

    def __reduce__(self) -> str:
        return "UNCHANGED_TOAST"


UNCHANGED_TOAST: Any = _UnchangedToast()


class Column(NamedTuple):
    """One column of a Relation message."""

    name: str
    type_oid: int
    type_modifier: int
    is_key: bool


class TuplePlan(NamedTuple):
    """How the C decoder (``load_tuple`` in rrlab/replication/_tuples.c) makes a row dict
    of a TupleData: its fields in the order the C code reads them."""

    # one KIND_* (rrlab.replication.values) per column, 0 for columns not decoded
    kinds: bytes
    # the decoded columns' names
    names: tuple[str, ...]
    # names → None: the C code copies it (a presized dict) and sets the non-null values
    template: dict[str, None]
    # per decoded column, its psycopg loader's load: for text the C code does not read
    loaders: tuple[ValueLoader, ...]
    # the tzinfo psycopg gives UTC datetimes of timestamp and timestamptz columns
    timestamp_tz: tzinfo | None
    timestamptz_tz: tzinfo | None
    # the value of an unchanged TOAST column: UNCHANGED_TOAST
    unchanged: Any


@dataclass(slots=True, eq=False)
class Relation:
    """A table as described by its latest Relation message, with its decoding plan.

    Decoded tuples are dicts of the ``selected_names`` columns (in table order).
    """

    oid: int
    namespace: str
    name: str
    replica_identity: str
    columns: tuple[Column, ...]
    selected_names: tuple[str, ...] = ()
    plan: TuplePlan | None = field(default=None, repr=False)

    def __repr__(self) -> str:
        return f"Relation({self.oid}, {self.namespace}.{self.name}, {len(self.columns)} columns)"


class Begin(NamedTuple):
    final_lsn: int
    commit_time_us: int
    xid: int


class Commit(NamedTuple):
    flags: int
    commit_lsn: int
    end_lsn: int
    commit_time_us: int


class Origin(NamedTuple):
    commit_lsn: int
    name: str


class TypeMessage(NamedTuple):
    oid: int
    namespace: str
    name: str


Row = dict[str, Any]


class Insert(NamedTuple):
    relation: Relation
    new: Row


class Update(NamedTuple):
    """An update; ``old_kind`` is ``"K"`` (key columns) or ``"O"`` (whole row) when the
    message carries an old tuple, else None; ``old`` is None when it was not decoded."""

    relation: Relation
    new: Row
    old: Row | None
    old_kind: str | None


class Delete(NamedTuple):
    relation: Relation
    old: Row
    old_kind: str


class Truncate(NamedTuple):
    """``options``: bit 1 CASCADE, bit 2 RESTART IDENTITY."""

    options: int
    relations: tuple[Relation, ...]


class LogicalMessage(NamedTuple):
    transactional: bool
    lsn: int
    prefix: str
    content: bytes


Message = (
    Begin
    | Commit
    | Origin
    | TypeMessage
    | Relation
    | Insert
    | Update
    | Delete
    | Truncate
    | LogicalMessage
)


class RelationCache:
    """Relations by OID, and which of their columns to decode and how.

    ``columns``: names of the columns to keep (others are skipped without being
    converted); None keeps all. ``typed=False`` keeps every value as ``str``.
    A new Relation message for a known OID replaces the old entry.
    """

    def __init__(self, columns: Collection[str] | None = None, *, typed: bool = True) -> None:
        self.columns = frozenset(columns) if columns is not None else None
        self.typed = typed
        self._relations: dict[int, Relation] = {}

    def __getitem__(self, oid: int) -> Relation:
        try:
            return self._relations[oid]
        except KeyError:
            raise ReplicationError(
                f"pgoutput sent a change for relation OID {oid} before its Relation message; "
                "the stream is corrupt or was not read from its start."
            ) from None

    def __contains__(self, oid: int) -> bool:
        return oid in self._relations

    def __len__(self) -> int:
        return len(self._relations)

    def add(self, relation: Relation) -> Relation:
        """Compile the decoding plan of ``relation`` and cache it (replacing its OID's entry)."""
        wanted = [c for c in relation.columns if self.columns is None or c.name in self.columns]
        # interned: the row builders look these keys up by identity first (~4% of the replay)
        names = tuple(sys.intern(c.name) for c in wanted)
        oids = [c.type_oid for c in wanted] if self.typed else [TEXT_OID] * len(wanted)
        kind_of = dict(zip(names, column_kinds(oids), strict=True))
        relation.selected_names = names
        relation.plan = TuplePlan(
            kinds=bytes(kind_of.get(c.name, 0) for c in relation.columns),
            names=names,
            template=dict.fromkeys(names),
            loaders=column_loaders(oids),
            timestamp_tz=TIMESTAMP_TZ,
            timestamptz_tz=TIMESTAMPTZ_TZ,
            unchanged=UNCHANGED_TOAST,
        )
        self._relations[relation.oid] = relation
        return relation


def _read_string(data: bytes, pos: int) -> tuple[str, int]:
    """A NUL-terminated string at ``pos``; returns it and the position after the NUL.

    Messages with strings are rare (Relation, Type, Origin, Message): their decoders copy
    the payload to bytes once so that ``bytes.index`` can find the NULs.
    """
    end = data.index(0, pos)
    return data[pos:end].decode(), end + 1


def read_tuple(data: Buffer, pos: int, relation: Relation) -> tuple[Row, int]:
    """Decode the TupleData at ``pos`` into a dict of ``relation``'s selected columns, typed.

    Returns the row and the position after the tuple. Unselected columns are stepped
    over; unchanged TOAST values become :data:`UNCHANGED_TOAST`.
    """
    try:
        return load_tuple(data, pos, relation.plan)
    except ValueError as exc:
        raise _tuple_error(relation, *exc.args) from None


def skip_tuple(data: Buffer, pos: int) -> int:
    """The position after the TupleData at ``pos``, converting nothing."""
    try:
        return _skip_tuple(data, pos)
    except ValueError as exc:
        raise _tuple_error(None, *exc.args) from None


def _tuple_error(
    relation: Relation | None, code: str, detail: int, *value: Any
) -> ReplicationError:
    """The decoder's ValueError(code, detail, ...) worded for the user."""
    table = f"{relation.namespace}.{relation.name}" if relation else "a table"
    if relation is not None and code == "count":
        return _column_count_error(relation, detail)
    if relation is not None and code == "value":
        name = relation.selected_names[detail]
        column = next(c for c in relation.columns if c.name == name)
        text, exc = value
        return conversion_error(name, column.type_oid, text, exc)
    if code == "kind":
        return _value_kind_error(table, detail)
    return ReplicationError(f"A tuple of {table} is truncated (malformed message).")


def _column_count_error(relation: Relation, ncols: int) -> ReplicationError:
    return ReplicationError(
        f"A tuple of {relation.namespace}.{relation.name} has {ncols} columns but its "
        f"Relation message listed {len(relation.columns)}; the stream is corrupt."
    )


def _value_kind_error(table: str, kind: int) -> ReplicationError:
    if kind == _B:
        return ReplicationError(
            f"{table} arrived in binary format ('b'); rrlab "
            "decodes text values only: do not start replication with binary 'true'."
        )
    return ReplicationError(
        f"Unknown pgoutput value kind {bytes([kind])!r} in a tuple of {table}; "
        "the stream is corrupt."
    )


# -- message decoders: (payload, relations, decode_old) -> message ---------------------------


def _decode_begin(data: Buffer, relations: RelationCache, decode_old: bool) -> Begin:
    return Begin(*_BEGIN(data, 1))


def _decode_commit(data: Buffer, relations: RelationCache, decode_old: bool) -> Commit:
    return Commit(*_COMMIT(data, 1))


def _decode_origin(data: Buffer, relations: RelationCache, decode_old: bool) -> Origin:
    data = bytes(data)
    (lsn,) = _ORIGIN_LSN(data, 1)
    return Origin(lsn, _read_string(data, 9)[0])


def _decode_type(data: Buffer, relations: RelationCache, decode_old: bool) -> TypeMessage:
    data = bytes(data)
    (oid,) = _U32(data, 1)
    namespace, pos = _read_string(data, 5)
    return TypeMessage(oid, namespace, _read_string(data, pos)[0])


def _decode_relation(data: Buffer, relations: RelationCache, decode_old: bool) -> Relation:
    data = bytes(data)
    (oid,) = _U32(data, 1)
    namespace, pos = _read_string(data, 5)
    name, pos = _read_string(data, pos)
    replica_identity = chr(data[pos])
    (ncols,) = _U16(data, pos + 1)
    pos += 3
    columns = []
    for _ in range(ncols):
        flags = data[pos]
        column_name, pos = _read_string(data, pos + 1)
        type_oid, type_modifier = _COLUMN_TAIL(data, pos)
        pos += 8
        columns.append(Column(column_name, type_oid, type_modifier, bool(flags & 1)))
    return relations.add(Relation(oid, namespace, name, replica_identity, tuple(columns)))


def _decode_insert(data: Buffer, relations: RelationCache, decode_old: bool) -> Insert:
    relation = relations[_U32(data, 1)[0]]
    # data[5] is 'N'
    return Insert(relation, read_tuple(data, 6, relation)[0])


def _decode_update(data: Buffer, relations: RelationCache, decode_old: bool) -> Update:
    relation = relations[_U32(data, 1)[0]]
    marker = data[5]
    old = old_kind = None
    pos = 6
    if marker != _NEW:
        old_kind = chr(marker)
        if decode_old:
            old, pos = read_tuple(data, pos, relation)
        else:
            pos = skip_tuple(data, pos)
        pos += 1  # 'N'
    return Update(relation, read_tuple(data, pos, relation)[0], old, old_kind)


def _decode_delete(data: Buffer, relations: RelationCache, decode_old: bool) -> Delete:
    relation = relations[_U32(data, 1)[0]]
    return Delete(relation, read_tuple(data, 6, relation)[0], chr(data[5]))


def _decode_truncate(data: Buffer, relations: RelationCache, decode_old: bool) -> Truncate:
    count, options = _TRUNCATE_HEAD(data, 1)
    oids = struct.unpack_from(f">{count}I", data, 6)
    return Truncate(options, tuple(relations[oid] for oid in oids))


def _decode_message(data: Buffer, relations: RelationCache, decode_old: bool) -> LogicalMessage:
    data = bytes(data)
    flags, lsn = _MESSAGE_HEAD(data, 1)
    prefix, pos = _read_string(data, 10)
    (length,) = _I32(data, pos)
    content = bytes(data[pos + 4 : pos + 4 + length])
    return LogicalMessage(bool(flags & 1), lsn, prefix, content)


_DECODERS: dict[int, Callable[[Buffer, RelationCache, bool], Message]] = {
    ord("B"): _decode_begin,
    ord("C"): _decode_commit,
    ord("O"): _decode_origin,
    ord("Y"): _decode_type,
    ord("R"): _decode_relation,
    ord("I"): _decode_insert,
    ord("U"): _decode_update,
    ord("D"): _decode_delete,
    ord("T"): _decode_truncate,
    ord("M"): _decode_message,
}


def decode_message(data: Buffer, relations: RelationCache, *, decode_old: bool = True) -> Message:
    """Decode one pgoutput message (an XLogData payload).

    A Relation message is added to ``relations`` (replacing an entry with its OID).
    ``decode_old=False`` steps over the old tuple of an update without converting it
    (``Update.old`` is then None; ``old_kind`` still tells whether one was sent).
    """
    try:
        decoder = _DECODERS[data[0]]
    except KeyError:
        raise ReplicationError(
            f"Unknown pgoutput message type {bytes(data[:1])!r}: rrlab speaks protocol "
            "version 1 (proto_version '1')."
        ) from None
    except IndexError:
        raise ReplicationError("Empty pgoutput message.") from None
    try:
        return decoder(data, relations, decode_old)
    except (struct.error, IndexError, ValueError, UnicodeDecodeError) as exc:
        raise ReplicationError(
            f"Truncated or malformed pgoutput {chr(data[0])!r} message ({len(data)} bytes): {exc}"
        ) from None
