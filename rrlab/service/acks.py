"""Which LSN may be reported to PostgreSQL as flushed: the crash-safety rule of rrlab.

Every batch of the flush scheduler remembers its *floor*: the stream position that had been
fully handed over when the batch received its first row. Everything at or below a batch's
floor went into earlier batches. So the safe position is the floor of the oldest batch that
is not yet in ClickHouse (pending, in flight or failed), or, when there is none, the latest
position received. Transactions committed at or below it are never re-sent by PostgreSQL;
every one of them has its rows in ClickHouse. A failed batch never finishes, so it holds
acknowledgement back for good and the data is re-sent after a restart.
"""

from __future__ import annotations

from collections import OrderedDict


class AckTracker:
    """Pure bookkeeping; the caller serialises access (the scheduler holds its lock)."""

    def __init__(self, start_lsn: int = 0) -> None:
        self._received = start_lsn
        self._next_batch = 1
        # unfinished batches in opening order, so the first one has the lowest floor
        self._floors: OrderedDict[int, int] = OrderedDict()
        self.failed_batches: list[int] = []

    def received(self, lsn: int) -> None:
        """Everything up to ``lsn`` (a commit end, a keepalive's WAL end) is handed over.

        Call it only *after* the rows of that transaction were added to a batch.
        """
        if lsn > self._received:
            self._received = lsn

    def open_batch(self) -> int:
        """A batch gets its first row now; returns its id."""
        batch_id = self._next_batch
        self._next_batch += 1
        self._floors[batch_id] = self._received
        return batch_id

    def batch_done(self, batch_id: int, ok: bool) -> None:
        """The batch is in ClickHouse (``ok``), or failed every retry and will never be."""
        if batch_id not in self._floors:
            raise ValueError(f"batch {batch_id} is not open")
        if ok:
            del self._floors[batch_id]
        else:
            self.failed_batches.append(batch_id)

    @property
    def safe_lsn(self) -> int:
        """The highest LSN below which every transaction's rows are in ClickHouse."""
        for floor in self._floors.values():
            return floor
        return self._received

    @property
    def received_lsn(self) -> int:
        return self._received

    @property
    def unfinished_batches(self) -> int:
        return len(self._floors)

    @property
    def stalled(self) -> bool:
        """True once a batch failed: acknowledgement can never move past it again."""
        return bool(self.failed_batches)
