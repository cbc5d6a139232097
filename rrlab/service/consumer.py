"""The consumer process: the runs replication service, run as its own OS process.

``python -m rrlab.service.consumer`` reads the slot with :class:`ReplicationStream`,
decodes pgoutput, assembles transactions, and hands them to the flush scheduler, which
writes ClickHouse rows through a sink and tells which LSN is safe to acknowledge. Under
the runner it reports once a second over the runner's channel; standalone it writes the
same reports as JSON lines to ``--stats-file``.

Connection URLs come from the environment (RRLAB_DATABASE_URL / RRLAB_CLICKHOUSE_URL set
by the runner, or DATABASE_URL / CLICKHOUSE_URL), never from argv.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import itertools
import json
import logging
import os
import random
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from rrlab.config import RunConfig, load_child_config
from rrlab.exceptions import (
    ClickHouseError,
    ConfigError,
    ReplicationError,
    RrlabError,
    SinkError,
    SlotInUseError,
)
from rrlab.infra.postgres import consumer_application_name
from rrlab.profiling.line_profile import install_from_environment
from rrlab.replication.pgoutput import (
    UNCHANGED_TOAST,
    Begin,
    Commit,
    Delete,
    Insert,
    RelationCache,
    Update,
    decode_message,
)
from rrlab.replication.stream import ReplicationStream
from rrlab.runner.ipc import ChildChannel
from rrlab.service.events import lsn_to_int
from rrlab.service.flusher import Flusher, FlushMetrics
from rrlab.service.process_stats import ProcessStats
from rrlab.service.retry import RetryPolicy, is_permanent
from rrlab.service.scheduler import FlushScheduler
from rrlab.service.sink_events import CONNECT_FAILED, RecordingSink, SinkEvents
from rrlab.service.sinks import ClickHouseSink, MockSink, Sink
from rrlab.service.transactions import TransactionAssembler
from rrlab.urls import mask_text

log = logging.getLogger("rrlab.consumer")
T = TypeVar("T")

READ_TIMEOUT_S = 0.1
SLOT_WAIT_S = 10.0
RECONNECT_TIMEOUT_S = 120.0  # PostgreSQL down longer than this ends the consumer (exit 2)
MAX_RESUME_DELAY_S = 10.0
# A consumer (re)started while ClickHouse is down waits this long for it before giving up:
# with the slot wait and start-up, it stays inside the runner's 60 s wait for "ready".
SINK_WAIT_S = 40.0
SINK_CONNECT_TIMEOUT_S = 10.0
MAPPING_FILES = ("mapping_task_runs_v2.tsv", "mapping_raw_task_runs_payload_v1.tsv")


def source_columns() -> frozenset[str]:
    """The TaskRun columns the transform reads (from the mapping files); the decoder skips
    the others without converting them."""
    reference = Path(__file__).resolve().parent.parent / "reference"
    columns: set[str] = set()
    for name in MAPPING_FILES:
        lines = (reference / name).read_text(encoding="utf-8").splitlines()[1:]
        for line in lines:
            source = line.split("\t")[1]
            columns.update(c.strip() for c in source.split(",") if c.strip() != "computed")
    return frozenset(columns)


SHUTDOWN_FLUSH_TIMEOUT_S = 8.0


class StopRequested(Exception):
    """Told to stop (signal or runner) while waiting for ClickHouse or the slot: exit 0."""


GC_GEN0_THRESHOLD = 20_000
MALLOC_TRIM_BYTES = 64 << 20
MALLOC_MMAP_BYTES = 32 << 20  # glibc's ceiling for this threshold (64-bit)
HEAP_RELEASE_INTERVAL_S = 10.0
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8  # glibc's mallopt numbers


class Consumer:
    """One replication service instance: stream → decode → transactions → scheduler → sink."""

    def __init__(
        self,
        config: RunConfig,
        database_url: str,
        sink: Sink,
        report,
        *,
        end_lsn: int | None = None,
        sink_events: SinkEvents | None = None,
        stop_requested: threading.Event | None = None,
        report_requested: threading.Event | None = None,
    ) -> None:
        self.config = config
        # like pg_recvlogical --endpos: stop (flush, acknowledge, exit) once the stream
        # has delivered everything up to this LSN; None streams until told to stop
        self.end_lsn = end_lsn
        self.database_url = _named_connection(database_url)
        # failed attempts and recoveries, timestamped, go to the runner in every report
        self.sink_events = sink_events or SinkEvents()
        self.sink = RecordingSink(sink, self.sink_events)
        self.report = report
        # made before start-up by main(), so a stop during the waits for ClickHouse and
        # for the slot is heard as well
        self.stop_requested = stop_requested or threading.Event()
        self.report_requested = report_requested or threading.Event()
        self._flushes: deque[FlushMetrics] = deque()  # appended by flush threads
        self.flusher = Flusher.from_config(
            self.sink, config.consumer, on_metrics=self._flushes.append
        )
        consumer = config.consumer
        self.scheduler = self._new_scheduler(start_lsn=0)
        self._lags: list[float] = []
        # the stream being read, and when the next 1 s report is due: also used by the
        # reports made while the receive loop is held back (_report_while_held_back)
        self._stream: ReplicationStream | None = None
        self._next_report = 0.0
        self.assembler = TransactionAssembler(
            self.scheduler,
            origin_generation=consumer.origin_generation,
            on_lag=self._lags.append,
        )
        self.relations = RelationCache(source_columns())
        self.stats = ProcessStats()
        self.records = 0
        self._reported: dict[str, int] = {}
        self.resumes = 0
        self._fatal_flush_error: BaseException | None = None
        self._failed_resumes = 0  # in a row, without acknowledgement moving on
        self._ack_at_failure = -1

    def _new_scheduler(self, start_lsn: int) -> FlushScheduler:
        consumer = self.config.consumer
        return FlushScheduler(
            self.flusher.send,
            build=self.flusher.build,
            prepare=self.flusher.prepare,
            flush_batch_size=consumer.flush_batch_size,
            flush_interval_ms=consumer.flush_interval_ms,
            max_flush_concurrency=consumer.max_flush_concurrency,
            size_of=self.flusher.held_bytes,
            max_held_bytes=consumer.max_buffered_mb << 20,
            start_lsn=start_lsn,
            on_flush_failed=self._flush_failed,
            stop_waiting=self.stop_requested,
            on_blocked=self._report_while_held_back,
        )

    def run(self) -> None:
        consumer = self.config.consumer
        stream = self._open_stream()
        self.scheduler.start()
        _tune_garbage_collector()
        next_release = time.monotonic() + HEAP_RELEASE_INTERVAL_S
        self.report({"type": "ready", "pid": os.getpid(), "t": time.time()})
        log.info(
            "streaming slot %s (publication %s)", consumer.slot_name, consumer.publication_name
        )
        self._next_report = time.monotonic() + 1.0
        last_reply_request = 0.0
        try:
            while not self.stop_requested.is_set():
                try:
                    messages = stream.read(READ_TIMEOUT_S)
                except ReplicationError as exc:
                    stream = self._resume(stream, exc)
                    continue
                busy_from = time.perf_counter()
                for message in messages:
                    self._handle(message.payload)
                if not self.assembler.in_transaction and stream.server_wal_end:
                    self.scheduler.note_position(stream.server_wal_end)
                    if self.end_lsn is not None and stream.server_wal_end >= self.end_lsn:
                        break
                stream.flushed_lsn = max(stream.flushed_lsn, self.scheduler.ack_lsn)
                self.stats.busy(time.perf_counter() - busy_from)
                now = time.monotonic()
                idle = not messages and not self.scheduler.pending_events
                if idle and now - last_reply_request >= consumer.status_interval_s:
                    # ask for a keepalive: its WAL end lets an idle consumer acknowledge
                    # WAL that carried no TaskRun changes, so catch-up checks complete
                    try:
                        stream.send_status(self.scheduler.ack_lsn, reply=True)
                    except ReplicationError as exc:
                        stream = self._resume(stream, exc)
                    last_reply_request = now
                if now >= next_release:
                    _release_free_heap()
                    next_release = now + HEAP_RELEASE_INTERVAL_S
                if now >= self._next_report or self.report_requested.is_set():
                    self._report_now(stream, now)
                    if self.scheduler.stalled:
                        stream = self._resume_after_failed_flush(stream)
        finally:
            if self.stop_requested.is_set():
                log.info(
                    "stopping: flushing what is buffered for up to %.0f s; a second signal "
                    "exits at once without acknowledging it",
                    SHUTDOWN_FLUSH_TIMEOUT_S,
                )
            idle = self.scheduler.close(timeout=SHUTDOWN_FLUSH_TIMEOUT_S)
            if not stream.closed:
                stream.send_status(self.scheduler.ack_lsn)
                stream.close()
            self._report(stream)
            self.sink.close()
            log.info(
                "stopped (%s)", "all flushed" if idle else "unflushed work left unacknowledged"
            )

    def _open_stream(
        self, retry_on: type[ReplicationError] = SlotInUseError, patience_s: float = SLOT_WAIT_S
    ) -> ReplicationStream:
        """Start streaming; retry ``retry_on`` errors for ``patience_s`` with capped backoff.

        A consumer killed a moment ago leaves a walsender that notices its death only
        when it next reads from the socket; a restarted consumer must not fail on that.
        """
        consumer = self.config.consumer
        deadline = time.monotonic() + patience_s
        for attempt in itertools.count():
            try:
                self._stream = ReplicationStream(
                    self.database_url,
                    consumer.slot_name,
                    consumer.publication_name,
                    status_interval_s=consumer.status_interval_s,
                )
                return self._stream
            except retry_on as exc:
                if self.stop_requested.is_set():
                    raise StopRequested from None
                if time.monotonic() > deadline:
                    raise
                log.info("cannot stream yet (%s); retrying", mask_text(str(exc)))
                if self.stop_requested.wait(min(0.5 * 2**attempt, MAX_RESUME_DELAY_S)):
                    raise StopRequested from None
        raise AssertionError("unreachable")

    def _resume(self, stream: ReplicationStream, reason: BaseException) -> ReplicationStream:
        """Lost the replication connection (PostgreSQL restarted, network): reconnect and
        resume from the slot's confirmed position, keeping the batches already received.

        PostgreSQL re-sends every transaction past the position last acknowledged; the ones
        already in a batch are written twice, which ReplacingMergeTree makes harmless.
        """
        self.resumes += 1
        self._warn(f"replication connection lost; reconnecting for up to "
                   f"{RECONNECT_TIMEOUT_S:.0f} s: {mask_text(str(reason))}")  # fmt: skip
        with contextlib.suppress(ReplicationError):
            stream.close()
        self.assembler.resume()
        fresh = self._open_stream(retry_on=ReplicationError, patience_s=RECONNECT_TIMEOUT_S)
        fresh.flushed_lsn = self.scheduler.ack_lsn
        self._warn(f"replication resumed from the slot (resume {self.resumes})")
        return fresh

    def _resume_after_failed_flush(self, stream: ReplicationStream) -> ReplicationStream:
        """A batch failed every retry (the sink is down): start over from the slot.

        The stalled scheduler is replaced by a fresh one that starts at the last safe
        position, and the stream restarts from the slot, so PostgreSQL re-sends the failed
        batch's transactions. Successive attempts wait longer (capped), so a long outage
        costs a retry every MAX_RESUME_DELAY_S and a loud log line, and no lost change. A
        permanent error (authentication, schema) ends the consumer instead: retrying cannot
        fix it.
        """
        if self._fatal_flush_error is not None:
            raise SinkError(
                f"ClickHouse refused a batch with a permanent error; fix it and restart: "
                f"{mask_text(str(self._fatal_flush_error))}"
            )
        stalled = self.scheduler
        if stalled.ack_lsn > self._ack_at_failure:
            self._failed_resumes = 0
        self._ack_at_failure = stalled.ack_lsn
        stalled.close(timeout=0)  # flushes still retrying finish in the background
        self.scheduler = self._new_scheduler(start_lsn=stalled.ack_lsn)
        self.scheduler.start()
        self.assembler.resume(self.scheduler)
        delay_s = min(0.5 * 2**self._failed_resumes, MAX_RESUME_DELAY_S)
        self._failed_resumes += 1
        self.sink_events.reread()
        self._warn(f"a batch failed every retry; re-reading from the slot in {delay_s:.1f} s")
        self.stop_requested.wait(delay_s)
        return self._resume(stream, SinkError("a batch failed every retry"))

    def _warn(self, message: str) -> None:
        log.warning("%s", message)
        self.report({"type": "log", "level": logging.WARNING, "message": message})

    def _flush_failed(self, batch_id: int, error: BaseException) -> None:
        if is_permanent(error.__cause__ or error):
            self._fatal_flush_error = error
        self.report(
            {
                "type": "log",
                "level": logging.ERROR,
                "message": f"flush of batch {batch_id} failed every retry; the consumer "
                f"re-reads it from the slot: {mask_text(str(error))}",
            }
        )

    def _handle(self, payload: memoryview) -> None:
        message = decode_message(payload, self.relations, decode_old=False)
        kind = type(message)
        if kind is Insert:
            self.records += 1
            self.assembler.change("insert", message.new)
        elif kind is Update:
            self.records += 1
            new = message.new
            if message.old_kind == "O" and UNCHANGED_TOAST in new.values():
                # TOASTed values the update did not touch come only in the old tuple
                full = decode_message(payload, self.relations, decode_old=True)
                old = full.old
                new = {
                    name: old[name] if value is UNCHANGED_TOAST else value
                    for name, value in full.new.items()
                }
            self.assembler.change("update", new)
        elif kind is Delete:
            self.records += 1
            self.assembler.change("delete", message.old)
        elif kind is Begin:
            self.assembler.begin(message.xid, message.final_lsn, message.commit_time_us)
        elif kind is Commit:
            self.assembler.commit(message.end_lsn, message.commit_time_us)

    def _report_now(self, stream: ReplicationStream, now: float) -> None:
        """The 1 s report (or the one the runner asked for); the next is due in a second."""
        self._report(stream, requested=self.report_requested.is_set())
        self.report_requested.clear()
        self._next_report = now + 1.0

    def _report_while_held_back(self) -> None:
        """The scheduler calls this while the receive loop waits for a flush to finish (the
        byte budget or the pending cap, e.g. behind a stalled ClickHouse): the reports go on,
        and so do status updates, which keep the walsender from ending a connection that has
        been silent for wal_sender_timeout (60 s by default) while the flush retries."""
        now = time.monotonic()
        if now < self._next_report and not self.report_requested.is_set():
            return
        stream = self._stream
        stream.flushed_lsn = max(stream.flushed_lsn, self.scheduler.ack_lsn)
        with contextlib.suppress(ReplicationError):  # the receive loop's next read resumes it
            stream.send_status(stream.flushed_lsn)
        self._report_now(stream, now)

    def _report(self, stream: ReplicationStream, requested: bool = False) -> None:
        """One report per second: counts since the previous report, and current state."""
        lags, self._lags[:] = list(self._lags), []
        flushes = [self._flushes.popleft() for _ in range(len(self._flushes))]
        totals = {
            "records": self.records,
            **{f"{kind}s": count for kind, count in self.assembler.events_by_kind.items()},
            "transactions": self.assembler.transactions,
        }
        since_last = {key: value - self._reported.get(key, 0) for key, value in totals.items()}
        self._reported = totals
        self.report(
            {
                "type": "stats",
                "t": time.time(),
                "pid": os.getpid(),
                "requested": requested,
                **since_last,
                "lag_ms": lags,
                "flush_records": [_flush_record(f) for f in flushes],
                "flushes": len(flushes),
                "rows_flushed": sum(f.task_rows for f in flushes),
                "pending": self.scheduler.pending_events,
                "in_flight": self.scheduler.in_flight,
                "held_bytes": self.scheduler.held_bytes,
                "received_lsn": stream.last_received_lsn,
                "acked_lsn": stream.flushed_lsn,
                "stalled": self.scheduler.stalled,
                "resumes": self.resumes,
                "sink_events": self.sink_events.drain(),
                **self.stats.sample(),
            }
        )


def _named_connection(database_url: str) -> str:
    """The URL with an application name naming this process (unless it names one), so that
    a second consumer told the slot is in use learns which consumer holds it."""
    try:
        if "application_name" in conninfo_to_dict(database_url):
            return database_url
    except psycopg.ProgrammingError:
        return database_url  # ReplicationStream reports the malformed URL
    return make_conninfo(database_url, application_name=consumer_application_name(os.getpid()))


def _glibc(name: str) -> Callable[..., int] | None:
    """glibc's function ``name``, or None elsewhere."""
    try:
        return getattr(ctypes.CDLL(None), name)
    except (OSError, AttributeError):
        return None


_mallopt, _malloc_trim = _glibc("mallopt"), _glibc("malloc_trim")


def _tune_malloc() -> None:
    """Keep freed heap memory in the process between flushes, in one arena (glibc's
    ``malloc``; elsewhere a no-op). Call it before the process starts threads.

    Each pending change holds its encoded rows (~1–2 KB, beyond Python's small-object
    allocator) until its flush frees a whole batch of them at once. With glibc's default
    thresholds, in about half of the processes that left a free heap top above the trim
    threshold on every flush: the heap was returned to the kernel and faulted back in,
    ~4 page faults and ~10 µs more CPU per replicated row. Fixed thresholds (which also
    end glibc's dynamic adjustment of them) keep up to MALLOC_TRIM_BYTES free in the heap
    and serve blocks below MALLOC_MMAP_BYTES (flush bodies) from it.

    One arena for all threads: glibc gives each thread its own, and a flush thread's arena
    kept up to MALLOC_TRIM_BYTES of free top that :func:`_release_free_heap` cannot return
    (it trims only the main arena's top): ~200 MB beyond the live heap with four flush
    threads copying big bodies. The GIL serializes nearly every allocation anyway.
    """
    if _mallopt is None:
        return
    _mallopt(_M_ARENA_MAX, 1)
    _mallopt(_M_TRIM_THRESHOLD, MALLOC_TRIM_BYTES)
    _mallopt(_M_MMAP_THRESHOLD, MALLOC_MMAP_BYTES)


def _release_free_heap() -> None:
    """Give every free page of the heap back to the kernel (glibc; elsewhere a no-op).

    The kept memory is never returned by itself: the heap stays at the largest extent it
    ever had, and holes between live blocks stay resident. After a slow insert piled up
    pending changes and big flush bodies, that was +250 MB for the rest of a run with
    5,000-row batches. The receive loop calls this every HEAP_RELEASE_INTERVAL_S, so the
    pages the next flushes need are faulted back in once per interval, not once per flush.
    """
    if _malloc_trim is not None:
        _malloc_trim(0)


def _tune_garbage_collector() -> None:
    """Fewer, cheaper cyclic-GC passes: every replicated row allocates ~100 acyclic objects,
    so the default gen-0 threshold (700) ran a collection every few rows, and each full
    pass walked the ~100k objects left by imports. Freezing those and collecting gen 0
    every GC_GEN0_THRESHOLD allocations took ~15% off the consumer's CPU per row."""
    gc.freeze()
    gc.set_threshold(GC_GEN0_THRESHOLD, 20, 20)


def _flush_record(metrics: FlushMetrics) -> dict[str, Any]:
    return {
        "batch_size": metrics.batch_size,
        "task_rows": metrics.task_rows,
        "payload_rows": metrics.payload_rows,
        "bytes": metrics.inserted.bytes,
        "duration_ms": metrics.duration_ms,
        "retries": metrics.retries,
        "errors": metrics.errors,
    }


def _sink_for(
    config: RunConfig,
    events: SinkEvents,
    report: Callable[[dict], None],
    stop: threading.Event,
) -> Sink:
    if config.clickhouse.sink == "mock":
        return MockSink(config.consumer.mock_delay_ms)
    url = os.environ.get("RRLAB_CLICKHOUSE_URL") or os.environ.get("CLICKHOUSE_URL")
    if not url:
        raise RrlabError(
            "The consumer needs a ClickHouse URL: set CLICKHOUSE_URL "
            "(https://host:8443?username=...&password=...) or use --sink mock."
        )
    from clickhouse_connect.driver.httputil import get_pool_manager
    from urllib3 import Timeout

    from rrlab.infra.clickhouse import clickhouse_client
    from rrlab.urls import parse_clickhouse_url

    consumer = config.consumer
    target = parse_clickhouse_url(url)  # a malformed URL fails here, before any waiting
    # one pooled HTTP connection per flush that may be in flight
    pool = get_pool_manager(maxsize=consumer.max_flush_concurrency)

    def connect(time_left_s: float) -> Any:
        # an attempt never outlasts the wait: a stalled server holds a request until timeout
        timeout_s = max(1.0, min(consumer.insert_timeout_s, time_left_s))
        client = clickhouse_client(
            target,
            database=config.clickhouse.database,
            pool_mgr=pool,
            connect_timeout=min(SINK_CONNECT_TIMEOUT_S, timeout_s),
            send_receive_timeout=timeout_s,
        )
        client.timeout = Timeout(connect=SINK_CONNECT_TIMEOUT_S, read=consumer.insert_timeout_s)
        return client

    policy = RetryPolicy(
        base_delay_ms=consumer.insert_base_delay_ms, max_delay_ms=consumer.insert_max_delay_ms
    )
    client = wait_for_sink(connect, policy, events, report, stop=stop)
    return ClickHouseSink(client, max_poison_strips=consumer.max_poison_strips_per_batch)


def wait_for_sink(
    connect: Callable[[float], T],
    policy: RetryPolicy,
    events: SinkEvents,
    report: Callable[[dict], None],
    *,
    stop: threading.Event,
    wait_s: float = SINK_WAIT_S,
) -> T:
    """``connect(time_left_s)`` until ClickHouse answers, waiting as insert retries do.

    A consumer restarted during an outage must not die at start-up (the runner would count
    it against its restart budget). An unreachable, stalled or overloaded server is waited
    for, up to ``wait_s`` in total, each wait logged; a server that answers with a permanent
    error (wrong password, unknown database, no privilege) fails at once, as waiting cannot
    fix it. Each failed attempt is a CONNECT_FAILED event, so the outage window includes it.
    """
    deadline = time.monotonic() + wait_s
    for attempt in itertools.count(1):
        sent_at = time.time()
        try:
            client = connect(deadline - time.monotonic())
        except ClickHouseError as exc:
            # clickhouse_client raises its clear error "from None": the server's own error,
            # with its exception code, is still the context
            answer = exc.__context__
            if answer is None or is_permanent(answer):
                raise
            events.failed(CONNECT_FAILED, sent_at)
            delay_s = policy.delay_ms(attempt, random.random()) / 1000
            if time.monotonic() + delay_s > deadline:
                raise ClickHouseError(
                    f"{exc} The consumer waited {wait_s:.0f} s for it and gives up."
                ) from None
            message = (
                f"ClickHouse is not answering yet (attempt {attempt}); waiting {delay_s:.1f} s, "
                f"at most {wait_s:.0f} s in all: {exc}"
            )
            log.warning("%s", message)
            report({"type": "log", "level": logging.WARNING, "message": message})
            if stop.wait(delay_s):  # a signal or the runner said stop
                raise StopRequested from None
            continue
        events.succeeded()
        return client
    raise AssertionError("unreachable")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rrlab.service.consumer", description=__doc__)
    parser.add_argument("--config", help="run configuration (config.json or a params file)")
    parser.add_argument("--sink", choices=["chdb", "clickhouse", "mock"], help="override the sink")
    parser.add_argument("--stats-file", help="standalone: write the 1 s reports here (JSON lines)")
    parser.add_argument(
        "--end-lsn",
        metavar="LSN",
        help="stop once everything up to LSN (e.g. 0/1A2B3C4) is flushed and acknowledged",
    )
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    _tune_malloc()
    install_from_environment()  # line-profiler, when the runner asked for it
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    channel = ChildChannel.from_environment()
    stop, report_requested = threading.Event(), threading.Event()
    _install_signal_handlers(stop)
    if channel is not None:
        threading.Thread(
            target=_follow_commands, args=(channel, stop, report_requested), daemon=True
        ).start()
    try:
        config = load_child_config(args.config)
        if args.sink:
            config = config.with_overrides({"clickhouse.sink": args.sink})
        database_url = os.environ.get("RRLAB_DATABASE_URL") or os.environ.get("DATABASE_URL")
        if not database_url:
            raise RrlabError("The consumer needs DATABASE_URL (the profiling database).")
        report = _reporter(channel, args.stats_file)
        end_lsn = _parse_end_lsn(args.end_lsn) if args.end_lsn else None
        events = SinkEvents()
        sink = _sink_for(config, events, report, stop)
        consumer = Consumer(
            config,
            database_url,
            sink,
            report,
            end_lsn=end_lsn,
            sink_events=events,
            stop_requested=stop,
            report_requested=report_requested,
        )
        consumer.run()
    except StopRequested:
        log.info("stopped while waiting for ClickHouse or the replication slot")
        return 0
    except RrlabError as exc:
        print(f"consumer: {mask_text(str(exc))}", file=sys.stderr)
        return 2
    return 0


def _parse_end_lsn(text: str) -> int:
    try:
        return lsn_to_int(text)
    except ValueError:
        raise ConfigError(
            f"--end-lsn {text!r} is not an LSN: give it as PostgreSQL prints it, e.g. 0/1A2B3C4."
        ) from None


def _reporter(channel: ChildChannel | None, stats_file: str | None):
    if channel is not None:
        return channel.send
    handle = open(Path(stats_file), "a", encoding="utf-8") if stats_file else None  # noqa: SIM115

    def write(body: dict[str, Any]) -> None:
        if handle is not None:
            handle.write(json.dumps(body) + "\n")
            handle.flush()

    return write


def _follow_commands(
    channel: ChildChannel, stop: threading.Event, report_requested: threading.Event
) -> None:
    while True:
        command = channel.next_command() or {}
        if command.get("cmd") == "report":
            report_requested.set()
        elif command.get("cmd") == "shutdown":
            stop.set()
            return


def _install_signal_handlers(stop: threading.Event) -> None:
    def on_signal(signum, frame):
        if stop.is_set():
            os._exit(128 + signum)  # second signal: leave now, unflushed work stays unacknowledged
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)


if __name__ == "__main__":
    sys.exit(main())
