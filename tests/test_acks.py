"""AckTracker: the acknowledged LSN never passes a transaction whose rows are not flushed."""

from __future__ import annotations

import random

import pytest

from rrlab.service.acks import AckTracker


def test_nothing_pending_means_the_received_position_is_safe() -> None:
    tracker = AckTracker(start_lsn=5)
    assert tracker.safe_lsn == 5
    tracker.received(90)
    assert tracker.safe_lsn == 90
    tracker.received(40)  # positions only move forward
    assert tracker.safe_lsn == 90


def test_a_pending_batch_holds_the_ack_at_its_floor() -> None:
    tracker = AckTracker()
    tracker.received(10)
    batch = tracker.open_batch()  # first row of the transaction ending at 20
    tracker.received(20)
    tracker.received(30)  # keepalive while rows are pending
    assert tracker.safe_lsn == 10
    tracker.batch_done(batch, ok=True)
    assert tracker.safe_lsn == 30


def test_a_later_batch_finishing_first_does_not_move_the_ack() -> None:
    tracker = AckTracker()
    first = tracker.open_batch()
    tracker.received(20)
    second = tracker.open_batch()
    tracker.received(40)
    tracker.batch_done(second, ok=True)
    assert tracker.safe_lsn == 0
    tracker.batch_done(first, ok=True)
    assert tracker.safe_lsn == 40


def test_a_failed_batch_stops_acknowledgement_for_good() -> None:
    tracker = AckTracker()
    tracker.received(10)
    failed = tracker.open_batch()
    tracker.received(20)
    later = tracker.open_batch()
    tracker.received(30)
    tracker.batch_done(failed, ok=False)
    tracker.batch_done(later, ok=True)
    tracker.received(100)
    assert tracker.safe_lsn == 10
    assert tracker.stalled and tracker.failed_batches == [failed]


def test_finishing_an_unknown_batch_is_a_bug() -> None:
    with pytest.raises(ValueError):
        AckTracker().batch_done(1, ok=True)


@pytest.mark.parametrize("seed", range(40))
def test_random_schedules_never_ack_past_unflushed_rows(seed: int) -> None:
    """Model: transactions land in batches; batches finish in random order, some fail.

    A transaction is durable once its batch succeeded. After every step, every transaction
    whose end LSN is at or below the acknowledged position must be durable, and with no
    failure, the ack must reach the last position once everything finished.
    """
    rng = random.Random(seed)
    tracker = AckTracker()
    batch_of_txn: dict[int, int] = {}  # end lsn -> batch id
    open_batch: int | None = None
    unfinished: list[int] = []
    succeeded: set[int] = set()
    lsn = 0
    failures = rng.random() < 0.3

    def check() -> None:
        ack = tracker.safe_lsn
        for end_lsn, batch in batch_of_txn.items():
            if end_lsn <= ack:
                assert batch in succeeded, (seed, end_lsn, ack)

    for _ in range(300):
        action = rng.random()
        if action < 0.45:
            lsn += rng.randint(1, 50)
            if open_batch is None:
                open_batch = tracker.open_batch()
                unfinished.append(open_batch)
            batch_of_txn[lsn] = open_batch
            tracker.received(lsn)
        elif action < 0.55:
            lsn += rng.randint(1, 50)
            tracker.received(lsn)  # keepalive or empty transaction
        elif action < 0.75:
            open_batch = None  # drain: the batch goes in flight
        elif unfinished:
            in_flight = [b for b in unfinished if b != open_batch]
            if in_flight:
                batch = rng.choice(in_flight)
                unfinished.remove(batch)
                ok = not (failures and rng.random() < 0.2)
                tracker.batch_done(batch, ok=ok)
                if ok:
                    succeeded.add(batch)
        check()

    if open_batch is not None:
        unfinished.remove(open_batch)
        tracker.batch_done(open_batch, ok=True)
        succeeded.add(open_batch)
    for batch in list(unfinished):
        unfinished.remove(batch)
        tracker.batch_done(batch, ok=True)
        succeeded.add(batch)
    check()
    if not tracker.stalled:
        assert tracker.safe_lsn == lsn
    else:
        assert tracker.safe_lsn < lsn
