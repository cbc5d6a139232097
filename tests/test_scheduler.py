"""FlushScheduler: the dedup rule, flush triggers, the concurrency bound and the ack position."""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from rrlab.service.events import ChangeEvent, Transaction
from rrlab.service.scheduler import FlushScheduler

WAIT = 30.0  # liveness bound only; nothing asserts on time


def txn(end_lsn: int, *changes: tuple[str, str | None], version: int | None = None) -> Transaction:
    v = end_lsn if version is None else version
    events = [
        ChangeEvent(kind, {"id": run_id, "tag": f"{kind}@{end_lsn}"} if run_id else {}, v)  # type: ignore[arg-type]
        for kind, run_id in changes
    ]
    return Transaction(xid=end_lsn, commit_lsn=end_lsn - 1, commit_end_lsn=end_lsn, events=events)


class GatedFlush:
    """A flush function that records batches and can hold them until released."""

    def __init__(self, hold: bool = False) -> None:
        self.batches: list[tuple[int, list[ChangeEvent]]] = []
        self.started = threading.Semaphore(0)
        self._release: dict[int, threading.Event] = {}
        self._fail: set[int] = set()
        self._hold = hold
        self._lock = threading.Lock()
        self.running = 0
        self.max_running = 0

    def __call__(self, batch_id: int, events: list[ChangeEvent]) -> None:
        with self._lock:
            self.batches.append((batch_id, events))
            self.running += 1
            self.max_running = max(self.max_running, self.running)
            gate = self._release.setdefault(batch_id, threading.Event())
        self.started.release()
        try:
            if self._hold:
                assert gate.wait(WAIT)
            if batch_id in self._fail:
                raise RuntimeError(f"batch {batch_id} failed")
        finally:
            with self._lock:
                self.running -= 1

    def release(self, batch_id: int, fail: bool = False) -> None:
        with self._lock:
            if fail:
                self._fail.add(batch_id)
            self._release.setdefault(batch_id, threading.Event()).set()

    def wait_started(self, count: int) -> None:
        for _ in range(count):
            assert self.started.acquire(timeout=WAIT)


@contextmanager
def scheduler(flush: GatedFlush, **options: Any) -> Iterator[FlushScheduler]:
    settings: dict[str, Any] = {
        "flush_batch_size": 3,
        "flush_interval_ms": 600_000,
        "max_flush_concurrency": 2,
    }
    settings.update(options)
    sched = FlushScheduler(flush, **settings)
    sched.start()
    try:
        yield sched
    finally:
        for batch_id in range(1, 1000):
            flush.release(batch_id)
        sched.close(timeout=WAIT)


def wait_until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, "condition never became true"
        time.sleep(0.001)


def add_in_thread(
    sched: FlushScheduler, transaction: Transaction
) -> tuple[threading.Thread, threading.Event]:
    """Add ``transaction`` from another thread (the add may block); the event is set once
    the add returned."""
    done = threading.Event()

    def add() -> None:
        sched.add_transaction(transaction)
        done.set()

    adder = threading.Thread(target=add)
    adder.start()
    return adder, done


def flushed(flush: GatedFlush) -> dict[tuple[str, str], str]:
    return {(e.kind, e.run["id"]): e.run["tag"] for _, events in flush.batches for e in events}


def test_newer_version_wins_same_version_last_wins_and_kinds_are_kept_apart() -> None:
    flush = GatedFlush()
    with scheduler(flush, flush_batch_size=100) as sched:
        sched.add_transaction(txn(10, ("insert", "run_a"), ("update", "run_a")))
        sched.add_transaction(txn(20, ("update", "run_a"), ("update", "run_b")))
        # same transaction: the last event of a key wins
        sched.add_transaction(txn(30, ("update", "run_c"), ("update", "run_c")))
        sched.add_transaction(txn(30, ("update", "run_c")))
        # an older version never replaces a newer one
        sched.add_transaction(txn(40, ("update", "run_b"), version=5))
        assert sched.pending_events == 4
        assert sched.wait_idle(WAIT)
    assert len(flush.batches) == 1
    assert flushed(flush) == {
        ("insert", "run_a"): "insert@10",
        ("update", "run_a"): "update@20",
        ("update", "run_b"): "update@20",
        ("update", "run_c"): "update@30",
    }


def test_same_version_later_event_replaces_stored_one() -> None:
    flush = GatedFlush()
    with scheduler(flush, flush_batch_size=100) as sched:
        first = txn(30, ("update", "run_c"))
        second = txn(30, ("update", "run_c"))
        second.events[0].run["tag"] = "second"
        sched.add_transaction(first)
        sched.add_transaction(second)
        assert sched.wait_idle(WAIT)
    assert flushed(flush) == {("update", "run_c"): "second"}


def test_events_without_run_id_are_skipped_and_counted() -> None:
    flush = GatedFlush()
    with scheduler(flush, flush_batch_size=100) as sched:
        sched.add_transaction(txn(10, ("delete", None), ("insert", "run_a")))
        assert sched.skipped_without_run_id == 1
        assert sched.wait_idle(WAIT)
    assert flushed(flush) == {("insert", "run_a"): "insert@10"}


def test_reaching_the_batch_size_drains_the_whole_map() -> None:
    flush = GatedFlush(hold=True)
    with scheduler(flush, flush_batch_size=3) as sched:
        sched.add_transaction(txn(10, ("insert", "run_a"), ("insert", "run_b")))
        assert flush.batches == [] and sched.pending_events == 2
        sched.add_transaction(txn(20, ("insert", "run_c"), ("insert", "run_d")))
        flush.wait_started(1)
        assert sched.pending_events == 0
        assert sorted(e.run["id"] for e in flush.batches[0][1]) == [
            "run_a",
            "run_b",
            "run_c",
            "run_d",
        ]
        assert sched.ack_lsn == 0
        flush.release(flush.batches[0][0])
        assert sched.wait_idle(WAIT)
        assert sched.ack_lsn == 20


def test_the_timer_flushes_a_small_batch() -> None:
    flush = GatedFlush()
    with scheduler(flush, flush_batch_size=1000, flush_interval_ms=10) as sched:
        sched.add_transaction(txn(10, ("insert", "run_a")))
        flush.wait_started(1)  # no size trigger: only the timer can have started it
        assert [e.run["id"] for e in flush.batches[0][1]] == ["run_a"]
        assert sched.wait_idle(WAIT)


def test_at_most_max_flush_concurrency_flushes_run_and_the_rest_coalesces() -> None:
    flush = GatedFlush(hold=True)
    with scheduler(flush, flush_batch_size=1, max_flush_concurrency=2) as sched:
        sched.add_transaction(txn(10, ("insert", "run_a")))
        sched.add_transaction(txn(20, ("insert", "run_b")))
        flush.wait_started(2)
        sched.add_transaction(txn(30, ("update", "run_a")))
        sched.add_transaction(txn(40, ("update", "run_a")))
        sched.add_transaction(txn(50, ("update", "run_b")))
        assert sched.in_flight == 2 and sched.pending_events == 2
        flush.release(1)
        flush.wait_started(1)
        assert flushed(flush)[("update", "run_a")] == "update@40"
        assert len(flush.batches[2][1]) == 2
        for batch_id in (2, 3):
            flush.release(batch_id)
        assert sched.wait_idle(WAIT)
        assert sched.ack_lsn == 50
    assert flush.max_running == 2


def test_a_full_map_blocks_the_receive_loop_until_a_slot_frees() -> None:
    flush = GatedFlush(hold=True)
    with scheduler(
        flush, flush_batch_size=1, max_flush_concurrency=1, max_pending_events=2
    ) as sched:
        sched.add_transaction(txn(10, ("insert", "run_a")))
        flush.wait_started(1)
        sched.add_transaction(txn(20, ("insert", "run_b")))
        adder, done = add_in_thread(sched, txn(30, ("insert", "run_c")))
        wait_until(lambda: sched.blocked_adds == 1)
        assert not done.is_set()
        flush.release(1)
        flush.wait_started(1)
        assert done.wait(WAIT)
        adder.join()
        assert sched.blocked_adds == 1
        assert sorted(e.run["id"] for e in flush.batches[1][1]) == ["run_b", "run_c"]


def tag_bytes(event: ChangeEvent) -> int:
    return len(event.run["tag"])  # "insert@10": 9


def test_held_bytes_count_what_is_pending_and_in_flight_until_its_flush_ends() -> None:
    flush = GatedFlush(hold=True)
    with scheduler(flush, flush_batch_size=100, size_of=tag_bytes, max_held_bytes=1000) as sched:
        sched.add_transaction(txn(10, ("insert", "run_a"), ("insert", "run_b")))
        sched.add_transaction(txn(1000, ("insert", "run_a")))  # replaces run_a's 9 bytes
        assert sched.held_bytes == 11 + 9
        sched.flush_pending()
        flush.wait_started(1)
        sched.add_transaction(txn(20, ("update", "run_c")))
        assert sched.held_bytes == 20 + 9  # in flight + pending
        flush.release(1)
        wait_until(lambda: sched.held_bytes == 9)
        flush.release(2)
        assert sched.wait_idle(WAIT)
        assert sched.held_bytes == 0


def test_held_bytes_at_the_limit_flush_at_once_and_block_until_a_flush_frees_them() -> None:
    flush = GatedFlush(hold=True)
    with scheduler(
        flush, flush_batch_size=100, max_flush_concurrency=4, size_of=tag_bytes, max_held_bytes=27
    ) as sched:
        sched.add_transaction(txn(10, ("insert", "run_a")))
        sched.add_transaction(txn(20, ("insert", "run_b")))
        assert not flush.batches and sched.blocked_adds == 0  # 18 bytes: under the limit
        adder, done = add_in_thread(sched, txn(30, ("insert", "run_c")))
        flush.wait_started(1)  # 27 bytes: the map is flushed though far from its batch size
        assert sorted(e.run["id"] for e in flush.batches[0][1]) == ["run_a", "run_b", "run_c"]
        wait_until(lambda: sched.blocked_adds == 1)
        assert not done.is_set()  # free slots do not help: the bytes are still held
        flush.release(1)
        assert done.wait(WAIT)
        adder.join()
        assert sched.held_bytes == 0


def test_a_blocked_add_reports_and_returns_when_told_to_stop_though_the_flush_is_stuck(
    caplog,
) -> None:
    flush = GatedFlush(hold=True)
    stop = threading.Event()
    held_while_blocked: list[int] = []
    with scheduler(
        flush,
        flush_batch_size=100,
        size_of=tag_bytes,
        max_held_bytes=18,
        stop_waiting=stop,
        # reads the scheduler, so it must be called without the lock held
        on_blocked=lambda: held_while_blocked.append(sched.held_bytes),
    ) as sched:
        with caplog.at_level(logging.INFO, logger="rrlab.service.scheduler"):
            sched.add_transaction(txn(10, ("insert", "run_a")))
            assert held_while_blocked == []
            adder, done = add_in_thread(sched, txn(20, ("insert", "run_b")))
            flush.wait_started(1)
            wait_until(lambda: sched.blocked_adds == 1)
        assert "receive loop waiting for a flush to finish: 1 flushes in flight" in caplog.text
        assert not done.wait(0.5)  # still blocked: the flush holds its 18 bytes
        assert held_while_blocked[-1] == 18  # told, every BLOCKED_CHECK_S
        stop.set()
        assert done.wait(WAIT)  # flush 1 is still stuck
        adder.join()
        assert sched.in_flight == 1 and sched.ack_lsn == 0
        # once stopping, an add over the budget no longer waits, and its change still flushes
        sched.add_transaction(txn(30, ("insert", "run_c")))
        assert sched.in_flight == 2 and sched.blocked_adds == 1
        assert [e.run["id"] for e in flush.batches[1][1]] == ["run_c"]


def test_an_idle_flush_worker_keeps_nothing_of_its_last_batch() -> None:
    class Body:
        """Stands for a prepared batch's bodies."""

    bodies: list[weakref.ref[Body]] = []

    def prepare(batch_id: int, events: list[Any]) -> Body:
        body = Body()
        bodies.append(weakref.ref(body))
        return body

    sched = FlushScheduler(
        lambda batch_id, body: None,
        prepare=prepare,
        flush_batch_size=1,
        flush_interval_ms=600_000,
        max_flush_concurrency=1,
    )
    sched.start()
    try:
        sched.add_transaction(txn(10, ("insert", "run_a")))
        assert sched.wait_idle(WAIT)
        wait_until(lambda: bodies[0]() is None)  # the worker now waits for its next flush
    finally:
        sched.close(timeout=WAIT)


def test_keepalive_positions_are_acked_only_when_nothing_is_unflushed() -> None:
    flush = GatedFlush(hold=True)
    with scheduler(flush, flush_batch_size=100) as sched:
        sched.note_position(5)
        assert sched.ack_lsn == 5
        sched.add_transaction(txn(10, ("insert", "run_a")))
        sched.note_position(15)
        assert sched.ack_lsn == 5
        sched.flush_pending()
        flush.wait_started(1)
        assert sched.ack_lsn == 5
        flush.release(1)
        assert sched.wait_idle(WAIT)
        assert sched.ack_lsn == 15


def test_a_failed_flush_stops_acknowledgement_and_is_reported() -> None:
    flush = GatedFlush(hold=True)
    failures: list[int] = []
    on_failed = lambda batch_id, exc: failures.append(batch_id)  # noqa: E731
    with scheduler(flush, flush_batch_size=1, on_flush_failed=on_failed) as sched:
        sched.add_transaction(txn(10, ("insert", "run_a")))
        sched.add_transaction(txn(20, ("insert", "run_b")))
        flush.wait_started(2)
        flush.release(1, fail=True)
        flush.release(2)
        assert sched.wait_idle(WAIT)
        sched.note_position(99)
        assert sched.ack_lsn == 0
        assert sched.stalled and sched.flushes_failed == 1
    assert failures == [1]


def test_prepare_runs_in_the_draining_thread_and_flush_gets_its_result() -> None:
    """The CPU step runs in the receive loop's thread, only the insert in the flush thread."""
    seen: dict[str, Any] = {}

    def prepare(batch_id: int, events: list[ChangeEvent]) -> tuple[str, ...]:
        seen["prepare_thread"] = threading.current_thread()
        return tuple(e.run["id"] for e in events)

    def flush(batch_id: int, prepared: tuple[str, ...]) -> None:
        seen["flush_thread"], seen["prepared"] = threading.current_thread(), prepared

    sched = FlushScheduler(
        flush, prepare=prepare, flush_batch_size=2, flush_interval_ms=600_000,
        max_flush_concurrency=2,
    )  # fmt: skip
    sched.start()
    sched.add_transaction(txn(10, ("insert", "run_a"), ("insert", "run_b")))
    assert sched.close(timeout=WAIT)
    assert seen["prepare_thread"] is threading.current_thread()
    assert seen["flush_thread"] is not threading.current_thread()
    assert seen["prepared"] == ("run_a", "run_b")
    assert sched.ack_lsn == 10


def test_a_batch_that_fails_to_prepare_fails_like_a_flush() -> None:
    """A prepare error (a transform bug) must neither escape into the receive loop nor let
    the batch be acknowledged, and must free its flush slot."""
    failures: list[tuple[int, str]] = []
    flushes: list[int] = []

    def prepare(batch_id: int, events: list[ChangeEvent]) -> list[ChangeEvent]:
        if any(e.run["id"] == "run_bad" for e in events):
            raise ValueError("cannot build a row")
        return events

    sched = FlushScheduler(
        lambda batch_id, prepared: flushes.append(batch_id),
        prepare=prepare,
        flush_batch_size=1,
        flush_interval_ms=600_000,
        max_flush_concurrency=1,
        on_flush_failed=lambda batch_id, exc: failures.append((batch_id, str(exc))),
    )
    sched.start()
    sched.add_transaction(txn(10, ("insert", "run_bad")))
    sched.add_transaction(txn(20, ("insert", "run_ok")))
    assert sched.close(timeout=WAIT)
    assert failures == [(1, "cannot build a row")]
    assert flushes == [2]
    assert sched.in_flight == 0 and sched.stalled and sched.flushes_failed == 1
    sched.note_position(99)
    assert sched.ack_lsn == 0


@pytest.mark.parametrize("batch_size", [1, 4])
def test_close_flushes_what_is_pending(batch_size: int) -> None:
    flush = GatedFlush()
    sched = FlushScheduler(
        flush, flush_batch_size=batch_size, flush_interval_ms=600_000, max_flush_concurrency=3
    )
    sched.start()
    for lsn in range(1, 11):
        sched.add_transaction(txn(lsn * 10, ("insert", f"run_{lsn}")))
    assert sched.close(timeout=WAIT)
    assert len(flushed(flush)) == 10
    assert sched.ack_lsn == 100


def test_flush_workers_are_reused_up_to_the_slots_and_exit_at_close() -> None:
    threads: set[threading.Thread] = set()

    def flush(batch_id: int, events: list[ChangeEvent]) -> None:
        threads.add(threading.current_thread())

    sched = FlushScheduler(
        flush, flush_batch_size=1, flush_interval_ms=600_000, max_flush_concurrency=3
    )
    sched.start()
    for lsn in range(1, 41):
        sched.add_transaction(txn(lsn * 10, ("insert", f"run_{lsn}")))
        if lsn % 4 == 0:  # some flushes one after the other, some at once
            assert sched.wait_idle(WAIT)
    assert sched.close(timeout=WAIT)
    assert sched.flushes_started >= 10 and sched.ack_lsn == 400
    assert 1 <= len(threads) <= 3
    for thread in threads:
        thread.join(WAIT)
        assert not thread.is_alive()
