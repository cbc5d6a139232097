"""Insert retries with the reference's exponential backoff, jitter and permanent errors."""

from __future__ import annotations

import logging
import random
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


def is_permanent(error: BaseException) -> bool:
    """The reference's rule: retrying cannot help when the message names one of these."""
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
