"""Turn changes into encoded ClickHouse rows and insert them in batches with retry.

A :class:`Flusher` gives the scheduler its three steps. :meth:`Flusher.build` runs as each
change arrives: it drops events the upstream drops, and builds and encodes the change's
task_runs_v2 row (and raw_task_runs_payload_v1 row for inserts), so the pending map keeps a
few KB of bytes per change instead of the decoded run with its parsed JSON (which, alive in
thousands until their flush, doubled the consumer's CPU per row at large batches).
:meth:`Flusher.prepare` sorts a drained batch's rows by the tables' keys and joins them;
:meth:`Flusher.send` (I/O, in a flush thread) inserts task rows, then payload rows, each
with the retry policy.
"""

from __future__ import annotations

import csv
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from operator import attrgetter
from typing import Any

from rrlab.config import ConsumerConfig
from rrlab.service import transform
from rrlab.service.events import ChangeEvent
from rrlab.service.retry import RetryPolicy, with_retry
from rrlab.service.sinks import EncodedRows, InsertResult, Sink, encode_row

TASK_RUNS_TABLE = "task_runs_v2"
PAYLOAD_TABLE = "raw_task_runs_payload_v1"


@cache
def json_columns(table: str) -> frozenset[str]:
    """The table's JSON-typed columns, from the reference schema shipped with rrlab."""
    text = resources.files("rrlab.reference").joinpath(f"clickhouse_{table}.tsv").read_text()
    return frozenset(
        row["column"]
        for row in csv.DictReader(text.splitlines(), delimiter="\t")
        if row["ch_type"].startswith("JSON")
    )


@dataclass
class FlushMetrics:
    """What one flush did; ``ok`` is False when it gave up (acknowledgement then stops)."""

    batch_id: int
    batch_size: int
    dropped_events: int = 0
    task_rows: int = 0
    payload_rows: int = 0
    inserted: InsertResult = field(default_factory=InsertResult)
    duration_ms: float = 0.0
    retries: int = 0
    errors: int = 0
    ok: bool = False


@dataclass(slots=True)
class EncodedEvent:
    """What the pending map keeps of an insertable change: its encoded rows and sort key."""

    sort_key: tuple[Any, ...]
    """The task row's :data:`~rrlab.service.transform.task_sort_key`."""
    task_row: bytes
    payload_row: bytes | None
    """None unless the change is an insert and payload inserts are on."""


@dataclass(slots=True)
class UnbuildableEvent:
    """A change whose rows could not be built: its batch fails at flush time, as a batch
    whose rows fail to build always did, rather than the receive loop."""

    error: Exception


NOT_INSERTABLE = None
"""What the pending map keeps of a change the upstream drops: it still replaces an older
change of its run and kind, and its flush counts it in ``dropped_events``."""

PendingEntry = EncodedEvent | UnbuildableEvent | None
"""What :meth:`Flusher.build` makes of a change."""


@dataclass
class PreparedRows:
    """One table's rows of a batch, sorted and encoded (made before the flush thread)."""

    table: str
    columns: tuple[str, ...]
    rows: EncodedRows


@dataclass
class PreparedFlush:
    """What :meth:`Flusher.prepare` made of a batch, for :meth:`Flusher.send` to insert."""

    metrics: FlushMetrics
    started: float
    inserts: list[PreparedRows]


class Flusher:
    """The flush steps of :class:`~rrlab.service.scheduler.FlushScheduler` (``prepare``,
    ``send``); calling it does both, as one flush.

    Thread-safe: it keeps no state between calls; ``on_metrics`` is called from flush threads.
    ``sleep`` and ``jitter`` are injectable so tests never wait for backoff.
    """

    def __init__(
        self,
        sink: Sink,
        *,
        retry: RetryPolicy,
        payload_inserts: bool = True,
        fingerprinting: bool = True,
        on_metrics: Callable[[FlushMetrics], None] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self._sink = sink
        self._retry = retry
        self._payload_inserts = payload_inserts
        self._fingerprinting = fingerprinting
        self._on_metrics = on_metrics
        self._sleep = sleep
        self._jitter = jitter

    @classmethod
    def from_config(
        cls,
        sink: Sink,
        config: ConsumerConfig,
        on_metrics: Callable[[FlushMetrics], None] | None = None,
    ) -> Flusher:
        """The flusher the consumer's settings describe (retry policy, payloads, fingerprints)."""
        return cls(
            sink,
            retry=RetryPolicy(
                max_attempts=config.insert_max_retries,
                base_delay_ms=config.insert_base_delay_ms,
                max_delay_ms=config.insert_max_delay_ms,
            ),
            payload_inserts=config.payload_inserts,
            fingerprinting=config.error_fingerprinting,
            on_metrics=on_metrics,
        )

    def __call__(self, batch_id: int, events: list[ChangeEvent]) -> None:
        self.send(batch_id, self.prepare(batch_id, [self.build(event) for event in events]))

    def build(self, event: ChangeEvent) -> PendingEntry:
        """Build and encode the change's rows (pure CPU work, as the change arrives)."""
        if not transform.is_insertable(event):
            return NOT_INSERTABLE
        try:
            task_row = transform.task_run_row(event, fingerprinting=self._fingerprinting)
            payload_row = (
                encode_row(transform.payload_row(event))
                if self._payload_inserts and event.kind == "insert"
                else None
            )
            return EncodedEvent(
                transform.task_sort_key(task_row), encode_row(task_row), payload_row
            )
        except Exception as exc:  # a transform bug or a run it cannot handle: fail the batch
            return UnbuildableEvent(exc)

    @staticmethod
    def held_bytes(entry: PendingEntry) -> int:
        """The bytes of encoded rows ``entry`` holds, pending and (joined) in flight."""
        if type(entry) is not EncodedEvent:
            return 0
        payload = entry.payload_row
        return len(entry.task_row) + (0 if payload is None else len(payload))

    def prepare(self, batch_id: int, entries: list[PendingEntry]) -> PreparedFlush:
        """Sort the batch's encoded rows by the tables' keys and join them (no I/O).

        ``entries`` are :meth:`build`'s, in arrival order of their (kind, run id), which
        breaks sort ties as the upstream's stable sort of its rows does.
        """
        metrics = FlushMetrics(batch_id=batch_id, batch_size=len(entries))
        started = time.perf_counter()
        try:
            encoded = _insertable(entries)
            metrics.dropped_events = len(entries) - len(encoded)
            with_payload = [entry for entry in encoded if entry.payload_row is not None]
            transform.sort_task_rows(encoded, key=_task_sort_key)
            transform.sort_payload_rows(with_payload, key=_payload_sort_key)
            task_rows = EncodedRows([entry.task_row for entry in encoded])
            payload_rows = EncodedRows([entry.payload_row for entry in with_payload])
            metrics.task_rows, metrics.payload_rows = len(task_rows), len(payload_rows)
            inserts = [
                PreparedRows(table, columns, rows)
                for table, columns, rows in (
                    (TASK_RUNS_TABLE, transform.TASK_RUN_COLUMNS, task_rows),
                    (PAYLOAD_TABLE, transform.PAYLOAD_COLUMNS, payload_rows),
                )
                if rows
            ]
        except BaseException:
            self._report(metrics, started)
            raise
        return PreparedFlush(metrics, started, inserts)

    def send(self, batch_id: int, prepared: PreparedFlush) -> None:
        """Insert the prepared rows, task rows first, each table with the retry policy."""
        try:
            for rows in prepared.inserts:
                self._insert(rows, prepared.metrics)
            prepared.metrics.ok = True
        finally:
            self._report(prepared.metrics, prepared.started)

    def _report(self, metrics: FlushMetrics, started: float) -> None:
        metrics.duration_ms = (time.perf_counter() - started) * 1000
        if self._on_metrics is not None:
            self._on_metrics(metrics)

    def _insert(self, prepared: PreparedRows, metrics: FlushMetrics) -> None:
        table, columns, rows = prepared.table, prepared.columns, prepared.rows

        def count_retry(attempt: int, error: BaseException) -> None:
            metrics.retries += 1
            metrics.errors += 1

        try:
            result = with_retry(
                lambda: self._sink.insert(table, columns, rows, json_columns(table)),
                self._retry,
                what=f"insert of {len(rows)} rows into {table}",
                on_retry=count_retry,
                sleep=self._sleep,
                jitter=self._jitter,
            )
        except Exception:
            metrics.errors += 1
            raise
        metrics.inserted.add(result)


def _insertable(entries: list[PendingEntry]) -> list[EncodedEvent]:
    """The batch's encoded changes; raises the error of a change that could not be built."""
    encoded = []
    for entry in entries:
        if type(entry) is EncodedEvent:
            encoded.append(entry)
        elif entry is not NOT_INSERTABLE:
            raise entry.error
    return encoded


_task_sort_key = attrgetter("sort_key")


def _payload_sort_key(entry: EncodedEvent) -> tuple[str]:
    return entry.sort_key[transform.TASK_SORT_RUN_ID :]
