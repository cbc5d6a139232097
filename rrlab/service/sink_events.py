"""The sink's health as timestamped events, for the runner to turn into outage windows.

Every failed attempt to reach ClickHouse (an insert, or connecting at start-up), the first
success after failures, and each re-read from the slot forced by a failed batch is one
event; the consumer drains them into its once-a-second reports. Per insert attempt, never
per row.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

from rrlab.service.sinks import InsertResult, Row, Sink

INSERT_FAILED = "insert_failed"
CONNECT_FAILED = "connect_failed"
RECOVERED = "recovered"
REREAD = "reread"


class SinkEvents:
    """Thread-safe: flush threads record, the consumer's main loop drains."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: list[tuple[float, str]] = []
        self._failing = False

    def failed(self, kind: str, sent_at: float) -> None:
        """An attempt sent at ``sent_at`` (epoch seconds) failed."""
        with self._lock:
            self._events.append((sent_at, kind))
            self._failing = True

    def succeeded(self) -> None:
        """An attempt succeeded: the first one after failures ends them (a RECOVERED event)."""
        # the common case needs no lock: a stale read only moves RECOVERED to the next success
        if not self._failing:
            return
        with self._lock:
            if self._failing:
                self._failing = False
                self._events.append((time.time(), RECOVERED))

    def reread(self) -> None:
        """The consumer starts over from the slot because a batch failed every retry."""
        with self._lock:
            self._events.append((time.time(), REREAD))

    def drain(self) -> list[tuple[float, str]]:
        with self._lock:
            events, self._events = self._events, []
        return events


class RecordingSink:
    """Wraps a sink: each insert attempt's outcome goes to ``events``."""

    def __init__(self, sink: Sink, events: SinkEvents) -> None:
        self._inner = sink
        self._events = events

    def insert(
        self, table: str, columns: Sequence[str], rows: Sequence[Row], json_columns: frozenset[str]
    ) -> InsertResult:
        sent_at = time.time()
        try:
            result = self._inner.insert(table, columns, rows, json_columns)
        except Exception:
            self._events.failed(INSERT_FAILED, sent_at)
            raise
        self._events.succeeded()
        return result

    def close(self) -> None:
        self._inner.close()
