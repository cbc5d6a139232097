"""The error fingerprint, rule by rule, with expectations worked out from the reference text."""

from __future__ import annotations

import hashlib

import pytest

from rrlab.service.fingerprint import (
    error_fingerprint,
    normalize_error_message,
    normalize_stack_trace,
    run_error_fingerprint,
)


def sha16(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@pytest.mark.parametrize(
    ("message", "normalized"),
    [
        ("Failed for 123e4567-E89B-12d3-a456-426614174000", "Failed for <uuid>"),
        ("Run run_abc123XYZ failed", "Run <run-id> failed"),
        ("Task task_abcd1234 missing", "Task <id> missing"),
        ("Task task_abc1234 missing", "Task task_abc1234 missing"),  # only 7 after the _
        ("at 2024-01-02T03:04:05.678Z done", "at <timestamp> done"),
        ("at 2024-01-02T03:04:05 done", "at <timestamp> done"),  # the Z is optional
        ("at 1700000000 and 1700000000123", "at <timestamp> and <timestamp>"),
        ("got 123456789 rows", "got <id> rows"),  # 9 digits: not a timestamp, a 4+ digit id
        ("GET https://api.example.com/v1/users/42 failed", "GET <url> failed"),
        ("order 12345 failed with code 137", "order <id> failed with code 137"),
        ("cannot open /app/src/index.ts now", "cannot open <path> now"),
        ("cannot open /tmp now", "cannot open /tmp now"),  # one segment is not a path
        ("open C:\\Users\\bob\\file.txt", "open <path>"),
        ("user alice.b@example.com not found", "user <email> not found"),
        ("user bob1234@example.com", "user <email>"),  # no \b before 1234: not an id first
        ("segfault at 0x7fff5fbff8a0", "segfault at <addr>"),
        ("segfault at 0x7fff", "segfault at 0x7fff"),
        ('bad "this is a long quoted string value" here', 'bad "<string>" here'),
        ("bad 'this is a long quoted string value'", "bad '<string>'"),
        ('bad "short one"', 'bad "short one"'),
        ("", ""),
    ],
)
def test_message_replacements(message: str, normalized: str) -> None:
    assert normalize_error_message(message) == normalized


def test_message_rules_apply_in_order() -> None:
    # run_ ids go before the generic lowercase-word_ rule, timestamps before 4+ digit ids,
    # URLs before paths.
    assert normalize_error_message("run_abcdefgh12 at 2024-05-06T07:08:09Z") == (
        "<run-id> at <timestamp>"
    )
    assert normalize_error_message("see http://x.io/a/b/c") == "see <url>"


def test_quoted_string_length_counts_utf16_code_units() -> None:
    # Ten emoji are 20 UTF-16 code units: JavaScript's {20,} matches them.
    assert normalize_error_message('x "' + "😀" * 10 + '"') == 'x "<string>"'


def test_stack_normalization() -> None:
    stack = (
        "Error: boom failed 3 times\n"
        "    at processOrder (/app/src/trigger/orders.ts:120:13)\n"
        "    at run (/app/src/trigger/orders.ts:12:20)\n"
        "   \n"
        "    at a (x.js:1:2)\n"
        "    at b (y.js:3:4)\n"
    )
    assert normalize_stack_trace(stack) == (
        "Error: boom failed _ times|at processOrder (orders.ts:_:_)|"
        "at run (orders.ts:_:_)|at a (x.js:_:_)"
    )
    assert normalize_stack_trace("") == ""


def test_fingerprint_of_a_typical_stored_error() -> None:
    error = {
        "type": "BUILT_IN_ERROR",
        "name": "Error",
        "message": "Failed to process order 12345 for customer cus_abcdefgh1234567",
        "stackTrace": "Error: Failed\n    at processOrder (/app/src/orders.ts:10:13)",
    }
    # stackTrace is never read, so the stack part is empty
    expected = sha16("BUILT_IN_ERROR:Failed to process order <id> for customer <id>:")
    assert error_fingerprint(error) == expected
    assert len(expected) == 16


def test_fingerprint_groups_errors_differing_only_in_dynamic_values() -> None:
    first = {"message": "Timeout after 30000 ms on /srv/app/jobs/a.js", "stack": "at x (a.js:1:2)"}
    second = {"message": "Timeout after 45000 ms on /srv/app/jobs/b.js", "stack": "at x (a.js:9:9)"}
    assert error_fingerprint(first) == error_fingerprint(second)
    assert error_fingerprint(first) == sha16(
        "Error:Timeout after <id> ms on <path>:at x (a.js:_:_)"
    )


@pytest.mark.parametrize(
    ("error", "hashed"),
    [
        ({"name": "TypeError", "message": "m"}, "TypeError:m:"),
        ({"type": "", "name": "RangeError"}, "RangeError:RangeError:"),  # "" is falsy
        ({}, "Error::"),
        ({"raw": "raw text"}, "Error:raw text:"),
        ({"message": 0, "name": "N"}, "N:N:"),  # 0 is falsy: falls through to name
        ({"message": 42}, "Error:42:"),  # String(42)
        ({"message": [1, None, "a"]}, "Error:1,,a:"),  # String([1, null, "a"])
        ({"message": {"nested": 1}}, "Error:[object Object]:"),
        ({"stack": "at f (/a/b.js:3:4)", "stacktrace": "ignored"}, "Error::at f (b.js:_:_)"),
        ({"stacktrace": "at g (c.js:5:6)"}, "Error::at g (c.js:_:_)"),
    ],
)
def test_type_message_and_stack_lookup(error: dict, hashed: str) -> None:
    assert error_fingerprint(error) == sha16(hashed)


def test_lone_surrogates_hash_as_replacement_character() -> None:
    # Node encodes a lone surrogate as U+FFFD when hashing a string.
    assert error_fingerprint({"message": "\ud800"}) == sha16("Error:\ufffd:")


@pytest.mark.parametrize("error", [None, "text", 42, ["a"], True])
def test_non_objects_have_no_fingerprint(error: object) -> None:
    assert error_fingerprint(error) == ""


@pytest.mark.parametrize(
    "status", ["SYSTEM_FAILURE", "CRASHED", "INTERRUPTED", "COMPLETED_WITH_ERRORS", "TIMED_OUT"]
)
def test_failed_statuses_are_fingerprinted(status: str) -> None:
    assert run_error_fingerprint(status, {"message": "x"}) == sha16("Error:x:")


@pytest.mark.parametrize(
    "status", ["COMPLETED_SUCCESSFULLY", "EXECUTING", "PENDING", "CANCELED", "EXPIRED"]
)
def test_other_statuses_give_empty_string(status: str) -> None:
    assert run_error_fingerprint(status, {"message": "x"}) == ""
