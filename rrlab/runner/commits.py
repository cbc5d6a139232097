"""Exact producer counts across a killed producer: transactions it announced, asked of PostgreSQL.

A producer announces each transaction (its PostgreSQL id, operation and rows) just before
COMMIT and reports counts once a second. A kill can land between a COMMIT and the next
report; the transactions announced since the last report are then the only ones whose
fate the runner does not know, and ``pg_xact_status`` tells it exactly. The same question
settles a COMMIT that raised in a live producer (the connection broke: committed or not?).
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import psycopg

from rrlab.exceptions import RunError

# A killed client's backend commits a COMMIT it already received, or aborts when it reads
# the closed socket: "in progress" lasts moments, unless the server itself is stuck.
RESOLVE_TIMEOUT_S = 30.0
_STATUS_SQL = "SELECT x, pg_xact_status(x::xid8) FROM unnest(%s::text[]) AS x"


@dataclass(frozen=True)
class Announcement:
    """One transaction a producer was about to commit."""

    seq: int
    xid: str
    phase: str | None
    operation: str
    rows: int


class UnreportedCommits:
    """Per producer process: the transactions announced after its last stats report, and
    those a report called unsure (their COMMIT raised)."""

    def __init__(self) -> None:
        self._pending: dict[str, list[Announcement]] = defaultdict(list)
        self._unsure: dict[str, list[Announcement]] = defaultdict(list)

    def announced(self, process: str, body: dict[str, Any]) -> None:
        """A ``committing`` message."""
        self._pending[process].append(
            Announcement(
                int(body["seq"]), str(body["xid"]), body.get("phase"),
                str(body["operation"]), int(body["rows"]),
            )
        )  # fmt: skip

    def reported(self, process: str, seq: int, unsure: list[int] | None = None) -> None:
        """A stats report accounts for every transaction up to ``seq`` but those ``unsure``."""
        unsure_seqs = set(unsure or ())
        covered = [a for a in self._pending[process] if a.seq <= seq]
        self._unsure[process] += [a for a in covered if a.seq in unsure_seqs]
        self._pending[process] = [a for a in self._pending[process] if a.seq > seq]

    def take(self, process: str) -> list[Announcement]:
        """The process is gone: all its transactions of unknown fate, forgotten here."""
        return self._unsure.pop(process, []) + self._pending.pop(process, [])

    def take_unsure(self) -> dict[str, list[Announcement]]:
        """Every process's unsure transactions, forgotten here."""
        unsure = {process: found for process, found in self._unsure.items() if found}
        self._unsure.clear()
        return unsure


def committed(
    conn: psycopg.Connection, announced: list[Announcement], timeout_s: float = RESOLVE_TIMEOUT_S
) -> list[Announcement]:
    """Those of ``announced`` that PostgreSQL committed (``conn`` in autocommit).

    Waits while a transaction is still in progress. Raises RunError when one stays in
    progress past ``timeout_s`` or is too old for PostgreSQL to know (no guess is made).
    """
    deadline = time.monotonic() + timeout_s
    while True:
        statuses = dict(conn.execute(_STATUS_SQL, ([a.xid for a in announced],)).fetchall())
        unknown = [xid for xid, status in statuses.items() if status is None]
        if unknown:
            raise RunError(
                f"PostgreSQL no longer knows whether transaction(s) {', '.join(unknown)} of a "
                "killed producer committed, so its counts cannot be made exact."
            )
        running = [xid for xid, status in statuses.items() if status == "in progress"]
        if not running:
            return [a for a in announced if statuses[a.xid] == "committed"]
        if time.monotonic() > deadline:
            raise RunError(
                f"Transaction(s) {', '.join(running)} of a killed producer are still in "
                f"progress after {timeout_s:.0f} s; is the PostgreSQL server stuck?"
            )
        time.sleep(0.1)


def as_producer_row(announced: list[Announcement]) -> dict[str, int]:
    """The counts of committed transactions, as a producer stats row carries them."""
    counts = {"inserts": 0, "updates": 0, "deletes": 0, "errors": 0}
    for announcement in announced:
        counts[announcement.operation + "s"] += announcement.rows
    counts["records"] = counts["inserts"] + counts["updates"] + counts["deletes"]
    return counts
