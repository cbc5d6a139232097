"""Pacing of a producer's writes from the phase start, so sleeping never accumulates drift.

Record k of a phase is due at ``start + k / rate``. A batch of n records, k..k+n-1, is due
when its middle record is: over any span the records written stay within half a batch of
``rate × elapsed``, whether the writer is early (it waits) or late (it catches up at once).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

# A batch never holds more than this many seconds' worth of records, so a slow phase is
# written as a steady stream of small batches instead of a burst every few seconds.
MAX_BATCH_SPAN_S = 0.25


class Pacer:
    """Schedules the batches of one phase at ``rate`` records/s, starting now."""

    def __init__(
        self, rate: float, batch_size: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if rate <= 0 or not math.isfinite(rate):
            raise ValueError(f"rate must be a positive number of records/s, got {rate!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size!r}")
        self.rate = rate
        self.batch_size = min(batch_size, max(1, round(rate * MAX_BATCH_SPAN_S)))
        self._clock = clock
        self.start = clock()
        self.records = 0

    def wait_s(self) -> float:
        """Seconds until the next batch is due (0 when it is due or late)."""
        due = self.start + (self.records + self.batch_size / 2) / self.rate
        return max(0.0, due - self._clock())

    def written(self, count: int) -> None:
        """Account for ``count`` records written."""
        self.records += count

    def elapsed_s(self) -> float:
        return self._clock() - self.start

    def achieved_rate(self) -> float:
        """Records written per second since the phase started."""
        elapsed = self.elapsed_s()
        return self.records / elapsed if elapsed > 0 else 0.0
