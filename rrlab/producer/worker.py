"""One producer process's loop: obey the runner's phase commands, write at the rate, report.

The loop knows nothing of the transport: it takes ``receive(timeout_s) -> command | None``
and ``emit(message)``, both plain JSON-able dicts.

Commands (the runner sends):
  ``{"cmd": "phase", "name": str, "rate": float}``  start a phase at ``rate`` records/s
  (this worker's share of the target); a running phase is stopped first.
  ``{"cmd": "stop_phase"}``  stop writing; answered by ``phase_stopped``.
  ``{"cmd": "shutdown"}``  stop any phase, close the connection, return.

Messages (the worker emits):
  ``{"type": "ready", "worker", "pid"}`` once connected to PostgreSQL.
  ``{"type": "committing", "worker", "phase", "seq", "xid", "operation", "rows"}`` just
  before each transaction's COMMIT: ``seq`` numbers this process's transactions from 1,
  ``xid`` is PostgreSQL's transaction id. When the process dies, the transactions
  announced after its last ``stats`` are the ones whose rows no report counted; the
  runner asks PostgreSQL which of them committed (``pg_xact_status``).
  ``{"type": "stats", "worker", "pid", "phase", "t", "seq", "unsure", "inserts", "updates",
  "deletes", "records", "errors", "target_rate", "latencies"}`` every second of a phase and
  once more at its end; ``t`` is the wall-clock time (s since 1970) the interval ended;
  ``seq`` the last announced transaction it accounts for (its rows counted, or its failure
  among the errors) except those listed in ``unsure``: transactions whose COMMIT raised
  (e.g. the connection broke), which may still have committed, so only PostgreSQL can
  count them; ``latencies`` is every statement of the interval as ``[operation, rows, ms]``
  (operation insert, update or delete; ms includes the commit). The stats of a phase hold
  all of its samples.
  ``{"type": "phase_stopped", "worker", "phase", "elapsed_s", "records", "inserts", "updates",
  "deletes", "errors", "target_rate", "achieved_rate"}`` after ``stop_phase``.
  ``{"type": "log", "level": int, "message": str}`` for each failed write (password masked).

A failed write is counted, reported, and followed by a pause of ``retry_pause_s`` (during
which commands are still obeyed); writing then resumes on a fresh connection if needed
and the pacing catches up on the records missed. An exception from ``receive`` or
``emit`` (the runner is gone) ends the loop after closing the connection.
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rrlab.config import ProducerConfig
from rrlab.producer.generator import RunGenerator, RunOwner
from rrlab.producer.pacing import Pacer
from rrlab.producer.writer import BatchOutcome, RunPool, RunWriter, WriteMix
from rrlab.urls import parse_postgres_url

STATS_INTERVAL_S = 1.0
IDLE_POLL_S = 1.0

Receive = Callable[[float], "dict[str, Any] | None"]
Emit = Callable[[dict[str, Any]], None]


@dataclass
class _Counts:
    inserts: int = 0
    updates: int = 0
    deletes: int = 0
    errors: int = 0
    latencies: list[list[Any]] = field(default_factory=list)
    # announced transactions whose COMMIT failed in a way that may still have committed
    unsure: list[int] = field(default_factory=list)

    def add(self, outcome: BatchOutcome) -> None:
        self.inserts += outcome.inserts
        self.updates += outcome.updates
        self.deletes += outcome.deletes
        self.errors += outcome.error is not None
        self.latencies.extend([op, rows, ms] for op, rows, ms in outcome.latencies)

    def add_counts(self, other: _Counts) -> None:
        """Add another's counts (not its latencies, which are reported once, per interval)."""
        self.inserts += other.inserts
        self.updates += other.updates
        self.deletes += other.deletes
        self.errors += other.errors

    def as_message(self) -> dict[str, Any]:
        return {
            "inserts": self.inserts,
            "updates": self.updates,
            "deletes": self.deletes,
            "records": self.inserts + self.updates + self.deletes,
            "errors": self.errors,
        }


@dataclass
class _Phase:
    name: str
    pacer: Pacer
    next_stats_at: float
    resume_at: float = 0.0
    interval: _Counts = field(default_factory=_Counts)
    total: _Counts = field(default_factory=_Counts)


def run_producer(
    worker_id: int,
    database_url: str,
    config: ProducerConfig,
    fixtures: RunOwner,
    receive: Receive,
    emit: Emit,
    *,
    seed: int | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Serve the runner's commands until ``shutdown``; see the module docstring for the protocol.

    Raises :class:`rrlab.exceptions.PostgresError` when the first connection fails.
    """
    rng = random.Random(seed)
    generator = RunGenerator(
        rng,
        fixtures,
        payload_size_kb=config.payload_size_kb,
        super_json_ratio=config.super_json_ratio,
        error_rate=config.error_rate,
    )
    mix = WriteMix(config.insert_update_ratio, config.delete_ratio)
    announcer = _Announcer(worker_id, emit)
    url = parse_postgres_url(database_url)
    writer = RunWriter(url, generator, RunPool(rng), mix, announce=announcer)
    try:
        writer.connect()
        emit({"type": "ready", "worker": worker_id, "pid": os.getpid()})
        _ProducerLoop(worker_id, config, writer, announcer, receive, emit, clock).run()
    finally:
        writer.close()


class _Announcer:
    """Numbers the transactions the writer announces before COMMIT and tells the runner."""

    def __init__(self, worker_id: int, emit: Emit) -> None:
        self._worker_id = worker_id
        self._emit = emit
        self.seq = 0
        self.phase: str | None = None

    def __call__(self, operation: str, rows: int, xid: str) -> None:
        self.seq += 1
        self._emit(
            {"type": "committing", "worker": self._worker_id, "phase": self.phase,
             "seq": self.seq, "xid": xid, "operation": operation, "rows": rows}
        )  # fmt: skip


class _ProducerLoop:
    def __init__(
        self,
        worker_id: int,
        config: ProducerConfig,
        writer: RunWriter,
        announcer: _Announcer,
        receive: Receive,
        emit: Emit,
        clock: Callable[[], float],
    ) -> None:
        self._worker_id = worker_id
        self._config = config
        self._writer = writer
        self._announcer = announcer
        self._receive = receive
        self._emit = emit
        self._clock = clock
        self._phase: _Phase | None = None

    def run(self) -> None:
        while True:
            command = self._receive(self._idle_s())
            if command is not None:
                if not self._obey(command):
                    return
                continue
            phase = self._phase
            if phase is None:
                continue
            now = self._clock()
            if now >= phase.next_stats_at:
                self._emit_stats(phase)
                phase.next_stats_at += STATS_INTERVAL_S
            if now >= phase.resume_at and phase.pacer.wait_s() == 0:
                self._write(phase)

    def _idle_s(self) -> float:
        """How long to wait for a command before there is work to do."""
        phase = self._phase
        if phase is None:
            return IDLE_POLL_S
        now = self._clock()
        write_in = max(phase.pacer.wait_s(), phase.resume_at - now)
        return max(0.0, min(write_in, phase.next_stats_at - now))

    def _obey(self, command: dict[str, Any]) -> bool:
        """Carry out one command; False when the producer must return."""
        kind = command.get("cmd")
        if kind == "phase":
            self._stop_phase()
            pacer = Pacer(float(command["rate"]), self._config.batch_size, self._clock)
            self._phase = _Phase(str(command["name"]), pacer, pacer.start + STATS_INTERVAL_S)
            self._announcer.phase = self._phase.name
        elif kind == "stop_phase":
            self._stop_phase(always_answer=True)
        elif kind == "shutdown":
            self._stop_phase()
            return False
        else:
            self._log(
                logging.ERROR, f"producer {self._worker_id} ignores unknown command {command!r}"
            )
        return True

    def _write(self, phase: _Phase) -> None:
        outcome = self._writer.write_batch(phase.pacer.batch_size)
        phase.pacer.written(outcome.records)
        phase.interval.add(outcome)
        if outcome.commit_unknown:
            phase.interval.unsure.append(self._announcer.seq)
        if outcome.error is not None:
            phase.resume_at = self._clock() + self._config.retry_pause_s
            self._log(
                logging.WARNING,
                f"producer {self._worker_id}: write failed, retrying in "
                f"{self._config.retry_pause_s:g} s: {outcome.error}",
            )

    def _stop_phase(self, always_answer: bool = False) -> None:
        phase, self._phase = self._phase, None
        if phase is None:
            if always_answer:
                self._emit({"type": "phase_stopped", "worker": self._worker_id, "phase": None})
            return
        self._emit_stats(phase)
        pacer = phase.pacer
        self._emit(
            {
                "type": "phase_stopped",
                "worker": self._worker_id,
                "phase": phase.name,
                "elapsed_s": round(pacer.elapsed_s(), 3),
                **phase.total.as_message(),
                "target_rate": pacer.rate,
                "achieved_rate": round(pacer.achieved_rate(), 1),
            }
        )

    def _emit_stats(self, phase: _Phase) -> None:
        interval, phase.interval = phase.interval, _Counts()
        phase.total.add_counts(interval)
        self._emit(
            {
                "type": "stats",
                "worker": self._worker_id,
                "pid": os.getpid(),
                "phase": phase.name,
                "t": time.time(),
                "seq": self._announcer.seq,
                "unsure": interval.unsure,
                **interval.as_message(),
                "target_rate": phase.pacer.rate,
                "latencies": interval.latencies,
            }
        )

    def _log(self, level: int, message: str) -> None:
        logging.getLogger(__name__).log(level, message)
        self._emit({"type": "log", "level": level, "message": message})
