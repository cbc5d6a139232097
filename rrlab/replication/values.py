"""Conversion of pgoutput text values to Python values, by column type OID.

The table is a psycopg adapters map: psycopg's own (C-accelerated) text loaders keyed
by OID, with ``timestamp`` read as UTC whatever the process time zone. OIDs it does not
know (enums, domains, user types) load as ``str``. Values are in the walsender's
ISO date style, which :mod:`rrlab.replication.stream` sets for its session.
:func:`column_kinds` and :func:`column_loaders` plan the C tuple decoder
(``rrlab/replication/_tuples.c``), which must type every value as :func:`row_loader` does.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, tzinfo
from typing import Any

import orjson
import psycopg
from psycopg.abc import Buffer
from psycopg.adapt import AdaptersMap, Loader, Transformer
from psycopg.pq import Format
from psycopg.types.datetime import TimestampLoader

from rrlab.exceptions import ReplicationError
from rrlab.replication._tuples import (
    KIND_BOOL,
    KIND_FLOAT,
    KIND_INT,
    KIND_PYTHON,
    KIND_STR,
    KIND_TEXT_ARRAY,
    KIND_TIMESTAMP,
    KIND_TIMESTAMPTZ,
)
from rrlab.service._json_walk import orjson_reads_alike
from rrlab.service.json_values import ORJSON_FLOAT_INTS, ORJSON_MAX_DEPTH

TEXT_OID = 25
JSON_OID = 114
JSONB_OID = 3802
TIMESTAMP_OID = 1114
TIMESTAMP_ARRAY_OID = 1115
TIMESTAMPTZ_OID = 1184

# Built-in types whose text form the service meets, by OID. psycopg registers a loader
# for each (and for their arrays); this list documents and tests what rrlab relies on.
SUPPORTED_TYPES: dict[int, str] = {
    16: "bool",
    20: "int8",
    21: "int2",
    23: "int4",
    25: "text",
    19: "name",
    114: "json",
    700: "float4",
    701: "float8",
    1042: "bpchar",
    1043: "varchar",
    1082: "date",
    1114: "timestamp",
    1184: "timestamptz",
    1700: "numeric",
    3802: "jsonb",
    1009: "text[]",
    1000: "bool[]",
    1005: "int2[]",
    1007: "int4[]",
    1016: "int8[]",
    1015: "varchar[]",
    1022: "float8[]",
    1115: "timestamp[]",
    1185: "timestamptz[]",
    1231: "numeric[]",
}

RowLoader = Callable[[Sequence[Buffer | None]], tuple[Any, ...]]
ValueLoader = Callable[[bytes], Any]

# How the C tuple decoder types a column's text (the KIND_* it exports, imported above):
# str, int, bool, float, timestamps and text arrays in PostgreSQL's canonical output are
# read in C; other text of those kinds, and every value of KIND_PYTHON, goes to the
# column's psycopg loader.
_KIND_BY_OID = {
    16: KIND_BOOL,
    20: KIND_INT,
    21: KIND_INT,
    23: KIND_INT,
    700: KIND_FLOAT,
    701: KIND_FLOAT,
    TIMESTAMP_OID: KIND_TIMESTAMP,
    TIMESTAMPTZ_OID: KIND_TIMESTAMPTZ,
    1009: KIND_TEXT_ARRAY,
    1015: KIND_TEXT_ARRAY,
}
# The element type of the KIND_TEXT_ARRAY types: C reads their elements as str.
_ARRAY_ELEMENT_OID = {1009: TEXT_OID, 1015: 1043}


class _NaiveAsUtcTimestampLoader(TimestampLoader):
    """``timestamp`` (no time zone) as an aware UTC datetime; used without psycopg's C loader."""

    def load(self, data: Buffer) -> datetime:
        return super().load(data).replace(tzinfo=UTC)


def _utc_timestamp_loader() -> type[Loader]:
    """psycopg's C ``timestamptz`` loader reads an offset-less value as UTC, at C speed.

    The pure-Python one requires an offset, so fall back to a subclass then.
    """
    loader = psycopg.adapters.get_loader(TIMESTAMPTZ_OID, Format.TEXT)
    try:
        if loader is not None and loader(TIMESTAMPTZ_OID).load(b"2000-01-01 00:00:00") == datetime(
            2000, 1, 1, tzinfo=UTC
        ):
            return loader
    except psycopg.DataError:
        pass
    return _NaiveAsUtcTimestampLoader


class _JsonLoader(Loader):
    """``json``/``jsonb`` text parsed by orjson (~5× ``json.loads``, psycopg's default), with
    ``json.loads`` deciding every document orjson refuses (invalid UTF-8, lone surrogate
    escapes, numbers overflowing to infinity) or may read differently (integral floats of
    2**63 and beyond, deep nesting): values and errors stay ``json.loads``'s."""

    def load(self, data: Buffer) -> Any:
        try:
            value = orjson.loads(data)
        except orjson.JSONDecodeError:
            return json.loads(bytes(data))
        # orjson_reads_alike (C) looks for integral floats of abs >= ORJSON_FLOAT_INTS and
        # dicts/lists nested ORJSON_MAX_DEPTH levels deep (the document being level 0)
        if orjson_reads_alike(value, ORJSON_MAX_DEPTH, ORJSON_FLOAT_INTS):
            return value
        return json.loads(bytes(data))


def _build_adapters() -> AdaptersMap:
    adapters = AdaptersMap(psycopg.adapters)
    adapters.register_loader(TIMESTAMP_OID, _utc_timestamp_loader())
    adapters.register_loader(JSON_OID, _JsonLoader)
    adapters.register_loader(JSONB_OID, _JsonLoader)
    return adapters


ADAPTERS = _build_adapters()


def _utc_tzinfo(type_oid: int) -> tzinfo | None:
    """The tzinfo of the UTC datetimes the ``type_oid`` loader returns, for the C decoder to
    give its own; None when that loader does not read timestamps as UTC (psycopg then types
    every value of the column)."""
    midnight = load_value(type_oid, b"2000-01-01 00:00:00")
    if midnight != datetime(2000, 1, 1, tzinfo=UTC) or midnight.utcoffset():
        return None
    if type_oid == TIMESTAMPTZ_OID:
        shifted = load_value(type_oid, b"2000-01-01 00:00:00+01")
        if (
            shifted != datetime(1999, 12, 31, 23, tzinfo=UTC)
            or shifted.tzinfo is not midnight.tzinfo
        ):
            return None
    return midnight.tzinfo


def column_kinds(type_oids: Sequence[int]) -> list[int]:
    """The C decoder's KIND_* for columns of these types (text and unknown OIDs: str)."""
    text_loader = ADAPTERS.get_loader(TEXT_OID, Format.TEXT)
    kinds = []
    for oid in type_oids:
        kind = _KIND_BY_OID.get(oid, KIND_PYTHON)
        if kind == KIND_PYTHON and ADAPTERS.get_loader(oid, Format.TEXT) in (None, text_loader):
            kind = KIND_STR
        elif (
            (kind == KIND_TIMESTAMP and TIMESTAMP_TZ is None)
            or (kind == KIND_TIMESTAMPTZ and TIMESTAMPTZ_TZ is None)
            or (
                kind == KIND_TEXT_ARRAY
                and ADAPTERS.get_loader(_ARRAY_ELEMENT_OID[oid], Format.TEXT) is not text_loader
            )
        ):
            kind = KIND_PYTHON
        kinds.append(kind)
    return kinds


def column_loaders(type_oids: Sequence[int]) -> tuple[ValueLoader, ...]:
    """The psycopg loader of each column, as :func:`row_loader` would use it (its ``load``)."""
    transformer = Transformer(ADAPTERS)
    return tuple(transformer.get_loader(oid, Format.TEXT).load for oid in type_oids)


def row_loader(type_oids: Sequence[int], column_names: Sequence[str] = ()) -> RowLoader:
    """A function turning one row of text values (bytes-like or None) into typed values.

    ``column_names`` only serve error messages. A value the type's loader rejects
    raises :class:`ReplicationError` naming the column, type and value.
    """
    transformer = Transformer(ADAPTERS)
    transformer.set_loader_types(list(type_oids), Format.TEXT)
    load_sequence = transformer.load_sequence

    def load(values: Sequence[Buffer | None]) -> tuple[Any, ...]:
        try:
            return load_sequence(values)
        except Exception as exc:  # loaders raise psycopg.DataError, ValueError, JSONDecodeError
            raise _conversion_error(values, type_oids, column_names, exc) from None

    return load


def load_value(type_oid: int, text: Buffer | None) -> Any:
    """Convert one text value; convenient for tests and rare paths, slow for rows."""
    return row_loader([type_oid])([text])[0]


def _conversion_error(
    values: Sequence[Buffer | None],
    type_oids: Sequence[int],
    column_names: Sequence[str],
    exc: Exception,
) -> ReplicationError:
    # Find the culprit column by loading value by value (only on the error path).
    for index, (value, oid) in enumerate(zip(values, type_oids, strict=True)):
        transformer = Transformer(ADAPTERS)
        transformer.set_loader_types([oid], Format.TEXT)
        try:
            transformer.load_sequence([value])
        except Exception as column_exc:
            name = column_names[index] if index < len(column_names) else f"#{index}"
            return conversion_error(name, oid, value, column_exc)
    return ReplicationError(f"Cannot convert a replicated row: {exc}")


def conversion_error(
    name: str, type_oid: int, value: Buffer | None, exc: Exception
) -> ReplicationError:
    """The error for a column value its type's loader refused with ``exc``."""
    shown = bytes(value or b"")[:80].decode(errors="replace")
    type_name = SUPPORTED_TYPES.get(type_oid, f"OID {type_oid}")
    return ReplicationError(f"Cannot convert column {name!r} ({type_name}) value {shown!r}: {exc}")


TIMESTAMP_TZ = _utc_tzinfo(TIMESTAMP_OID)
TIMESTAMPTZ_TZ = _utc_tzinfo(TIMESTAMPTZ_OID)
