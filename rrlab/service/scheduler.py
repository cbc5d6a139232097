"""The concurrent flush scheduler of the upstream service, with crash-safe acknowledgement.

Pending events sit in a map keyed by (event kind, run id); an incoming event replaces the
stored one when its ``_version`` is at least as new. The map keeps what ``build`` makes of
an event (the consumer's: its encoded rows and sort key), made as its transaction arrives,
outside the lock: thousands of decoded events, alive until their flush, made the consumer's
CPU per row grow with the batch size (issue #7). A flush drains the whole map. It starts
when an add brings the map to ``flush_batch_size`` or more, or on a timer every
``flush_interval_ms`` when the map is not empty. At most ``max_flush_concurrency`` flushes
run at once, each in a flush worker thread (flushes are I/O-bound HTTP inserts). Workers are
started as flushes need them, up to ``max_flush_concurrency``, and reused: a thread started
per flush cost the receive loop ~4% of its time, as ``Thread.start`` waits for the new
thread to get the GIL.

A flush has two steps. ``prepare`` (sorting and joining the rows: CPU work) runs in the
thread that drains the batch, usually the receive loop, before the flush thread starts;
only ``flush`` (the insert, with its retries) runs in the flush thread. Preparing in the
flush threads made them fight the receive loop for the GIL: the same work cost ~25% more
CPU (measured in BENCHMARKS.md). The upstream service, on one Node.js event loop, also does
this work on the loop and only waits for the inserts concurrently.

Back-pressure (a deliberate difference from upstream, whose p-limit queue of drained batches
grows without bound): when every slot is busy a due flush is *not* drained; the events keep
collecting in the pending map, where updates of the same run still collapse, and the map is
drained the moment a slot frees. If the map reaches ``max_pending_events`` while every slot is
busy, :meth:`FlushScheduler.add_transaction` blocks the receive loop until a flush finishes,
so memory stays bounded and PostgreSQL holds the rest of the stream. With ``size_of`` and
``max_held_bytes`` it also blocks while what it holds, the pending entries and the in-flight
batches (``size_of`` each entry), comes to ``max_held_bytes`` or more: the count alone let
a slow insert pile up 40,000 pending changes and four bodies of 20,000+ rows (~0.5 GB).
A blocked add returns early once ``stop_waiting`` is set, so a consumer told to stop while
ClickHouse stalls stops within ``BLOCKED_CHECK_S`` instead of after the stalled flush's
retries; meanwhile it calls ``on_blocked`` at that pace, which the consumer uses to go on
reporting and to keep its replication connection alive.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from rrlab.service.acks import AckTracker
from rrlab.service.events import ChangeEvent, EventKind, Transaction

log = logging.getLogger(__name__)

BuildFunction = Callable[[ChangeEvent], Any]
"""Turns an arriving event into what the pending map keeps of it (by default, the event).
It runs in the receive loop and must not raise: :meth:`Flusher.build
<rrlab.service.flusher.Flusher.build>` keeps an error for ``prepare`` to raise, so the
batch fails like a flush."""

PrepareFunction = Callable[[int, list[Any]], Any]
"""Turns a drained batch (batch id, what ``build`` made of its events) into what the flush
function sends."""

FlushFunction = Callable[[int, Any], None]
"""Writes one prepared batch (batch id, what ``prepare`` made of it, by default what
``build`` made of its events); raises when it failed every retry."""

BatchKey = tuple[EventKind, str]
SizeFunction = Callable[[Any], int]
"""The bytes an entry ``build`` made holds while pending or in flight."""
BLOCKED_CHECK_S = 0.2
"""How often a blocked add looks at ``stop_waiting`` and calls ``on_blocked``."""
BLOCKED_LOG_INTERVAL_S = 60.0
"""At most one log line per this many seconds says the receive loop is held back."""


class FlushScheduler:
    """Dedup map, flush triggers, bounded flush threads and the :class:`AckTracker` behind them.

    All public methods are thread-safe. ``flush`` runs in a worker thread, ``prepare`` in
    the thread that drained the batch and ``build`` in the one that adds the transaction
    (both outside the lock). ``on_flush_failed(batch_id, exc)`` is told about every batch
    that exhausted its retries or failed to prepare.
    """

    def __init__(
        self,
        flush: FlushFunction,
        *,
        build: BuildFunction | None = None,
        prepare: PrepareFunction | None = None,
        flush_batch_size: int,
        flush_interval_ms: int,
        max_flush_concurrency: int,
        max_pending_events: int | None = None,
        size_of: SizeFunction | None = None,
        max_held_bytes: int | None = None,
        start_lsn: int = 0,
        on_flush_failed: Callable[[int, BaseException], None] | None = None,
        stop_waiting: threading.Event | None = None,
        on_blocked: Callable[[], None] | None = None,
    ) -> None:
        self._flush = flush
        self._build = build
        self._prepare = prepare
        self._batch_size = flush_batch_size
        self._interval_s = flush_interval_ms / 1000
        self._slots = max_flush_concurrency
        default_cap = max(10 * flush_batch_size, 10_000)
        self._max_pending = max(max_pending_events or default_cap, flush_batch_size)
        self._size_of = size_of
        self._max_held_bytes = max_held_bytes if size_of is not None else None
        self._on_flush_failed = on_flush_failed
        self._stop_waiting = stop_waiting or threading.Event()
        self._on_blocked = on_blocked
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._pending: dict[BatchKey, tuple[int, Any, int]] = {}  # key → (version, built, size)
        self._pending_batch = 0
        self._pending_bytes = 0
        self._in_flight = 0
        self._in_flight_bytes = 0
        self._timer_due = False
        self._acks = AckTracker(start_lsn)
        self._stop = threading.Event()
        self._timer = threading.Thread(target=self._tick, name="flush-timer", daemon=True)
        # (batch id, prepared, events, bytes) for the flush workers; None tells one to exit
        self._flush_queue: queue.SimpleQueue[tuple[int, Any, int, int] | None] = queue.SimpleQueue()
        self._workers = 0
        self._idle_workers = 0  # waiting for, or about to wait for, the queue
        self._queued = 0  # put in the queue, not yet taken by a worker
        self.skipped_without_run_id = 0
        self.flushes_started = 0
        self.flushes_failed = 0
        self.blocked_adds = 0
        self._blocked_logged_at: float | None = None

    # --- the receive loop's side -------------------------------------------------

    def start(self) -> None:
        self._timer.start()

    def add_transaction(self, transaction: Transaction) -> None:
        """Add a committed transaction's events, then record its end LSN as received."""
        arrived = self._arrived(transaction.events)
        with self._lock:
            self._add(arrived)
            self._acks.received(transaction.commit_end_lsn)
            due = len(self._pending) >= self._batch_size or self._over_budget()
            batch = self._take_batch() if due else None
        self._launch(batch)
        blocked = False
        while True:
            with self._lock:
                if not self._held_back():
                    return
                if not blocked:
                    self.blocked_adds += 1
                    blocked = True
                    self._log_blocked()
                # a timeout: the stop is set by a signal handler, which cannot notify (it
                # runs in this thread and may interrupt it while it holds the lock)
                self._changed.wait(BLOCKED_CHECK_S)
            if self._on_blocked is not None:
                self._on_blocked()

    def note_position(self, lsn: int) -> None:
        """A keepalive's WAL end or an empty transaction's end: nothing new to flush up to it."""
        with self._lock:
            self._acks.received(lsn)

    @property
    def ack_lsn(self) -> int:
        """The flush position to report to PostgreSQL."""
        with self._lock:
            return self._acks.safe_lsn

    @property
    def stalled(self) -> bool:
        """A batch failed every retry: acknowledgement is stuck until a restart re-sends it."""
        with self._lock:
            return self._acks.stalled

    @property
    def pending_events(self) -> int:
        with self._lock:
            return len(self._pending)

    @property
    def in_flight(self) -> int:
        with self._lock:
            return self._in_flight

    @property
    def held_bytes(self) -> int:
        """What the pending entries and the in-flight batches hold (0 without ``size_of``)."""
        with self._lock:
            return self._held()

    def flush_pending(self) -> None:
        """Start a flush of whatever is pending as soon as a slot is free (e.g. at shutdown)."""
        with self._lock:
            self._timer_due = True
            batch = self._take_batch()
        self._launch(batch)

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Flush everything pending and wait until nothing is pending or in flight."""
        self.flush_pending()
        with self._lock:
            return self._changed.wait_for(
                lambda: not self._pending and not self._in_flight, timeout=timeout
            )

    def close(self, timeout: float | None = None) -> bool:
        """Stop the timer, flush what is pending, wait for in-flight flushes, then stop the
        flush workers; True if idle. The scheduler takes no work after it."""
        self._stop.set()
        if self._timer.is_alive():
            self._timer.join()
        idle = self.wait_idle(timeout)
        # a worker stuck in a flush (the sink stalls) stays: it is a daemon thread
        with self._lock:
            workers = self._workers
        for _ in range(workers):
            self._flush_queue.put(None)
        return idle

    # --- internals (called with the lock held) --------------------------------------

    def _add(self, arrived: list[tuple[BatchKey, int, Any, int]]) -> None:
        pending = self._pending
        for key, version, built, size in arrived:
            stored = pending.get(key)
            if stored is None:
                if not pending:
                    self._pending_batch = self._acks.open_batch()
                pending[key] = (version, built, size)
                self._pending_bytes += size
            elif version >= stored[0]:
                pending[key] = (version, built, size)
                self._pending_bytes += size - stored[2]

    def _held_back(self) -> bool:
        """An add must wait for a flush to finish (lock held): every slot is busy and the
        map is full, or the rows held are at the budget; unless told to stop."""
        return (
            self._in_flight > 0
            and (
                (len(self._pending) >= self._max_pending and self._in_flight >= self._slots)
                or self._over_budget()
            )
            and not self._stop_waiting.is_set()
        )

    def _log_blocked(self) -> None:
        """Say why the receive loop waits, now and then (lock held)."""
        now = time.monotonic()
        if self._blocked_logged_at is not None and now - self._blocked_logged_at < (
            BLOCKED_LOG_INTERVAL_S
        ):
            return
        self._blocked_logged_at = now
        log.info(
            "receive loop waiting for a flush to finish: %d flushes in flight, %d changes "
            "pending, %.1f MB of rows held; PostgreSQL keeps the rest of the stream",
            self._in_flight,
            len(self._pending),
            self._held() / (1 << 20),
        )

    def _held(self) -> int:
        """Bytes of the pending entries and the in-flight batches (lock held)."""
        return self._pending_bytes + self._in_flight_bytes

    def _over_budget(self) -> bool:
        limit = self._max_held_bytes
        return limit is not None and self._held() >= limit

    def _take_batch(self) -> tuple[int, list[Any], int] | None:
        """Drain the pending map into a batch if a flush slot is free (lock held)."""
        if not self._pending or self._in_flight >= self._slots:
            return None
        batch_id = self._pending_batch
        entries = [built for _, built, _ in self._pending.values()]
        size, self._pending_bytes = self._pending_bytes, 0
        self._pending = {}
        self._timer_due = False
        self._in_flight += 1
        self._in_flight_bytes += size
        self.flushes_started += 1
        return batch_id, entries, size

    # --- outside the lock -------------------------------------------------------------

    def _arrived(self, events: list[ChangeEvent]) -> list[tuple[BatchKey, int, Any, int]]:
        """(key, version, what ``build`` made of it, its size) of each event with a run id."""
        build, size_of = self._build, self._size_of
        arrived = []
        for event in events:
            run_id = event.run.get("id")
            if not run_id:
                self.skipped_without_run_id += 1  # only the receive loop adds: no race
                log.warning("skipping a %s event without a run id", event.kind)
                continue
            built = event if build is None else build(event)
            size = 0 if size_of is None else size_of(built)
            arrived.append(((event.kind, run_id), event.version, built, size))
        return arrived

    def _launch(self, batch: tuple[int, list[Any], int] | None) -> None:
        """Prepare a taken batch here, then start its flush thread."""
        if batch is None:
            return
        batch_id, entries, size = batch
        try:
            prepared = entries if self._prepare is None else self._prepare(batch_id, entries)
        except BaseException as exc:  # the batch is not in ClickHouse: fail it like a flush
            self._flush_done(batch_id, len(entries), size, exc)
            if not isinstance(exc, Exception):
                raise
            return
        with self._lock:
            self._queued += 1
            # every in-flight batch holds a slot, so a worker busy at the slots' limit is
            # finishing its flush and takes this one next
            new_worker = self._queued > self._idle_workers and self._workers < self._slots
            if new_worker:
                self._workers += 1
        self._flush_queue.put((batch_id, prepared, len(entries), size))
        if new_worker:
            # daemon: a worker stuck on a stalled sink must not hold the process after close()
            # gave up on it; its batch is then unacknowledged, and PostgreSQL re-sends it
            threading.Thread(target=self._work, name="flush-worker", daemon=True).start()

    def _work(self) -> None:
        """A flush worker: run queued flushes until told to exit."""
        while True:
            with self._lock:
                self._idle_workers += 1
            item = self._flush_queue.get()
            with self._lock:
                self._idle_workers -= 1
                if item is None:
                    self._workers -= 1
                    return
                self._queued -= 1
            self._run_flush(*item)
            del item  # waiting for the next one, a worker must not keep this batch's bodies

    def _tick(self) -> None:
        while not self._stop.wait(self._interval_s):
            with self._lock:
                if not self._pending:
                    continue
                self._timer_due = True
                batch = self._take_batch()
            self._launch(batch)

    def _run_flush(self, batch_id: int, prepared: Any, events: int, size: int) -> None:
        error: BaseException | None = None
        try:
            self._flush(batch_id, prepared)
        except BaseException as exc:  # whatever went wrong, this batch is not in ClickHouse
            error = exc
        self._flush_done(batch_id, events, size, error)

    def _flush_done(
        self, batch_id: int, events: int, size: int, error: BaseException | None
    ) -> None:
        with self._lock:
            self._in_flight -= 1
            self._in_flight_bytes -= size
            self._acks.batch_done(batch_id, ok=error is None)
            if error is not None:
                self.flushes_failed += 1
            due = self._timer_due or len(self._pending) >= self._batch_size or self._over_budget()
            batch = self._take_batch() if due else None
            self._changed.notify_all()
        if error is not None:
            log.error(
                "flush of batch %d (%d events) failed every retry; acknowledgement is stopped "
                "until a restart re-sends it: %s",
                batch_id,
                events,
                error,
            )
            if self._on_flush_failed is not None:
                self._on_flush_failed(batch_id, error)
        self._launch(batch)
