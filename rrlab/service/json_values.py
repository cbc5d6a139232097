"""The JSON columns (output, payload, error) as the upstream JavaScript service builds them.

Representation handed to the sink: a ``dict`` per JSON cell. ``{"data": value}`` carries a
parsed value made of ``dict``/``list``/``str``/``int``/``float``/``bool``/``None``; an empty
``dict`` is the upstream ``{data: undefined}``, which JSON.stringify sends as ``{}``;
``{"data": None}`` is sent as ``{"data":null}``. Numbers follow JavaScript: integral floats
up to 2**53 become ``int`` and ``1e400`` becomes ``None`` (JS sends Infinity as null); integers
are kept exact (JS would round beyond 2**53, the sink's recovery stringifies out-of-range
ones). Strings may hold lone surrogates (a JSON escape such as ``\\uD800`` that the upstream
check misses), so the sink must escape them (``json.dumps`` does) or replace them.
"""

from __future__ import annotations

import copy
import json
import math
import re
import struct
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import orjson

from rrlab.service._json_walk import StdlibOnly, js_numbers

APPLICATION_JSON = "application/json"
SUPER_JSON = "application/super+json"

# ECMAScript WhiteSpace + LineTerminator: what JS's \s matches and String.prototype.trim strips.
JS_WHITESPACE = (
    "\t\n\v\f\r \u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009"
    "\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
)
_MAX_SAFE_INTEGER = 2**53
_ASTRAL = re.compile("[\U00010000-\U0010ffff]")
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
# The upstream scanner looks only for lowercase escapes; a high one must be followed by a
# low one and a low one preceded by a high one.
_UNPAIRED_ESCAPE = re.compile(
    r"\\ud[89ab][0-9a-f]{2}(?!\\ud[c-f][0-9a-f]{2})|(?<!\\ud[89ab][0-9a-f]{2})\\ud[c-f][0-9a-f]{2}"
)


class JsonConversionError(ValueError):
    """The text cannot become a value the way the upstream converts it (it then sends ``{}``)."""


def json_column(text: str | None, content_type: str) -> dict[str, Any]:
    """``output``/``payload`` cell: ``{"data": parsed}`` or ``{}`` (see module docstring)."""
    if not text or (content_type != APPLICATION_JSON and content_type != SUPER_JSON):
        return {}
    if has_unpaired_surrogate_escape(text):
        return {}
    try:
        value = parse_json(text) if content_type == APPLICATION_JSON else superjson_plain(text)
    except (ValueError, RecursionError):
        return {}
    return {"data": value}


def error_column(error: Any) -> dict[str, Any]:
    """``error`` cell: the jsonb value as-is under ``data`` (null gives ``{"data": None}``)."""
    return {"data": error}


def has_unpaired_surrogate_escape(text: str) -> bool:
    """The upstream ``detectBadJsonStrings``: an unpaired lowercase ``\\ud8..``-``\\udf..``."""
    # A one-character membership test is a memchr; most documents have no backslash at all.
    return "\\" in text and _UNPAIRED_ESCAPE.search(text) is not None


def _reject_constant(name: str) -> Any:
    raise JsonConversionError(f"{name} is not valid JSON")


def _js_float(literal: str) -> int | float | None:
    number = float(literal)
    if number.is_integer() and -_MAX_SAFE_INTEGER <= number <= _MAX_SAFE_INTEGER:
        return int(number)
    return None if math.isinf(number) else number


_JSON_DECODER = json.JSONDecoder(parse_float=_js_float, parse_constant=_reject_constant)
# Where orjson may read a document differently from the stdlib (also used by the decoder's
# json/jsonb loader): integer literals beyond 64 bits come back as integral floats (the
# stdlib keeps them exact), and deeper documents are left to the stdlib, whose RecursionError
# decides them as before.
ORJSON_FLOAT_INTS = 2.0**63
ORJSON_MAX_DEPTH = 200


def parse_json(text: str) -> Any:
    """JSON.parse: NaN/Infinity literals rejected, numbers as JavaScript serializes them.

    orjson (~4× the stdlib) parses first; what it refuses (lone surrogate escapes, numbers
    that overflow to infinity, NaN, bad JSON) and values it may read differently (integral
    floats of 2**63 and beyond, deep nesting) are decoded by the stdlib decoder, so that
    the result, or the error, is the stdlib's.
    """
    try:
        # js_numbers (C) rewrites, in place, each float of the document's dicts and lists
        # (and a float document) as _js_float does: integral ones within ±2**53 become int.
        # It raises StdlibOnly for an integral float of abs >= ORJSON_FLOAT_INTS (perhaps
        # an integer literal, which the stdlib keeps exact) and for a dict or list nested
        # ORJSON_MAX_DEPTH levels deep (the document being level 0).
        return js_numbers(
            orjson.loads(text), ORJSON_MAX_DEPTH, _MAX_SAFE_INTEGER, ORJSON_FLOAT_INTS
        )
    except (orjson.JSONDecodeError, StdlibOnly):
        return _JSON_DECODER.decode(text)


# --- JavaScript value semantics shared by the transform and the fingerprint ----------------


def js_truthy(value: Any) -> bool:
    """JavaScript truthiness of a JSON value (empty arrays and objects are truthy)."""
    if isinstance(value, (list, dict)):
        return True
    return bool(value) and value == value  # NaN is falsy


def js_number_string(number: float) -> str:
    """Number.prototype.toString() for a finite or infinite double."""
    if number != number:
        return "NaN"
    if math.isinf(number):
        return "Infinity" if number > 0 else "-Infinity"
    if number == 0:
        return "0"
    if number < 0:
        return "-" + js_number_string(-number)
    sign, digit_tuple, exponent = Decimal(repr(number)).as_tuple()
    digits = "".join(map(str, digit_tuple)).rstrip("0") or "0"
    k = len(digits)
    n = exponent + len(digit_tuple)  # value = 0.digits × 10**n
    if k <= n <= 21:
        return digits + "0" * (n - k)
    if 0 < n <= 21:
        return f"{digits[:n]}.{digits[n:]}"
    if -6 < n <= 0:
        return "0." + "0" * -n + digits
    mantissa = digits if k == 1 else f"{digits[0]}.{digits[1:]}"
    return f"{mantissa}e{'+' if n >= 1 else '-'}{abs(n - 1)}"


def js_string(value: Any) -> str:
    """String(value) for a JSON value."""
    if isinstance(value, str):
        return value
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return (
            str(value)
            if -_MAX_SAFE_INTEGER <= value <= _MAX_SAFE_INTEGER
            else js_number_string(float(value))
        )
    if isinstance(value, float):
        return js_number_string(value)
    if isinstance(value, list):
        return ",".join("" if item is None else js_string(item) for item in value)
    return "[object Object]"


def _split_astral(match: re.Match[str]) -> str:
    code = ord(match.group()) - 0x10000
    return chr(0xD800 + (code >> 10)) + chr(0xDC00 + (code & 0x3FF))


def utf16_code_units(text: str) -> str:
    """``text`` with every astral character as its surrogate pair, so that Python's per-code
    point comparisons, lengths and regex quantifiers behave like JavaScript's per-UTF-16-unit."""
    if text.isascii():
        return text
    return _ASTRAL.sub(_split_astral, text)


def node_utf8(text: str) -> bytes:
    """UTF-8 bytes as Node writes a JS string: surrogate pairs joined, lone ones as U+FFFD."""
    try:
        return text.encode()
    except UnicodeEncodeError:
        joined = text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "surrogatepass")
        return _LONE_SURROGATE.sub("\ufffd", joined).encode()


# --- superjson -----------------------------------------------------------------------------
#
# superjson.parse(text) then superjson.serialize(result).json, fused: each value annotation
# of ``meta.values`` is applied as "deserialize, then serialize again" on the plain ``json``
# part, children before parents as superjson's traversal does. Handled: undefined, bigint,
# Date (ISO-8601 strings and numbers; V8's non-ISO date parsing is not replicated and counts
# as an invalid date), Error (name and message; ``cause`` is dropped), regexp (flags
# validated and put in canonical order; the body is kept), set and map (SameValueZero
# de-duplication of plain primitive members; annotated members are treated as distinct
# objects), number (NaN, ±Infinity, -0), URL (kept as written), the Buffer custom type,
# typed arrays, and referentialEqualities except the root's own (a cycle, refused). Unknown
# classes, symbols and custom types fail as superjson does. Keys ``constructor`` and
# ``prototype`` make serialize throw; ``__proto__`` keys vanish in superjson's copy.


class _Undefined:
    """JavaScript ``undefined`` while a superjson path is being resolved."""


UNDEFINED = _Undefined()
_FORBIDDEN_PATH_KEYS = frozenset({"__proto__", "prototype", "constructor"})
_FORBIDDEN_OBJECT_KEYS = frozenset({"prototype", "constructor"})
_JS_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_JS_RADIX_INT = re.compile(r"0([xX][0-9a-fA-F]+|[oO][0-7]+|[bB][01]+)")
_RADIX = {"x": 16, "o": 8, "b": 2}
_REGEXP_FLAG_ORDER = "dgimsuvy"
_ISO_DATE = re.compile(
    r"(?P<year>\d{4}|[+-]\d{6})(?:-(?P<month>\d{2})(?:-(?P<day>\d{2}))?)?"
    r"(?:T(?P<hour>\d{2}):(?P<minute>\d{2})(?::(?P<second>\d{2})(?:\.(?P<fraction>\d+))?)?"
    r"(?P<zone>Z|[+-]\d{2}:\d{2})?)?"
)
_MAX_TIME_MS = 8_640_000_000_000_000
_MS_PER_DAY = 86_400_000


def _int_or_negative_zero(literal: str) -> int | float:
    return -0.0 if literal == "-0" else int(literal)


# -0 survives JSON.parse in JavaScript and superjson serializes it as the string "-0"; the
# slower decoder that keeps it is needed only when the text holds "-0" at all.
_SUPERJSON_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
_SUPERJSON_NEGATIVE_ZERO_DECODER = json.JSONDecoder(
    parse_int=_int_or_negative_zero, parse_constant=_reject_constant
)


def superjson_plain(text: str) -> Any:
    """``superjson.serialize(superjson.parse(text)).json`` for a super+json document."""
    envelope = json.loads(text, parse_int=_int_or_negative_zero, parse_constant=_reject_constant)
    if envelope is None:
        raise JsonConversionError("superjson cannot destructure a null document")
    if not isinstance(envelope, dict) or "json" not in envelope:
        return None  # superjson deserializes json=undefined, which serializes as null
    holder = [envelope["json"]]
    meta = envelope.get("meta")
    if isinstance(meta, dict):
        version = meta.get("v", 0)
        legacy_paths = not (isinstance(version, (int, float)) and version >= 1)
        if js_truthy(meta.get("values")):
            _apply_annotation_tree(holder, meta["values"], [], legacy_paths)
        if js_truthy(meta.get("referentialEqualities")):
            _apply_referential_equalities(holder, meta["referentialEqualities"], legacy_paths)
    return _serialize_plain(holder[0])


def _parse_path(key: str, legacy_paths: bool) -> list[str]:
    segments: list[str] = []
    segment = ""
    index = 0
    while index < len(key):
        char = key[index]
        following = key[index + 1 : index + 2]
        if char == "\\" and following == "\\" and not legacy_paths:
            segment += "\\"
            index += 2
            continue
        if char == "\\" and following != "." and not legacy_paths:
            raise JsonConversionError(f"invalid superjson path {key!r}")
        if char == "\\" and following == ".":
            segment += "."
            index += 2
            continue
        if char == ".":
            segments.append(segment)
            segment = ""
        else:
            segment += char
        index += 1
    segments.append(segment)
    return segments


def _apply_annotation_tree(holder: list, tree: Any, origin: list[str], legacy: bool) -> None:
    if not js_truthy(tree):
        return
    if isinstance(tree, dict):
        for key, subtree in tree.items():
            _apply_annotation_tree(holder, subtree, origin + _parse_path(key, legacy), legacy)
        return
    if not isinstance(tree, list):
        raise JsonConversionError("malformed superjson annotation tree")
    node_type = tree[0] if tree else UNDEFINED
    children = tree[1] if len(tree) > 1 else None
    annotated_children: set[tuple[str, ...]] = set()
    if isinstance(children, dict):
        for key, child in children.items():
            path = _parse_path(key, legacy)
            annotated_children.add(tuple(path))
            _apply_annotation_tree(holder, child, origin + path, legacy)
    _set_deep(holder, origin, lambda value: _round_trip(value, node_type, annotated_children))


def _set_deep(holder: list, path: list[str], mapper: Callable[[Any], Any]) -> None:
    if _FORBIDDEN_PATH_KEYS.intersection(path):
        raise JsonConversionError("superjson path names a prototype property")
    if not path:
        holder[0] = mapper(holder[0])
        return
    parent = holder[0]
    for key in path[:-1]:
        if isinstance(parent, list):
            index = _array_index(key)
            parent = parent[index] if index is not None and index < len(parent) else UNDEFINED
        elif isinstance(parent, dict):
            parent = parent.get(key, UNDEFINED)
    last = path[-1]
    if isinstance(parent, list):
        index = _array_index(last)
        if index is not None:
            parent.extend([None] * (index + 1 - len(parent)))  # holes serialize as null
            parent[index] = mapper(parent[index])
    elif isinstance(parent, dict):
        parent[last] = mapper(parent.get(last, UNDEFINED))


def _get_deep(root: Any, path: list[str]) -> Any:
    if _FORBIDDEN_PATH_KEYS.intersection(path):
        raise JsonConversionError("superjson path names a prototype property")
    value = root
    for key in path:
        if value is UNDEFINED or value is None:
            raise JsonConversionError("superjson path leads through undefined")
        if isinstance(value, list):
            index = _array_index(key)
            value = value[index] if index is not None and index < len(value) else UNDEFINED
        else:
            value = value.get(key, UNDEFINED) if isinstance(value, dict) else UNDEFINED
    return value


def _array_index(key: str) -> int | None:
    return int(key) if key.isdigit() and key.isascii() else None


def _apply_referential_equalities(holder: list, annotations: Any, legacy: bool) -> None:
    if isinstance(annotations, list):
        raise JsonConversionError("superjson document references its own root (a cycle)")
    if not isinstance(annotations, dict):
        raise JsonConversionError("malformed superjson referentialEqualities")
    for source, identical_paths in annotations.items():
        source_path = _parse_path(source, legacy)
        value = _get_deep(holder[0], source_path)
        for identical in identical_paths:
            path = _parse_path(identical, legacy)
            if path[: len(source_path)] == source_path:
                raise JsonConversionError("superjson document references its own ancestor")
            _set_deep(holder, path, lambda _old, value=value: copy.deepcopy(value))


def _serialize_plain(value: Any) -> Any:
    """The plain-value part of superjson.serialize: JS numbers, forbidden keys, undefined."""
    if isinstance(value, dict):
        if _FORBIDDEN_OBJECT_KEYS.intersection(value):
            raise JsonConversionError("superjson refuses a constructor/prototype key")
        return {key: _serialize_plain(item) for key, item in value.items() if key != "__proto__"}
    if isinstance(value, list):
        return [_serialize_plain(item) for item in value]
    if isinstance(value, float):
        return _number_json(value)
    return None if value is UNDEFINED else value


def _number_json(number: float) -> Any:
    """A JS number as superjson's json part holds it (special values become strings)."""
    if number != number:
        return "NaN"
    if math.isinf(number):
        return "Infinity" if number > 0 else "-Infinity"
    if number == 0 and math.copysign(1.0, number) < 0:
        return "-0"
    if number.is_integer() and abs(number) <= _MAX_SAFE_INTEGER:
        return int(number)
    return number


def _js_to_number(value: Any) -> float:
    """Number(value) for a JSON value."""
    if value is UNDEFINED:
        return math.nan
    if value is None:
        return 0.0
    if isinstance(value, (bool, int, float)):
        return float(value)
    if isinstance(value, dict):
        return math.nan
    text = js_string(value).strip(JS_WHITESPACE)
    if not text:
        return 0.0
    if text in ("Infinity", "+Infinity", "-Infinity"):
        return -math.inf if text[0] == "-" else math.inf
    if _JS_NUMBER.fullmatch(text):
        return float(text)
    radix = _JS_RADIX_INT.fullmatch(text)
    if radix:
        return float(int(radix.group(1)[1:], _RADIX[radix.group(1)[0].lower()]))
    return math.nan


def _js_to_bigint(value: Any) -> int:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not value.is_integer():
            raise JsonConversionError(f"BigInt cannot convert {value}")
        return int(value)
    if isinstance(value, (str, list)):
        text = js_string(value).strip(JS_WHITESPACE)
        if not text:
            return 0
        if re.fullmatch(r"[+-]?\d+", text):
            return int(text)
        radix = _JS_RADIX_INT.fullmatch(text)
        if radix:
            return int(radix.group(1)[1:], _RADIX[radix.group(1)[0].lower()])
    raise JsonConversionError(f"BigInt cannot convert {value!r}")


def _days_from_civil(year: int, month: int, day: int) -> int:
    year -= month <= 2
    era = year // 400
    year_of_era = year - era * 400
    day_of_year = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    day_of_era = year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year
    return era * 146097 + day_of_era - 719468


def _civil_from_days(days: int) -> tuple[int, int, int]:
    days += 719468
    era = days // 146097
    day_of_era = days - era * 146097
    year_of_era = (
        day_of_era - day_of_era // 1460 + day_of_era // 36524 - day_of_era // 146096
    ) // 365
    day_of_year = day_of_era - (365 * year_of_era + year_of_era // 4 - year_of_era // 100)
    month_index = (5 * day_of_year + 2) // 153
    day = day_of_year - (153 * month_index + 2) // 5 + 1
    month = month_index + (3 if month_index < 10 else -9)
    return year_of_era + era * 400 + (month <= 2), month, day


def _days_in_month(year: int, month: int) -> int:
    if month == 12:
        return 31
    return _days_from_civil(year, month + 1, 1) - _days_from_civil(year, month, 1)


def _parse_iso_date(text: str) -> float:
    """Date.parse for the ECMAScript date-time string format (local time taken as UTC)."""
    match = _ISO_DATE.fullmatch(text)
    if not match or match["year"] == "-000000":
        return math.nan
    year = int(match["year"])
    month = int(match["month"] or 1)
    day = int(match["day"] or 1)
    hour, minute = int(match["hour"] or 0), int(match["minute"] or 0)
    second = int(match["second"] or 0)
    millisecond = int((match["fraction"] or "0")[:3].ljust(3, "0"))
    if not (1 <= month <= 12 and 1 <= day <= _days_in_month(year, month)):
        return math.nan
    if (
        minute > 59
        or second > 59
        or hour > 24
        or (hour == 24 and (minute or second or millisecond))
    ):
        return math.nan
    offset_minutes = 0
    zone = match["zone"]
    if zone and zone != "Z":
        offset_hours, offset_rest = int(zone[1:3]), int(zone[4:6])
        if offset_hours > 23 or offset_rest > 59:
            return math.nan
        offset_minutes = (offset_hours * 60 + offset_rest) * (1 if zone[0] == "+" else -1)
    time = (
        _days_from_civil(year, month, day) * _MS_PER_DAY
        + ((hour * 60 + minute - offset_minutes) * 60 + second) * 1000
        + millisecond
    )
    return float(time) if abs(time) <= _MAX_TIME_MS else math.nan


def _date_iso(value: Any) -> str:
    """new Date(value).toISOString()."""
    if isinstance(value, (str, list)):
        time = _parse_iso_date(js_string(value))
    else:
        time = _js_to_number(value)
    if time != time or abs(time) > _MAX_TIME_MS:
        raise JsonConversionError("RangeError: Invalid time value")
    milliseconds = int(time)  # ToIntegerOrInfinity truncates
    days, rest = divmod(milliseconds, _MS_PER_DAY)
    year, month, day = _civil_from_days(days)
    seconds, millisecond = divmod(rest, 1000)
    minutes, second = divmod(seconds, 60)
    hour, minute = divmod(minutes, 60)
    year_text = f"{year:04d}" if 0 <= year <= 9999 else f"{'-' if year < 0 else '+'}{abs(year):06d}"
    return (
        f"{year_text}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:{second:02d}.{millisecond:03d}Z"
    )


def _error_plain(value: Any) -> dict[str, Any]:
    if value is None or value is UNDEFINED:
        raise JsonConversionError("TypeError: cannot read properties of null (Error)")
    fields = value if isinstance(value, dict) else {}
    message = fields.get("message", UNDEFINED)
    return {
        "name": fields.get("name"),
        "message": "" if message is UNDEFINED else js_string(message),
    }


def _regexp_string(value: Any) -> str:
    if not isinstance(value, str):
        raise JsonConversionError("TypeError: regex.slice is not a function")
    slash = value.rfind("/")
    body = value[1:slash]
    flags = value[slash + 1 :] if slash >= 0 else value
    if any(flag not in _REGEXP_FLAG_ORDER for flag in flags) or len(set(flags)) != len(flags):
        raise JsonConversionError(f"SyntaxError: invalid regular expression flags {flags!r}")
    if "u" in flags and "v" in flags:
        raise JsonConversionError("SyntaxError: regular expression flags u and v together")
    ordered = "".join(flag for flag in _REGEXP_FLAG_ORDER if flag in flags)
    return f"/{body or '(?:)'}/{ordered}"


def _same_value_zero_key(value: Any, path: tuple[str, ...], annotated: set[tuple[str, ...]]) -> Any:
    if path in annotated or isinstance(value, (list, dict)):
        return ("object", path)  # an object: only equal to itself
    if value is UNDEFINED:
        return ("undefined",)
    return (type(value) is bool, type(value) is str, value)


def _iterable_members(value: Any, kind: str) -> list[Any]:
    if value is None or value is UNDEFINED:
        return []
    if isinstance(value, list):
        return value
    if isinstance(value, str) and kind == "set":
        return list(value)
    raise JsonConversionError(f"TypeError: {kind} source is not iterable")


def _set_values(value: Any, annotated: set[tuple[str, ...]]) -> list[Any]:
    members: dict[Any, Any] = {}
    for index, member in enumerate(_iterable_members(value, "set")):
        members.setdefault(_same_value_zero_key(member, (str(index),), annotated), member)
    return list(members.values())


def _map_entries(value: Any, annotated: set[tuple[str, ...]]) -> list[list[Any]]:
    entries: dict[Any, list[Any]] = {}
    for index, entry in enumerate(_iterable_members(value, "map")):
        if isinstance(entry, list):
            key = entry[0] if entry else UNDEFINED
            item = entry[1] if len(entry) > 1 else UNDEFINED
        elif isinstance(entry, dict):
            key, item = entry.get("0", UNDEFINED), entry.get("1", UNDEFINED)
        else:
            raise JsonConversionError("TypeError: iterator value is not an entry object")
        key_id = _same_value_zero_key(key, (str(index), "0"), annotated)
        if key_id in entries:
            entries[key_id][1] = item
        else:
            entries[key_id] = [key, item]
    return [[key, None if item is UNDEFINED else item] for key, item in entries.values()]


def _to_integer_bits(value: Any, bits: int, signed: bool) -> int:
    number = _js_to_number(value)
    if number != number or math.isinf(number):
        return 0
    wrapped = int(number) % (1 << bits)
    return wrapped - (1 << bits) if signed and wrapped >= 1 << (bits - 1) else wrapped


def _to_uint8_clamped(value: Any) -> int:
    number = _js_to_number(value)
    if number != number:
        return 0
    return int(round(min(max(number, 0.0), 255.0)))  # round-half-even, as the spec says


def _to_float32(value: Any) -> Any:
    number = _js_to_number(value)
    if number != number or math.isinf(number):
        return number
    try:
        return struct.unpack("f", struct.pack("f", number))[0]
    except OverflowError:
        return math.copysign(math.inf, number)


def _to_bigint_bits(value: Any, bits: int, signed: bool) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        raise JsonConversionError("TypeError: cannot convert a number to a BigInt")
    wrapped = _js_to_bigint(value) % (1 << bits)
    return str(wrapped - (1 << bits) if signed and wrapped >= 1 << (bits - 1) else wrapped)


_TYPED_ARRAYS: dict[str, Callable[[Any], Any]] = {
    "Int8Array": lambda v: _to_integer_bits(v, 8, True),
    "Uint8Array": lambda v: _to_integer_bits(v, 8, False),
    "Uint8ClampedArray": _to_uint8_clamped,
    "Int16Array": lambda v: _to_integer_bits(v, 16, True),
    "Uint16Array": lambda v: _to_integer_bits(v, 16, False),
    "Int32Array": lambda v: _to_integer_bits(v, 32, True),
    "Uint32Array": lambda v: _to_integer_bits(v, 32, False),
    "Float32Array": _to_float32,
    "Float64Array": _js_to_number,
    "BigInt64Array": lambda v: _to_bigint_bits(v, 64, True),
    "BigUint64Array": lambda v: _to_bigint_bits(v, 64, False),
}


def _number_annotation(value: Any) -> Any:
    return _number_json(_js_to_number(value))


def _round_trip(value: Any, annotation: Any, annotated: set[tuple[str, ...]]) -> Any:
    """One annotated value, deserialized and serialized again (its json form)."""
    if isinstance(annotation, str):
        if annotation == "undefined":
            return None
        if annotation == "bigint":
            return str(_js_to_bigint(value))
        if annotation == "Date":
            return _date_iso(value)
        if annotation == "Error":
            return _error_plain(value)
        if annotation == "regexp":
            return _regexp_string(value)
        if annotation == "set":
            return _set_values(value, annotated)
        if annotation == "map":
            return _map_entries(value, annotated)
        if annotation == "number":
            return _number_annotation(value)
        if annotation == "URL":
            return js_string(value)
        raise JsonConversionError(f"Unknown transformation: {annotation}")
    if isinstance(annotation, list) and len(annotation) >= 2:
        kind, name = annotation[0], annotation[1]
        if kind == "custom" and name == "Buffer":
            if isinstance(value, str):
                return list(node_utf8(value))
            if isinstance(value, list):
                return [_to_integer_bits(byte, 8, False) for byte in value]
            raise JsonConversionError("Buffer.from cannot read this value")
        if kind == "typed-array" and name in _TYPED_ARRAYS:
            if not isinstance(value, list):
                raise JsonConversionError("typed array source is not an array")
            element = _TYPED_ARRAYS[name]
            return [element(item) for item in value]
        raise JsonConversionError(f"superjson cannot deserialize unregistered {kind} {name!r}")
    raise JsonConversionError(f"Unknown transformation: {annotation!r}")
