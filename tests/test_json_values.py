"""output/payload/error cells: JSON.parse and superjson semantics, the upstream surrogate check."""

from __future__ import annotations

import json
import math
import random
from typing import Any

import pytest

from rrlab.service.json_values import (
    APPLICATION_JSON,
    SUPER_JSON,
    error_column,
    has_unpaired_surrogate_escape,
    js_number_string,
    json_column,
    parse_json,
)


def superjson(json_part: object, meta: object | None = None) -> str:
    document: dict = {"json": json_part}
    if meta is not None:
        document["meta"] = meta
    return json.dumps(document)


@pytest.mark.parametrize(
    ("text", "data"),
    [
        ('{"a": 1, "b": [true, null, "x"]}', {"a": 1, "b": [True, None, "x"]}),
        ("[1, 2]", [1, 2]),
        ("42", 42),
        ('"text"', "text"),
        ("null", None),
        ("  {}  ", {}),
    ],
)
def test_application_json_is_wrapped_in_data(text: str, data: object) -> None:
    assert json_column(text, APPLICATION_JSON) == {"data": data}


@pytest.mark.parametrize(
    ("text", "content_type"),
    [
        (None, APPLICATION_JSON),
        ("", APPLICATION_JSON),
        ("", SUPER_JSON),
        ('{"a": 1}', "text/plain"),
        ('{"a": 1}', "application/store"),
        ("{not json", APPLICATION_JSON),
        ('{"a": 1} trailing', APPLICATION_JSON),
        ("NaN", APPLICATION_JSON),  # JSON.parse rejects what Python's json accepts
        ('{"a": Infinity}', APPLICATION_JSON),
        ("{not json", SUPER_JSON),
        ("null", SUPER_JSON),  # superjson cannot destructure null
    ],
)
def test_undefined_data_is_an_empty_object(text: str | None, content_type: str) -> None:
    assert json_column(text, content_type) == {}


@pytest.mark.parametrize(
    ("text", "data"),
    [
        ("1.0", 1),  # JS numbers: integral doubles print without a fraction
        ("1e3", 1000),
        ("2.5", 2.5),
        ("-0", 0),
        ("1e400", None),  # Infinity, which JSON.stringify sends as null
        ("12345678901234567890", 12345678901234567890),  # kept exact (documented)
    ],
)
def test_numbers_follow_javascript(text: str, data: object) -> None:
    result = json_column(text, APPLICATION_JSON)
    assert result == {"data": data}
    assert type(result["data"]) is type(data)


def reference_parse(text: str) -> Any:
    """The documented rules, stated with the stdlib decoder alone (the oracle)."""

    def js_float(literal: str) -> int | float | None:
        number = float(literal)
        if number.is_integer() and abs(number) <= 2**53:
            return int(number)
        return None if math.isinf(number) else number

    def reject(name: str) -> Any:
        raise ValueError(name)

    return json.loads(text, parse_float=js_float, parse_constant=reject)


def same_value(a: Any, b: Any) -> bool:
    """Equal, with the same types and key order all the way down (and -0.0 told apart)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(same_value(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(map(same_value, a, b))
    if isinstance(a, float):
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    return a == b


def random_number(rng: random.Random) -> str:
    sign = rng.choice(["", "-"])
    if rng.random() < 0.3:
        return sign + str(rng.randint(0, 10 ** rng.randint(1, 40)))
    whole = str(rng.randint(0, 10 ** rng.randint(0, 25)))
    fraction = str(rng.randint(0, 10 ** rng.randint(1, 25)))
    exponent = rng.choice(["", f"e{rng.randint(-340, 340)}", f"E+{rng.randint(0, 20)}"])
    return f"{sign}{whole}.{fraction}{exponent}" if rng.random() < 0.7 else f"{sign}{whole}e9"


def test_number_literals_parse_exactly_as_the_rules_say() -> None:
    rng = random.Random(5)
    for _ in range(3_000):
        text = random_number(rng)
        assert same_value(parse_json(text), reference_parse(text)), text


@pytest.mark.parametrize(
    "text",
    [
        '{"b": 1, "a": 2, "b": 3}',  # duplicated key: last value, first position
        '{"n": [1.0, -0.0, 2.5, 1e300, 1e-320, 9007199254740993, 9007199254740993.0]}',
        "[18446744073709551615, 18446744073709551616, -9223372036854775808, -9223372036854775809]",
        "[1e19, 1e20, -1e19, 9223372036854775808.0, 1.5e400]",
        '{"s": "é \\u00e9 \\ud83d\\ude00 \\u2028 \\n \\"", "e": {}, "l": [], "t": true, "f": null}',
        "[" * 250 + "1.0" + "]" * 250,  # deep: decided by the stdlib decoder
        '{"a": {"b": {"c": [0.5, {"d": 4.0}]}}}',
    ],
)
def test_documents_parse_exactly_as_the_rules_say(text: str) -> None:
    assert same_value(parse_json(text), reference_parse(text))


@pytest.mark.parametrize(
    "text", ["NaN", "[Infinity]", "[1, 2", '"\\ud800" x', "\ufeff{}", '"\x01"', "[" * 5000]
)
def test_bad_documents_fail_like_the_stdlib(text: str) -> None:
    with pytest.raises((ValueError, RecursionError)) as expected:
        reference_parse(text)
    with pytest.raises(expected.type):
        parse_json(text)


@pytest.mark.parametrize(
    ("text", "bad"),
    [
        ('"\\ud800"', True),  # lone high surrogate
        ('"\\udc00"', True),  # lone low surrogate
        ('"\\ud83d\\ude00"', False),  # a pair
        ('"\\ud83d\\ude00\\ud83d"', True),
        ('"\\ud83d x \\ude00"', True),
        ('"\\uD800"', False),  # upper case: the upstream check misses it
        ('"\\\\ud800"', True),  # an escaped backslash still looks like an escape to it
        ('"\\u00e9"', False),
        ("\\ud800", True),  # at the very end of the text
        ('"plain"', False),
    ],
)
def test_unpaired_surrogate_detection(text: str, bad: bool) -> None:
    assert has_unpaired_surrogate_escape(text) is bad


def test_surrogates_decide_the_cell() -> None:
    assert json_column('{"s": "\\ud800"}', APPLICATION_JSON) == {}
    assert json_column('{"s": "\\ud800"}', SUPER_JSON) == {}
    assert json_column('"\\ud83d\\ude00"', APPLICATION_JSON) == {"data": "😀"}
    # undetected upper-case escape: parsed into a lone surrogate for the sink to handle
    assert json_column('"\\uD800"', APPLICATION_JSON) == {"data": "\ud800"}


def test_error_cell_keeps_the_value_as_is() -> None:
    error = {"type": "BUILT_IN_ERROR", "message": "boom"}
    assert error_column(error) == {"data": error}
    assert error_column(None) == {"data": None}
    assert error_column(["a"]) == {"data": ["a"]}


# --- superjson -------------------------------------------------------------------------


def sj(json_part: object, meta: object | None = None) -> object:
    return json_column(superjson(json_part, meta), SUPER_JSON)


def test_superjson_without_meta_is_its_json_part() -> None:
    assert sj({"a": 1, "b": [1, "x"]}) == {"data": {"a": 1, "b": [1, "x"]}}


@pytest.mark.parametrize("document", ['{"a": 1}', "[1, 2]", "5", '"text"'])
def test_superjson_without_a_json_key_is_null(document: str) -> None:
    # json is undefined, which superjson serializes as null
    assert json_column(document, SUPER_JSON) == {"data": None}


@pytest.mark.parametrize(
    ("value", "iso"),
    [
        ("2024-01-02T03:04:05.678Z", "2024-01-02T03:04:05.678Z"),
        ("2024-01-02", "2024-01-02T00:00:00.000Z"),
        ("2024-01-02T03:04:05+02:00", "2024-01-02T01:04:05.000Z"),
        ("2024-01-02T03:04:05.123456Z", "2024-01-02T03:04:05.123Z"),
        ("2024-02-29T00:00:00Z", "2024-02-29T00:00:00.000Z"),
        ("+275760-09-13T00:00:00.000Z", "+275760-09-13T00:00:00.000Z"),
        ("-000001-01-01T00:00:00Z", "-000001-01-01T00:00:00.000Z"),
        (0, "1970-01-01T00:00:00.000Z"),
        (86_400_001, "1970-01-02T00:00:00.001Z"),
    ],
)
def test_superjson_dates_become_iso_strings(value: object, iso: str) -> None:
    meta = {"values": {"at": ["Date"]}}
    assert sj({"at": value, "n": 1}, meta) == {"data": {"at": iso, "n": 1}}


@pytest.mark.parametrize("value", ["not a date", "2023-02-29", "2024-13-01", {"a": 1}, 9e15])
def test_invalid_dates_fail_like_to_iso_string(value: object) -> None:
    assert sj({"at": value}, {"values": {"at": ["Date"]}}) == {}


def test_null_and_missing_dates() -> None:
    meta = {"values": {"at": ["Date"]}}
    assert sj({"at": None}, meta) == {"data": {"at": "1970-01-01T00:00:00.000Z"}}  # Date(null)
    assert sj({}, meta) == {}  # new Date(undefined) is an invalid date


def test_superjson_root_date_and_nested_paths() -> None:
    assert sj("2020-01-01", {"values": ["Date"]}) == {"data": "2020-01-01T00:00:00.000Z"}
    nested = {"a": {"b.c": ["2020-01-01T00:00:00.000Z"]}}
    meta = {"values": {"a.b\\.c.0": ["Date"]}}
    assert sj(nested, meta) == {"data": nested}


def test_superjson_undefined_becomes_null_even_for_a_missing_key() -> None:
    meta = {"values": {"a": ["undefined"], "gone": ["undefined"], "list.1": ["undefined"]}}
    assert sj({"a": None, "list": [1, None]}, meta) == {
        "data": {"a": None, "list": [1, None], "gone": None}
    }


@pytest.mark.parametrize(
    ("value", "text"), [("123", "123"), ("0x10", "16"), ("-7", "-7"), (" 5 ", "5")]
)
def test_superjson_bigint(value: str, text: str) -> None:
    assert sj({"n": value}, {"values": {"n": ["bigint"]}}) == {"data": {"n": text}}


def test_superjson_bad_bigint_fails() -> None:
    assert sj({"n": "12abc"}, {"values": {"n": ["bigint"]}}) == {}


def test_superjson_set_and_map() -> None:
    meta = {"values": {"s": ["set"], "m": ["map"]}}
    document = {"s": [1, 1, "1", True, 1.0], "m": [["a", 1], ["b", 2], ["a", 3]]}
    assert sj(document, meta) == {"data": {"s": [1, "1", True], "m": [["a", 3], ["b", 2]]}}


def test_superjson_set_members_that_are_objects_are_never_merged() -> None:
    meta = {"values": {"s": ["set", {"0": ["Date"], "1": ["Date"]}]}}
    moment = "2020-01-01T00:00:00.000Z"
    assert sj({"s": [moment, moment]}, meta) == {"data": {"s": [moment, moment]}}


def test_superjson_map_with_date_values() -> None:
    meta = {"values": {"m": ["map", {"0.1": ["Date"]}]}, "v": 1}
    assert sj({"m": [["k", "2021-06-01"]]}, meta) == {
        "data": {"m": [["k", "2021-06-01T00:00:00.000Z"]]}
    }


@pytest.mark.parametrize(
    ("value", "result"),
    [("NaN", "NaN"), ("Infinity", "Infinity"), ("-Infinity", "-Infinity"), ("-0", "-0")],
)
def test_superjson_special_numbers(value: str, result: str) -> None:
    assert sj({"x": value}, {"values": {"x": ["number"]}}) == {"data": {"x": result}}


def test_superjson_plain_numbers_are_javascript_numbers() -> None:
    assert json_column('{"json": [-0, 1.0, 2.5, 1e400]}', SUPER_JSON) == {
        "data": ["-0", 1, 2.5, "Infinity"]
    }


def test_superjson_error_keeps_name_and_message() -> None:
    meta = {"values": {"e": ["Error"]}}
    error = {"name": "TypeError", "message": "bad", "stack": "at x"}
    assert sj({"e": error}, meta) == {"data": {"e": {"name": "TypeError", "message": "bad"}}}
    assert sj({"e": {}}, meta) == {"data": {"e": {"name": None, "message": ""}}}


@pytest.mark.parametrize(
    ("value", "result"), [("/ab/gi", "/ab/gi"), ("/ab/ig", "/ab/gi"), ("//g", "/(?:)/g")]
)
def test_superjson_regexp(value: str, result: str) -> None:
    assert sj({"r": value}, {"values": {"r": ["regexp"]}}) == {"data": {"r": result}}


def test_superjson_regexp_with_bad_flags_fails() -> None:
    assert sj({"r": "/a/gg"}, {"values": {"r": ["regexp"]}}) == {}


def test_superjson_buffer_and_typed_arrays() -> None:
    meta = {
        "values": {
            "b": [["custom", "Buffer"]],
            "i8": [["typed-array", "Int8Array"]],
            "c": [["typed-array", "Uint8ClampedArray"]],
        }
    }
    document = {"b": [1, 256, -1], "i8": [127, 128, -129], "c": [300, -5, 1.5, 2.5]}
    assert sj(document, meta) == {
        "data": {"b": [1, 0, 255], "i8": [127, -128, 127], "c": [255, 0, 2, 2]}
    }


@pytest.mark.parametrize(
    "annotation",
    [["class", "Person"], ["symbol", "s"], ["custom", "Decimal"], "nonsense"],
)
def test_superjson_unregistered_types_fail(annotation: object) -> None:
    assert sj({"x": {"a": 1}}, {"values": {"x": [annotation]}}) == {}


def test_superjson_referential_equalities_copy_the_value() -> None:
    meta = {"referentialEqualities": {"a": ["b", "c.0"]}}
    document = {"a": {"x": 1}, "b": None, "c": [None]}
    assert sj(document, meta) == {"data": {"a": {"x": 1}, "b": {"x": 1}, "c": [{"x": 1}]}}


def test_superjson_prototype_keys() -> None:
    assert sj({"constructor": 1}) == {}
    assert sj({"nested": [{"prototype": 1}]}) == {}
    assert sj({"__proto__": {"a": 1}, "b": 2}) == {"data": {"b": 2}}
    assert sj({"x": 1}, {"values": {"__proto__": ["Date"]}}) == {}


@pytest.mark.parametrize(
    ("number", "text"),
    [
        (1e21, "1e+21"),
        (1.5e-7, "1.5e-7"),
        (0.000001, "0.000001"),
        (123.456, "123.456"),
        (-2.5, "-2.5"),
        (100.0, "100"),
        (1e20, "100000000000000000000"),
        (float("inf"), "Infinity"),
        (float("nan"), "NaN"),
        (-0.0, "0"),
    ],
)
def test_js_number_string(number: float, text: str) -> None:
    assert js_number_string(number) == text
