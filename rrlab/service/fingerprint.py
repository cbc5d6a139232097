"""The upstream error fingerprint: a Sentry-style hash grouping similar errors of failed runs.

Regexes follow JavaScript semantics: ``\\d``, ``\\w`` and ``\\b`` are ASCII (``re.ASCII``),
``\\s`` is JavaScript's whitespace set, and strings are matched as UTF-16 code units.
"""

from __future__ import annotations

import hashlib
import re
from functools import lru_cache
from typing import Any

from rrlab.service.json_values import (
    JS_WHITESPACE,
    js_string,
    js_truthy,
    node_utf8,
    utf16_code_units,
)

FINGERPRINTED_STATUSES = frozenset(
    {"SYSTEM_FAILURE", "CRASHED", "INTERRUPTED", "COMPLETED_WITH_ERRORS", "TIMED_OUT"}
)
_STACK_LINES = 5
_NOT_S = f"[^{JS_WHITESPACE}]"
_NOT_SLASH_S = f"[^/{JS_WHITESPACE}]"
_A = re.ASCII

# (pattern, replacement) in the upstream's order: specific patterns before generic ones.
_MESSAGE_RULES = [
    (
        re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", _A | re.I),
        "<uuid>",
    ),
    (re.compile(r"run_[a-zA-Z0-9]+", _A), "<run-id>"),
    (re.compile(r"\b[a-z]+_[a-zA-Z0-9]{8,}\b", _A), "<id>"),
    (re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z?", _A), "<timestamp>"),
    (re.compile(r"\b\d{10,13}\b", _A), "<timestamp>"),
    (re.compile(rf"https?://{_NOT_S}+", _A), "<url>"),
    (re.compile(r"\b\d{4,}\b", _A), "<id>"),
    (re.compile(rf"(?:/{_NOT_SLASH_S}+){{2,}}", _A), "<path>"),
    (re.compile(r"[A-Z]:\\(?:[^\\]+\\)+[^\\]+", _A), "<path>"),
    (re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Z|a-z]{2,}\b", _A), "<email>"),
    (re.compile(r"0x[0-9a-fA-F]{8,}", _A), "<addr>"),
    (re.compile(r'"[^"]{20,}"', _A), '"<string>"'),
    (re.compile(r"'[^']{20,}'", _A), "'<string>'"),
]
_LINE_COLUMN = re.compile(r":\d+:\d+", _A)
_STANDALONE_NUMBER = re.compile(r"\b\d+\b", _A)
_DIRECTORY_PREFIX = re.compile(rf"(?:/{_NOT_SLASH_S}+)+/({_NOT_SLASH_S}+)", _A)


def normalize_error_message(message: str) -> str:
    """Replace dynamic values (ids, timestamps, URLs, paths, ...) with placeholders."""
    if not message:
        return ""
    message = utf16_code_units(message)
    for pattern, replacement in _MESSAGE_RULES:
        message = pattern.sub(replacement, message)
    return message


def normalize_stack_trace(stack: str) -> str:
    """First 5 lines, line/column numbers and directories removed, joined with ``|``."""
    if not stack:
        return ""
    lines = []
    for line in utf16_code_units(stack).split("\n")[:_STACK_LINES]:
        line = _LINE_COLUMN.sub(":_:_", line)
        line = _STANDALONE_NUMBER.sub("_", line)
        line = _DIRECTORY_PREFIX.sub(r"\1", line)
        line = line.strip(JS_WHITESPACE)
        if line:
            lines.append(line)
    return "|".join(lines)


@lru_cache(maxsize=4096)
def fingerprint_parts(error_type: str, message: str, stack: str) -> str:
    """First 16 hex chars of SHA-256 over ``type:normalized message:normalized stack``."""
    text = f"{error_type}:{normalize_error_message(message)}:{normalize_stack_trace(stack)}"
    return hashlib.sha256(node_utf8(text)).hexdigest()[:16]


def _first_truthy(error: dict[str, Any], keys: tuple[str, ...], default: str) -> str:
    for key in keys:
        value = error.get(key)
        if js_truthy(value):
            return js_string(value)
    return default


def error_fingerprint(error: Any) -> str:
    """Fingerprint of a run's ``error`` jsonb value; empty unless it is a JSON object."""
    if not isinstance(error, dict):
        return ""
    # Stored errors keep their stack under "stackTrace", which the upstream never reads.
    return fingerprint_parts(
        _first_truthy(error, ("type", "name"), "Error"),
        _first_truthy(error, ("message", "name", "raw"), ""),
        _first_truthy(error, ("stack", "stacktrace"), ""),
    )


def run_error_fingerprint(status: Any, error: Any) -> str:
    """The ``error_fingerprint`` column: empty for statuses that are not failures."""
    return error_fingerprint(error) if status in FINGERPRINTED_STATUSES else ""
