"""Assemble decoded pgoutput messages into transactions with a shared ``_version`` and a lag.

The assembler knows nothing of the decoder's message classes: the consumer loop calls
:meth:`TransactionAssembler.begin`, :meth:`~TransactionAssembler.change` and
:meth:`~TransactionAssembler.commit` with plain values, and committed transactions go to a
:class:`TransactionReceiver` (the flush scheduler).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from rrlab.service.events import (
    ChangeEvent,
    EventKind,
    Transaction,
    commit_time_ms,
    version_from_lsn,
)

log = logging.getLogger(__name__)


class TransactionReceiver(Protocol):
    """Where committed transactions and stream positions go (the flush scheduler)."""

    def add_transaction(self, transaction: Transaction) -> None:
        """Take a committed, non-empty transaction whose events all carry their ``_version``."""

    def note_position(self, lsn: int) -> None:
        """Everything in the stream up to ``lsn`` has been handed over."""


def _wall_clock_ms() -> float:
    return time.time() * 1000


class TransactionAssembler:
    """Begin…Commit bookkeeping of the upstream service, one source (origin generation).

    ``on_lag`` receives the replication lag (now − commit time, ms) of every delivered
    transaction. ``now_ms`` is injectable so tests need no clock.
    """

    def __init__(
        self,
        receiver: TransactionReceiver,
        *,
        origin_generation: int = 0,
        on_lag: Callable[[float], None] | None = None,
        now_ms: Callable[[], float] = _wall_clock_ms,
    ) -> None:
        self._receiver = receiver
        self._generation = origin_generation
        self._on_lag = on_lag
        self._now_ms = now_ms
        self._open: Transaction | None = None
        self.events_by_kind: dict[str, int] = {"insert": 0, "update": 0, "delete": 0}
        self.transactions = 0
        self.empty_transactions = 0
        self.orphan_events = 0
        self.latest_commit_end_lsn = 0

    @property
    def in_transaction(self) -> bool:
        return self._open is not None

    def resume(self, receiver: TransactionReceiver | None = None) -> None:
        """The stream restarts from the slot: drop the unfinished transaction (PostgreSQL
        sends it again) and hand later transactions to ``receiver`` when one is given."""
        self._open = None
        if receiver is not None:
            self._receiver = receiver

    def begin(self, xid: int, final_lsn: int, commit_time_us: int) -> None:
        """Open a transaction; an unfinished one (impossible in a sane stream) is discarded."""
        if self._open is not None:
            log.warning(
                "Begin of xid %d while xid %d is still open; discarding it", xid, self._open.xid
            )
        self._open = Transaction(xid=xid, commit_lsn=final_lsn, commit_time_us=commit_time_us)

    def change(self, kind: EventKind, run: dict[str, Any] | None) -> None:
        """Insert/update with the new tuple, delete with the old one (``None`` if not sent)."""
        if self._open is None:
            self.orphan_events += 1
            return
        self.events_by_kind[kind] += 1
        # the version is known only at commit; the scheduler skips events without a run id
        self._open.events.append(ChangeEvent(kind, run if run is not None else {}, 0))

    def commit(self, end_lsn: int, commit_time_us: int) -> Transaction | None:
        """Close the open transaction and hand it on; returns it, or None if nothing was sent."""
        transaction, self._open = self._open, None
        if transaction is None or not end_lsn:
            return None
        transaction.commit_end_lsn = end_lsn
        transaction.commit_time_us = commit_time_us
        self.latest_commit_end_lsn = end_lsn
        if not transaction.events:
            self.empty_transactions += 1
            self._receiver.note_position(end_lsn)
            return None
        self.transactions += 1
        if self._on_lag is not None:
            self._on_lag(self._now_ms() - commit_time_ms(commit_time_us))
        version = version_from_lsn(end_lsn, self._generation)
        for event in transaction.events:
            event.version = version
        self._receiver.add_transaction(transaction)
        return transaction
