"""Insert retries with the reference's exponential backoff, jitter and permanent errors
(the reference's message substrings, and ClickHouse's own exception codes)."""

from __future__ import annotations

import logging
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from rrlab.exceptions import SinkError
from rrlab.urls import mask_text

log = logging.getLogger(__name__)

T = TypeVar("T")

PERMANENT_ERRORS = (
    "authentication failed",
    "permission denied",
    "invalid credentials",
    "table not found",
    "database not found",
    "column not found",
    "schema mismatch",
    "invalid query",
    "syntax error",
    "type error",
    "constraint violation",
    "duplicate key",
    "foreign key violation",
)

# The reference's categories in ClickHouse's own words: its messages say "Table x does not
# exist. (UNKNOWN_TABLE)", which none of the substrings above match. Codes and names are
# ClickHouse's (src/Common/ErrorCodes.cpp; errorCodeToName() on the server).
PERMANENT_CLICKHOUSE_ERRORS: dict[int, str] = {
    # authentication failed, invalid credentials
    192: "UNKNOWN_USER",
    193: "WRONG_PASSWORD",
    194: "REQUIRED_PASSWORD",
    516: "AUTHENTICATION_FAILED",
    # permission denied
    164: "READONLY",
    195: "IP_ADDRESS_NOT_ALLOWED",
    497: "ACCESS_DENIED",
    # table, database, column not found; schema mismatch
    8: "THERE_IS_NO_COLUMN",
    10: "NOT_FOUND_COLUMN_IN_BLOCK",
    16: "NO_SUCH_COLUMN_IN_TABLE",
    20: "NUMBER_OF_COLUMNS_DOESNT_MATCH",
    47: "UNKNOWN_IDENTIFIER",
    60: "UNKNOWN_TABLE",
    81: "UNKNOWN_DATABASE",
    # invalid query, syntax error
    46: "UNKNOWN_FUNCTION",
    62: "SYNTAX_ERROR",
    73: "UNKNOWN_FORMAT",
    115: "UNKNOWN_SETTING",
    # type error
    43: "ILLEGAL_TYPE_OF_ARGUMENT",
    50: "UNKNOWN_TYPE",
    53: "TYPE_MISMATCH",
    70: "CANNOT_CONVERT_TYPE",
    # constraint violation
    469: "VIOLATED_CONSTRAINT",
}
# Overload and network trouble: waiting helps. These stay retried even when their message
# happens to hold one of the substrings (messages can quote the query or the rows sent).
TRANSIENT_CLICKHOUSE_ERRORS: dict[int, str] = {
    159: "TIMEOUT_EXCEEDED",
    201: "QUOTA_EXCEEDED",
    202: "TOO_MANY_SIMULTANEOUS_QUERIES",
    209: "SOCKET_TIMEOUT",
    210: "NETWORK_ERROR",
    241: "MEMORY_LIMIT_EXCEEDED",
    242: "TABLE_IS_READ_ONLY",
    252: "TOO_MANY_PARTS",
    285: "TOO_FEW_LIVE_REPLICAS",
    319: "UNKNOWN_STATUS_OF_INSERT",
}
_CODES_BY_NAME = {
    name: code
    for table in (PERMANENT_CLICKHOUSE_ERRORS, TRANSIENT_CLICKHOUSE_ERRORS)
    for code, name in table.items()
}
_CODE = re.compile(r"\bCode: (\d+)\. DB::Exception")
_NAME = re.compile(r"\(([A-Z][A-Z0-9_]+)\)")


def clickhouse_error_code(error: BaseException) -> int | None:
    """ClickHouse's exception code for ``error``, or None when it is not a server's answer.

    clickhouse-connect's errors carry ``code`` when the server sent X-ClickHouse-Exception-Code;
    otherwise ClickHouse's message itself says "Code: N. DB::Exception: ... (NAME)".
    """
    code = getattr(error, "code", None)
    if isinstance(code, int) and not isinstance(code, bool):
        return code
    message = str(error)
    if match := _CODE.search(message):
        return int(match.group(1))
    names = _NAME.findall(message)
    return _CODES_BY_NAME.get(names[-1]) if names else None


def is_permanent(error: BaseException) -> bool:
    """Retrying cannot help: ClickHouse's code says so, or the message names one of the
    reference's substrings. Transient codes (overload, timeouts, network) are always retried."""
    code = clickhouse_error_code(error)
    if code in TRANSIENT_CLICKHOUSE_ERRORS:
        return False
    if code in PERMANENT_CLICKHOUSE_ERRORS:
        return True
    message = str(error).lower()
    return any(marker in message for marker in PERMANENT_ERRORS)


@dataclass(frozen=True)
class RetryPolicy:
    """``max_attempts`` in total; the wait after attempt n is min(base·2^(n−1), max) + 0–100 ms."""

    max_attempts: int = 3
    base_delay_ms: float = 100
    max_delay_ms: float = 2_000

    def delay_ms(self, attempt: int, jitter: float) -> float:
        """The wait after failed attempt ``attempt`` (1-based); ``jitter`` in [0, 1)."""
        return min(self.base_delay_ms * 2 ** (attempt - 1), self.max_delay_ms) + jitter * 100


def with_retry(
    attempt: Callable[[], T],
    policy: RetryPolicy,
    *,
    what: str = "insert",
    on_retry: Callable[[int, BaseException], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    jitter: Callable[[], float] = random.random,
) -> T:
    """Call ``attempt`` until it succeeds, an error is permanent, or attempts run out.

    ``on_retry(attempt, error)`` is called before each wait. Unlike the reference, there is
    no wait after the last attempt: it delays nothing but the error report.
    """
    for number in range(1, policy.max_attempts + 1):
        try:
            return attempt()
        except Exception as exc:
            if is_permanent(exc) or number == policy.max_attempts:
                kind = "permanent error" if is_permanent(exc) else "every retry"
                raise SinkError(
                    f"{what} failed after {number} attempt(s) ({kind}): {mask_text(str(exc))}"
                ) from exc
            if on_retry is not None:
                on_retry(number, exc)
            delay_ms = policy.delay_ms(number, jitter())
            log.warning(
                "%s attempt %d failed (%s); retrying in %.0f ms",
                what,
                number,
                mask_text(str(exc)),
                delay_ms,
            )
            sleep(delay_ms / 1000)
    raise AssertionError("unreachable: max_attempts >= 1")
