"""TransactionAssembler: Begin…Commit, orphan events, empty transactions, version and lag."""

from __future__ import annotations

from rrlab.service.events import PG_EPOCH_OFFSET_US, Transaction, version_from_lsn
from rrlab.service.transactions import TransactionAssembler


class Recorder:
    def __init__(self) -> None:
        self.transactions: list[Transaction] = []
        self.positions: list[int] = []

    def add_transaction(self, transaction: Transaction) -> None:
        self.transactions.append(transaction)

    def note_position(self, lsn: int) -> None:
        self.positions.append(lsn)


def _assembler(generation: int = 0, now_ms: float = 0.0):
    recorder = Recorder()
    lags: list[float] = []
    assembler = TransactionAssembler(
        recorder, origin_generation=generation, on_lag=lags.append, now_ms=lambda: now_ms
    )
    return assembler, recorder, lags


def test_events_get_the_commit_end_lsn_version_and_the_right_tuple() -> None:
    assembler, recorder, _ = _assembler(generation=1)
    assembler.begin(xid=7, final_lsn=0x100, commit_time_us=5)
    assembler.change("insert", {"id": "run_a", "status": "PENDING"})
    assembler.change("update", {"id": "run_a", "status": "EXECUTING"})
    assembler.change("delete", {"id": "run_b"})
    returned = assembler.commit(end_lsn=0x1_0000_0120, commit_time_us=5)

    assert recorder.transactions == [returned]
    txn = recorder.transactions[0]
    assert (txn.xid, txn.commit_lsn, txn.commit_end_lsn) == (7, 0x100, 0x1_0000_0120)
    expected_version = version_from_lsn(0x1_0000_0120, 1)
    assert expected_version == (1 << 56) | 0x1_0000_0120
    assert [(e.kind, e.run["id"], e.version) for e in txn.events] == [
        ("insert", "run_a", expected_version),
        ("update", "run_a", expected_version),
        ("delete", "run_b", expected_version),
    ]
    assert assembler.events_by_kind == {"insert": 1, "update": 1, "delete": 1}
    assert assembler.latest_commit_end_lsn == 0x1_0000_0120


def test_lag_is_now_minus_the_commit_time() -> None:
    commit_unix_ms = 1_700_000_000_000
    commit_time_us = commit_unix_ms * 1000 - PG_EPOCH_OFFSET_US
    assembler, _, lags = _assembler(now_ms=commit_unix_ms + 250.0)
    assembler.begin(1, 10, commit_time_us)
    assembler.change("insert", {"id": "run_a"})
    assembler.commit(20, commit_time_us)
    assert lags == [250.0]


def test_events_outside_a_transaction_are_dropped() -> None:
    assembler, recorder, _ = _assembler()
    assembler.change("insert", {"id": "run_orphan"})
    assembler.begin(1, 10, 0)
    assembler.change("insert", {"id": "run_a"})
    assembler.commit(20, 0)
    assembler.change("update", {"id": "run_a"})
    assert assembler.orphan_events == 2
    assert [e.run["id"] for t in recorder.transactions for e in t.events] == ["run_a"]
    assert not assembler.in_transaction


def test_empty_transactions_are_dropped_but_their_end_counts_as_received() -> None:
    assembler, recorder, lags = _assembler()
    assembler.begin(1, 10, 0)
    assert assembler.commit(20, 0) is None
    assert recorder.transactions == [] and lags == []
    assert recorder.positions == [20]
    assert assembler.empty_transactions == 1


def test_a_commit_without_begin_or_end_lsn_delivers_nothing() -> None:
    assembler, recorder, _ = _assembler()
    assert assembler.commit(20, 0) is None
    assembler.begin(1, 10, 0)
    assembler.change("insert", {"id": "run_a"})
    assert assembler.commit(0, 0) is None
    assert recorder.transactions == [] and recorder.positions == []


def test_a_delete_without_old_tuple_becomes_an_event_without_run() -> None:
    assembler, recorder, _ = _assembler()
    assembler.begin(1, 10, 0)
    assembler.change("delete", None)
    assembler.commit(20, 0)
    assert recorder.transactions[0].events[0].run == {}
