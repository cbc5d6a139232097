"""Turn one drained batch into ClickHouse rows and insert them with retry, reporting metrics.

A :class:`Flusher` gives the scheduler its two flush steps. :meth:`Flusher.prepare` (CPU)
filters events the upstream drops, builds task_runs_v2 rows (and raw_task_runs_payload_v1
rows for inserts), sorts them by the tables' keys and encodes them; :meth:`Flusher.send`
(I/O, in a flush thread) inserts task rows, then payload rows, each with the retry policy.
"""

from __future__ import annotations

import csv
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

from rrlab.config import ConsumerConfig
from rrlab.service import transform
from rrlab.service.events import ChangeEvent
from rrlab.service.retry import RetryPolicy, with_retry
from rrlab.service.sinks import InsertResult, Sink, encode_rows

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


@dataclass
class PreparedRows:
    """One table's rows of a batch, with their encoding (made before the flush thread)."""

    table: str
    columns: tuple[str, ...]
    rows: list[list[Any]]
    body: bytes


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
        self.send(batch_id, self.prepare(batch_id, events))

    def prepare(self, batch_id: int, events: list[ChangeEvent]) -> PreparedFlush:
        """Build, sort and encode the batch's rows (pure CPU work, no I/O)."""
        metrics = FlushMetrics(batch_id=batch_id, batch_size=len(events))
        started = time.perf_counter()
        try:
            insertable = [event for event in events if transform.is_insertable(event)]
            metrics.dropped_events = len(events) - len(insertable)
            task_rows = [
                transform.task_run_row(e, fingerprinting=self._fingerprinting) for e in insertable
            ]
            transform.sort_task_rows(task_rows)
            payload_rows = (
                [transform.payload_row(e) for e in insertable if e.kind == "insert"]
                if self._payload_inserts
                else []
            )
            transform.sort_payload_rows(payload_rows)
            metrics.task_rows, metrics.payload_rows = len(task_rows), len(payload_rows)
            inserts = [
                PreparedRows(table, columns, rows, encode_rows(rows))
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
                lambda: self._sink.insert(
                    table, columns, rows, json_columns(table), body=prepared.body
                ),
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
