"""The C JSON walks (rrlab.service._json_walk) against the Python they replaced, as oracles."""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import orjson
import pytest

from rrlab.service import _json_walk
from rrlab.service.json_values import (
    _MAX_SAFE_INTEGER,
    ORJSON_FLOAT_INTS,
    ORJSON_MAX_DEPTH,
    parse_json,
)
from rrlab.service.sinks import encode_rows
from tests.test_json_values import reference_parse, same_value


class Text(str):
    pass


class Number(int):
    pass


class Real(float):
    pass


class Mapping(dict):
    pass


class Items(list):
    pass


class Pair(tuple):
    pass


def plain_oracle(values: Iterable[Any]) -> bool:
    """sinks._is_plain as it was in Python (shallow values only: it has no depth limit)."""
    for value in values:
        kind = type(value)
        if kind in (str, int, bool, type(None)):
            continue
        if kind is float:
            if not math.isfinite(value):
                return False
        elif kind is dict:
            if not plain_oracle(value.values()):
                return False
        elif kind is list or kind is tuple:
            if not plain_oracle(value):
                return False
        else:
            return False
    return True


class OracleStdlibOnly(Exception):
    pass


def js_numbers_oracle(value: Any, depth: int, max_depth: int) -> Any:
    """json_values._js_numbers and _js_float_value as they were in Python."""
    kind = type(value)
    if kind is float:
        return js_float_oracle(value)
    if kind is not dict and kind is not list:
        return value
    if depth >= max_depth:
        raise OracleStdlibOnly
    has_floats = False
    for item in value.values() if kind is dict else value:
        kind_of_item = type(item)
        if kind_of_item is float:
            has_floats = True
        elif kind_of_item is dict or kind_of_item is list:
            js_numbers_oracle(item, depth + 1, max_depth)
    if has_floats:
        for key, item in value.items() if kind is dict else enumerate(value):
            if type(item) is float:
                value[key] = js_float_oracle(item)
    return value


def js_float_oracle(number: float) -> int | float:
    if number.is_integer():
        if -(2**53) <= number <= 2**53:
            return int(number)
        if abs(number) >= 2.0**63:
            raise OracleStdlibOnly
    return number


def reads_alike_oracle(value: Any, depth: int, max_depth: int) -> bool:
    """values._orjson_reads_alike as it was in Python (max_depth was ORJSON_MAX_DEPTH)."""
    kind = type(value)
    if kind is float:
        return not (value.is_integer() and abs(value) >= ORJSON_FLOAT_INTS)
    if kind is not dict and kind is not list:
        return True
    if depth >= max_depth:
        return False
    for item in value.values() if kind is dict else value:
        kind = type(item)
        if (kind is float or kind is dict or kind is list) and not reads_alike_oracle(
            item, depth + 1, max_depth
        ):
            return False
    return True


def reads_alike(value: Any, max_depth: int = ORJSON_MAX_DEPTH) -> bool:
    """The C function as the decoder's json/jsonb loader calls it."""
    return _json_walk.orjson_reads_alike(value, max_depth, ORJSON_FLOAT_INTS)


def js_numbers(value: Any, max_depth: int = ORJSON_MAX_DEPTH) -> Any:
    """The C function as parse_json calls it."""
    return _json_walk.js_numbers(value, max_depth, _MAX_SAFE_INTEGER, ORJSON_FLOAT_INTS)


BOUNDARY_FLOATS = [
    0.0,
    -0.0,
    0.5,
    -1.0,
    1e-320,
    2.0**53,
    -(2.0**53),
    2.0**53 + 2,
    -(2.0**53 + 2),
    2.0**63 - 1024,
    -(2.0**63 - 1024),
    2.0**63,
    -(2.0**63),
    2.0**64,
    1e300,
    1.5e300,
    math.nan,
    math.inf,
    -math.inf,
]
PLAIN_LEAVES: list[Any] = [
    "s",
    "é 😀",
    "",
    0,
    -1,
    2**64,
    -(2**63) - 1,
    2**200,
    True,
    False,
    None,
    0.1,
    -0.0,
    2.0**53,
    5e-324,
    1e300,
]
ODD_LEAVES: list[Any] = [
    math.nan,
    math.inf,
    -math.inf,
    Text("t"),
    Number(3),
    Real(1.0),
    Real(math.nan),
    b"bytes",
    {1, 2},
    frozenset(),
    object(),
    1j,
]


def random_value(rng: random.Random, depth: int, leaf: Callable[[random.Random], Any]) -> Any:
    if depth <= 0 or rng.random() < 0.45:
        return leaf(rng)
    size = rng.randint(0, 4)
    items = [random_value(rng, depth - 1, leaf) for _ in range(size)]
    container = rng.choice([dict, dict, list, list, tuple, Mapping, Items, Pair])
    if container in (dict, Mapping):
        return container((f"k{index}", item) for index, item in enumerate(items))
    return container(items)


def encode_leaf(rng: random.Random) -> Any:
    return rng.choice(ODD_LEAVES) if rng.random() < 0.04 else rng.choice(PLAIN_LEAVES)


def number_leaf(rng: random.Random) -> Any:
    if rng.random() < 0.25:
        return rng.choice([*PLAIN_LEAVES, Real(2.0), Number(1), Text("x")])
    if rng.random() < 0.3:
        return rng.uniform(-1e6, 1e6)
    return rng.choice(BOUNDARY_FLOATS)


def strict(value: Any) -> Any:
    """A comparable form telling apart types, subclasses, -0.0 and NaN."""
    kind = type(value)
    if isinstance(value, dict):
        return (kind, [(key, strict(item)) for key, item in value.items()])
    if isinstance(value, (list, tuple)):
        return (kind, [strict(item) for item in value])
    if isinstance(value, float):
        return (kind, repr(value))
    if isinstance(value, (str, int, type(None), bytes, frozenset, complex)):
        return (kind, value)
    return (kind, id(value))


def nest(levels: int, make: Callable[[Any], Any]) -> list[Any]:
    """A row (a list) whose containers nest ``levels`` deep, the row included."""
    value: Any = 1.5
    for _ in range(levels - 1):
        value = make(value)
    return [value]


def to_list(value: Any) -> list[Any]:
    return [value]


def to_dict(value: Any) -> dict[str, Any]:
    return {"k": value}


def to_tuple(value: Any) -> tuple[Any]:
    return (value,)


def test_is_plain_matches_the_python_it_replaced() -> None:
    rng = random.Random(7)
    outcomes = {True: 0, False: 0}
    for _ in range(4_000):
        row = [random_value(rng, 5, encode_leaf) for _ in range(rng.randint(0, 6))]
        for values in (row, tuple(row), {f"c{i}": v for i, v in enumerate(row)}.values()):
            expected = plain_oracle(values)
            assert _json_walk.is_plain(values) is expected, row
            outcomes[expected] += 1
    assert min(outcomes.values()) > 2_000  # both answers well exercised


@pytest.mark.parametrize(
    ("row", "plain"),
    [
        ([], True),
        (["é", 1, True, None, -0.0, 5e-324, 2**200, (1, [2.5])], True),
        ([{"a": {"b": [1.0, {"c": None}]}}], True),
        ([{"a": [1.0, {"c": math.nan}]}], False),
        ([[1, math.inf]], False),
        ([(1, -math.inf)], False),
        ([Text("a")], False),
        ([Number(1)], False),
        ([Real(1.0)], False),
        ([Mapping(a=1)], False),
        ([Items([1])], False),
        ([Pair((1,))], False),
        ([{1, 2}], False),
        ([b"x"], False),
        ([{1: "int key"}], True),  # keys are not looked at: orjson refuses them, then stdlib
        ([{"k": Text("v")}], False),
    ],
)
def test_is_plain_cases(row: list[Any], plain: bool) -> None:
    assert _json_walk.is_plain(row) is plain
    assert plain_oracle(row) is plain


def test_is_plain_takes_any_iterable_and_stops_at_the_first_odd_value() -> None:
    class Odd(list):
        def __iter__(self) -> Iterator[Any]:
            yield math.nan

    assert _json_walk.is_plain(Odd([1])) is False  # a list subclass iterates its own way
    assert _json_walk.is_plain({1.5: "x", "k": 2}) is True  # a dict: its keys, as `for` does
    assert _json_walk.is_plain({math.nan: 1}) is False
    assert _json_walk.is_plain({"k": math.nan}.values()) is False
    seen: list[Any] = []

    def values() -> Iterator[Any]:
        for value in (1, math.inf, "never"):
            seen.append(value)
            yield value

    assert _json_walk.is_plain(values()) is False
    assert seen == [1, math.inf]


def test_is_plain_passes_iteration_errors_and_refuses_non_iterables() -> None:
    def failing() -> Iterator[Any]:
        yield 1
        raise KeyError("boom")

    with pytest.raises(KeyError, match="boom"):
        _json_walk.is_plain(failing())
    with pytest.raises(TypeError):
        _json_walk.is_plain(1)
    with pytest.raises(TypeError):
        _json_walk.is_plain()  # type: ignore[call-arg]


@pytest.mark.parametrize("make", [to_list, to_dict, to_tuple])
def test_is_plain_depth_limit_is_orjsons(make: Callable[[Any], Any]) -> None:
    limit = _json_walk.IS_PLAIN_MAX_DEPTH
    deepest = nest(limit, make)
    assert _json_walk.is_plain(deepest) is True
    orjson.dumps(deepest)  # orjson writes it: the fast path is still taken
    too_deep = nest(limit + 1, make)
    assert _json_walk.is_plain(too_deep) is False
    if make is not to_tuple:  # orjson 3.13 does not bound tuples (and crashes ~3000 deep)
        with pytest.raises(orjson.JSONEncodeError):
            orjson.dumps(too_deep)
    assert encode_rows([too_deep]) == json.dumps(too_deep, separators=(",", ":")).encode()


def test_is_plain_on_very_deep_rows_is_false_not_a_crash() -> None:
    assert _json_walk.is_plain(nest(200_000, to_list)) is False


def test_js_numbers_matches_the_python_it_replaced() -> None:
    rng = random.Random(11)
    outcomes = {"raised": 0, "returned": 0}
    for _ in range(5_000):
        document = random_value(rng, 6, number_leaf)
        max_depth = rng.randint(0, 7)
        ours = copy_tree(document)
        theirs = copy_tree(document)
        try:
            expected = js_numbers_oracle(theirs, 0, max_depth)
        except OracleStdlibOnly:
            with pytest.raises(_json_walk.StdlibOnly):
                js_numbers(ours, max_depth)
            outcomes["raised"] += 1
            continue
        result = js_numbers(ours, max_depth)
        assert strict(result) == strict(expected), document
        if type(document) in (dict, list):
            assert result is ours  # rewritten in place
        outcomes["returned"] += 1
    assert min(outcomes.values()) > 500


def copy_tree(value: Any) -> Any:
    """A copy of the containers (kept types), sharing the leaves."""
    if isinstance(value, dict):
        return type(value)((key, copy_tree(item)) for key, item in value.items())
    if isinstance(value, (list, tuple)):
        return type(value)(copy_tree(item) for item in value)
    return value


@pytest.mark.parametrize(
    ("number", "expected"),
    [
        (0.0, 0),
        (-0.0, 0),
        (1.0, 1),
        (2.0**53, 2**53),
        (-(2.0**53), -(2**53)),
        (2.0**53 + 2, 2.0**53 + 2),
        (2.0**63 - 1024, 2.0**63 - 1024),
        (-(2.0**63 - 1024), -(2.0**63 - 1024)),
        (0.5, 0.5),
        (1e-320, 1e-320),
        (math.inf, math.inf),
        (-math.inf, -math.inf),
        (math.nan, math.nan),
        (2.0**63, None),
        (-(2.0**63), None),
        (1e300, None),
    ],
)
def test_js_numbers_float_rules(number: float, expected: int | float | None) -> None:
    for wrap, unwrap in [
        (lambda x: x, lambda v: v),
        (lambda x: [0, x, "s"], lambda v: v[1]),
        (lambda x: {"a": {"b": [x]}}, lambda v: v["a"]["b"][0]),
    ]:
        if expected is None:
            with pytest.raises(_json_walk.StdlibOnly):
                js_numbers(wrap(number))
            continue
        assert strict(unwrap(js_numbers(wrap(number)))) == strict(expected)


def test_js_numbers_leaves_subclasses_and_tuples_alone() -> None:
    document = [Real(2.0), (3.0,), Mapping(a=4.0), Items([5.0]), {"t": (2.0**63,)}, Number(1)]
    result = js_numbers(document)
    assert strict(result) == strict(
        [Real(2.0), (3.0,), Mapping(a=4.0), Items([5.0]), {"t": (2.0**63,)}, Number(1)]
    )


def test_js_numbers_keeps_dict_order_and_keys() -> None:
    document = {"z": 1.0, 7: 2.5, "a": [3.0, {"m": -0.0}], None: 2.0**53}
    assert strict(js_numbers(document)) == strict({"z": 1, 7: 2.5, "a": [3, {"m": 0}], None: 2**53})


@pytest.mark.parametrize("make", [to_list, to_dict])
def test_js_numbers_depth_limit(make: Callable[[Any], Any]) -> None:
    # nest(k) has containers at levels 0 .. k-1: a container at level max_depth raises
    assert strict(js_numbers(nest(ORJSON_MAX_DEPTH, make))) == strict(nest(ORJSON_MAX_DEPTH, make))
    with pytest.raises(_json_walk.StdlibOnly):
        js_numbers(nest(ORJSON_MAX_DEPTH + 1, make))
    with pytest.raises(_json_walk.StdlibOnly):
        js_numbers([], 0)
    assert js_numbers(1.0, 0) == 1


def test_js_numbers_past_the_recursion_limit_raises_recursion_error() -> None:
    with pytest.raises(RecursionError):
        js_numbers(nest(200_000, to_list), 10**9)


def test_js_numbers_rejects_bad_arguments() -> None:
    with pytest.raises(TypeError):
        _json_walk.js_numbers([], ORJSON_MAX_DEPTH)
    with pytest.raises(TypeError):
        _json_walk.js_numbers([], "deep", _MAX_SAFE_INTEGER, ORJSON_FLOAT_INTS)


def json_leaf(rng: random.Random) -> Any:
    if rng.random() < 0.5:
        return rng.choice(["s", True, None, 0, 2**53 + 1, 2**63, -(2**64) - 1, 10**30])
    return rng.choice([f for f in BOUNDARY_FLOATS if math.isfinite(f)] + [rng.random()])


def test_parse_json_of_random_documents_follows_the_stdlib_rules() -> None:
    rng = random.Random(3)
    for _ in range(2_000):
        document = random_value(rng, 6, json_leaf)
        text = json.dumps(document)
        assert same_value(parse_json(text), reference_parse(text)), text


def test_orjson_reads_alike_matches_the_python_it_replaced() -> None:
    rng = random.Random(13)
    outcomes = {True: 0, False: 0}
    for _ in range(5_000):
        document = random_value(rng, 6, number_leaf)
        max_depth = rng.randint(0, 7)
        expected = reads_alike_oracle(document, 0, max_depth)
        assert reads_alike(document, max_depth) is expected, (document, max_depth)
        outcomes[expected] += 1
    assert min(outcomes.values()) > 500  # both answers well exercised


@pytest.mark.parametrize(
    ("number", "alike"),
    [
        (0.0, True),
        (-0.0, True),
        (0.5, True),
        (2.0**53, True),
        (2.0**63 - 1024, True),
        (-(2.0**63 - 1024), True),
        (2.0**63, False),
        (-(2.0**63), False),
        (2.0**64, False),
        (1e300, False),
        (1.5e300, False),
        (math.nan, True),
        (math.inf, True),
        (-math.inf, True),
        (Real(2.0**63), True),  # subclasses are not looked at
    ],
)
def test_orjson_reads_alike_float_rule(number: float, alike: bool) -> None:
    for wrap in (lambda x: x, lambda x: [0, x, "s"], lambda x: {"a": {"b": [None, x]}}):
        assert reads_alike(wrap(number)) is alike
        assert reads_alike_oracle(wrap(number), 0, ORJSON_MAX_DEPTH) is alike


def test_orjson_reads_alike_looks_at_exact_dict_values_and_lists_only() -> None:
    big = 2.0**63
    for document in (
        [Items([big])],
        {"k": Mapping(a=big)},
        [(big,)],
        {big: 1},  # keys are not looked at
        [Text("x"), Number(1), b"x", {1, 2}, None, True],
    ):
        assert reads_alike(document) is True
        assert reads_alike_oracle(document, 0, ORJSON_MAX_DEPTH) is True
    assert reads_alike({big: [big]}) is False
    assert reads_alike([[], {}, [{"deep": [1, 2, {"x": big}]}]]) is False


@pytest.mark.parametrize("make", [to_list, to_dict])
def test_orjson_reads_alike_depth_limit(make: Callable[[Any], Any]) -> None:
    # nest(k) has containers at levels 0 .. k-1: one at level ORJSON_MAX_DEPTH is refused
    for levels, alike in [(ORJSON_MAX_DEPTH - 1, True), (ORJSON_MAX_DEPTH, True)]:
        assert reads_alike(nest(levels, make)) is alike
    assert reads_alike(nest(ORJSON_MAX_DEPTH + 1, make)) is False
    assert reads_alike_oracle(nest(ORJSON_MAX_DEPTH + 1, make), 0, ORJSON_MAX_DEPTH) is False
    assert reads_alike([], 0) is False
    assert reads_alike(1.5, 0) is True
    text = "[" * ORJSON_MAX_DEPTH + "]" * ORJSON_MAX_DEPTH  # the deepest orjson reads here
    assert reads_alike(orjson.loads(text)) is True
    assert reads_alike(orjson.loads("[" + text + "]")) is False


def test_orjson_reads_alike_past_the_recursion_limit_raises_recursion_error() -> None:
    with pytest.raises(RecursionError):
        reads_alike(nest(200_000, to_list), 10**9)


def test_orjson_reads_alike_rejects_bad_arguments() -> None:
    with pytest.raises(TypeError):
        _json_walk.orjson_reads_alike([], ORJSON_MAX_DEPTH)
    with pytest.raises(TypeError):
        _json_walk.orjson_reads_alike([], "deep", ORJSON_FLOAT_INTS)
