"""The phase runner: starts the consumer and the producers, drives the phases, closes metrics.

For each phase it sets the producers' rate, waits the phase's duration while a progress
bar shows produced and consumed rates and lag, stops the producers, waits until the
slot's confirmed flush position reaches the WAL position at stop (the consumer has
caught up), and closes the phase's metrics. Ctrl+C or SIGTERM ends the run early:
producers stop, the consumer flushes, metrics so far are written marked incomplete.

A child that dies (or that chaos kills) is restarted, within a budget: the consumer
resumes from the slot; a producer's rows committed since its last report are counted
from PostgreSQL (:mod:`rrlab.runner.commits`) and its replacement joins the running phase.
"""

from __future__ import annotations

import contextlib
import logging
import math
import queue
import random
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
import psycopg
from tqdm import tqdm

from rrlab.config import RunConfig
from rrlab.exceptions import RunError
from rrlab.runner.commits import Announcement, UnreportedCommits, as_producer_row, committed
from rrlab.runner.infrastructure import Infrastructure
from rrlab.runner.ipc import ControlServer
from rrlab.runner.metrics import Recorder, percentiles
from rrlab.runner.processes import ChildProcess, python_module_command
from rrlab.service.events import lsn_to_int

log = logging.getLogger(__name__)

READY_TIMEOUT_S = 60.0
CATCH_UP_TIMEOUT_S = 120.0
PAUSE_BETWEEN_PHASES_S = 1.0
CONSUMER = "consumer"
DISCONNECT_TIMEOUT_S = 10.0


class RunInterrupted(Exception):
    """Ctrl+C or SIGTERM reached the runner."""


class Orchestrator:
    """Runs the phases of one run against prepared infrastructure."""

    def __init__(
        self,
        config: RunConfig,
        run_dir: Path,
        infra: Infrastructure,
        *,
        progress: bool = True,
        consumer_wrapper: Callable[[int], list[str] | None] | None = None,
        producer_wrapper: Callable[[str, int], list[str] | None] | None = None,
    ) -> None:
        self.config = config
        self.run_dir = run_dir
        self.infra = infra
        self.progress = progress
        self.consumer_wrapper = consumer_wrapper or (lambda attempt: None)
        self.producer_wrapper = producer_wrapper or (lambda name, attempt: None)
        self.recorder = Recorder()
        self.server = ControlServer()
        self.consumer: ChildProcess | None = None
        self.producers: dict[str, ChildProcess] = {}
        self.consumer_restarts = 0
        self.producer_restarts = 0
        load_s = sum(phase.duration_s for phase in config.phases)
        seed = config.chaos.seed
        self.chaos = ChaosSchedule(config.chaos.kill_consumer, load_s, seed)
        # another seed: equal counts must not kill the consumer and a producer together
        self.producer_chaos = ChaosSchedule(
            config.chaos.kill_producer, load_s, None if seed is None else seed + 1
        )
        self._victims = random.Random(seed)
        self.unreported = UnreportedCommits()
        # what a producer started mid-phase must be told: the phase command while the load
        # runs, "stopped" while the runner waits for the producers to stop, else nothing
        self._producer_command: dict[str, Any] | str | None = None
        self._disconnected: set[str] = set()
        self._producer_starts: Counter[str] = Counter()
        self.phase_name = "startup"
        self.phases_done: list[dict[str, Any]] = []
        self.started = time.time()
        self._producer_done: set[str] = set()
        self._ready: set[str] = set()
        self._consumer_reported = False
        self._samplers: dict[int, psutil.Process] = {}

    # --- lifecycle -------------------------------------------------------------

    def run(self) -> list[dict[str, Any]]:
        """Run every phase; returns the phase summaries (also on interruption, so far)."""
        try:
            self._start_consumer()
            self._start_producers()
            for index, phase in enumerate(self.config.phases):
                if index:
                    self._pump(PAUSE_BETWEEN_PHASES_S)
                self._run_phase(phase.name, phase.duration_s, phase.target_throughput)
        finally:
            self.shutdown()
        return self.phases_done

    def shutdown(self) -> None:
        """Stop producers, let the consumer flush and exit; kill whatever does not stop."""
        asked = {name: self.server.send(name, {"cmd": "shutdown"}) for name in self.producers}
        for name, child in self.producers.items():
            child.stop(asked=asked[name])
        if self.consumer is not None:
            self.consumer.stop(asked=self.server.send(CONSUMER, {"cmd": "shutdown"}))
        self._drain_messages()
        self.server.close()

    # --- children ---------------------------------------------------------------

    def _child_env(self, name: str) -> dict[str, str]:
        return {**self.infra.child_environment(), **self.server.child_environment(name)}

    def _start_consumer(self) -> None:
        args = ["--config", str(self.run_dir / "config.json")]
        wrapper = self.consumer_wrapper(self.consumer_restarts)
        self.consumer = ChildProcess(
            CONSUMER,
            python_module_command("rrlab.service.consumer", args, wrapper),
            self._child_env(CONSUMER),
            self.run_dir / "logs" / f"{CONSUMER}.log",
        )
        self._await_ready([CONSUMER])

    def _start_producers(self) -> None:
        for worker in range(self.config.producer.workers):
            self._spawn_producer(worker)
        self._await_ready(list(self.producers))

    def _spawn_producer(self, worker: int) -> str:
        name = f"producer-{worker}"
        args = ["--config", str(self.run_dir / "config.json"), "--worker-id", str(worker)]
        self.producers[name] = ChildProcess(
            name,
            # a restarted producer's profile is a new file: attempt = restarts of this worker
            python_module_command(
                "rrlab.producer", args, self.producer_wrapper(name, self._producer_starts[name])
            ),
            self._child_env(name),
            self.run_dir / "logs" / f"{name}.log",
        )
        self._producer_starts[name] += 1
        return name

    def _children(self) -> dict[str, ChildProcess]:
        children = dict(self.producers)
        if self.consumer is not None:
            children[CONSUMER] = self.consumer
        return children

    def _await_ready(self, names: list[str]) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not all(name in self._ready for name in names):
            self._pump(0.1)
            for name in names:
                child = self._children()[name]
                if not child.alive() and name not in self._ready:
                    raise RunError(f"The {name} process failed to start: {child.describe_exit()}")
            if time.monotonic() > deadline:
                waiting = ", ".join(n for n in names if n not in self._ready)
                raise RunError(
                    f"{waiting} did not report ready within {READY_TIMEOUT_S:.0f} s. "
                    f"See the logs in {self.run_dir / 'logs'}."
                )

    def _check_children(self) -> None:
        """Restart a dead consumer or producer, each kind within its budget of restarts."""
        for name, child in list(self.producers.items()):
            if not child.alive():
                allowed = self.config.producer.max_restarts + self.producer_chaos.planned
                limit = "producer.max_restarts plus the chaos kills, for all producers"
                _within_budget(self.producer_restarts, allowed, limit, child)
                self.producer_restarts += 1
                self._restart_producer(name)
        if self.consumer is not None and not self.consumer.alive():
            allowed = self.config.consumer.max_restarts + self.chaos.planned
            limit = "consumer.max_restarts plus the chaos kills"
            _within_budget(self.consumer_restarts, allowed, limit, self.consumer)
            self.consumer_restarts += 1
            self._ready.discard(CONSUMER)
            self._start_consumer()

    def _restart_producer(self, name: str) -> None:
        """Count what the dead producer committed unreported, then start its replacement."""
        if name in self._ready:  # it connected: read all it sent before counting
            deadline = time.monotonic() + DISCONNECT_TIMEOUT_S
            while name not in self._disconnected and time.monotonic() < deadline:
                self._pump(0.05)
        self._count_from_postgres(name, self.unreported.take(name), "died")
        self._ready.discard(name)
        self._spawn_producer(int(name.rpartition("-")[2]))
        self._await_ready([name])
        if isinstance(self._producer_command, dict):
            self.server.send(name, self._producer_command)
        elif self._producer_command == "stopped":
            self._producer_done.add(name)  # a fresh producer has no phase to stop

    def _count_from_postgres(self, name: str, announced: list[Announcement], why: str) -> None:
        """Rows of a producer's transactions no report counted (it died, or their COMMIT
        raised), if PostgreSQL committed them, become one more producer sample."""
        if not announced:
            return
        with psycopg.connect(self.infra.database.url, autocommit=True) as conn:
            landed = committed(conn, announced)
        log.warning(
            "%s %s: of %d transaction(s) its reports did not count, %d committed "
            "(%d rows, counted from PostgreSQL)",
            name, why, len(announced), len(landed), sum(a.rows for a in landed),
        )  # fmt: skip
        t = time.time() - self.started
        for phase in dict.fromkeys(a.phase for a in landed):
            counts = as_producer_row([a for a in landed if a.phase == phase])
            self._record_producer(name, t, {**counts, "phase": phase})

    # --- phases ------------------------------------------------------------------

    def _run_phase(self, name: str, duration_s: float, target: int) -> None:
        self.phase_name = name
        phase: dict[str, Any] = {
            "name": name,
            "duration_s": duration_s,
            "target_throughput": target,
            "started_at": datetime.now(UTC).isoformat(),
        }
        share = target / len(self.producers)
        self._producer_done.clear()
        self._producer_command = {"cmd": "phase", "name": name, "rate": share}
        for producer in self.producers:
            self.server.send(producer, self._producer_command)
        load_started = time.monotonic()
        self.chaos.start(load_started)
        self.producer_chaos.start(load_started)
        # text bars (not tqdm.auto's widgets): they update in place in a terminal and in
        # JupyterLab alike, and an executed notebook exports to HTML without widget scripts
        bar = tqdm(
            total=round(duration_s),
            desc=f"{name} @ {target:,}/s",
            unit="s",
            disable=not self.progress,
            leave=True,
        )
        with bar:
            while (elapsed := time.monotonic() - load_started) < duration_s:
                # wake for a kill on time: a fixed 0.5 s beat would land every kill at the
                # same point of the children's once-a-second cycle, not at a random moment
                now = time.monotonic()
                kill_in = min(self.chaos.wait_s(now), self.producer_chaos.wait_s(now))
                self._pump(min(0.5, duration_s - elapsed, kill_in))
                self._inject_chaos()
                self._check_children()
                bar.n = min(round(time.monotonic() - load_started), round(duration_s))
                bar.set_postfix(self._live_rates(), refresh=True)
        self._producer_command = "stopped"
        for producer in self.producers:
            self.server.send(producer, {"cmd": "stop_phase"})
        self._await_producers_stopped()
        self._producer_command = None
        phase["load_s"] = time.monotonic() - load_started
        catch_up_started = time.monotonic()
        self._await_catch_up()
        phase["catch_up_s"] = round(time.monotonic() - catch_up_started, 3)
        for producer, unsure in self.unreported.take_unsure().items():
            self._count_from_postgres(producer, unsure, "had a COMMIT fail")
        phase["consume_s"] = time.monotonic() - load_started
        phase["ended_at"] = datetime.now(UTC).isoformat()
        self._await_consumer_report()
        self.phases_done.append(self.recorder.phase_summary(phase))

    def _inject_chaos(self) -> None:
        now = time.monotonic()
        if self.consumer is not None and self.chaos.due(now):
            log.warning("chaos: SIGKILL to the consumer (pid %d)", self.consumer.pid)
            self.consumer.kill()
        if self.producer_chaos.due(now):
            victim = self.producers[self._victims.choice(sorted(self.producers))]
            log.warning("chaos: SIGKILL to %s (pid %d)", victim.name, victim.pid)
            victim.kill()

    def _await_producers_stopped(self) -> None:
        deadline = time.monotonic() + 60
        while set(self.producers) - self._producer_done:
            self._pump(0.1)
            self._check_children()
            if time.monotonic() > deadline:
                raise RunError("The producers did not stop within 60 s after the phase ended.")

    def _await_catch_up(self) -> None:
        """Wait until the slot's confirmed flush LSN reaches the WAL position at stop."""
        slot = self.config.consumer.slot_name
        with psycopg.connect(self.infra.database.url, autocommit=True) as conn:
            target = lsn_to_int(conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()[0])
            deadline = time.monotonic() + CATCH_UP_TIMEOUT_S
            while True:
                row = conn.execute(
                    "SELECT confirmed_flush_lsn::text FROM pg_replication_slots "
                    "WHERE slot_name = %s",
                    (slot,),
                ).fetchone()
                if row and row[0] and lsn_to_int(row[0]) >= target:
                    return
                if time.monotonic() > deadline:
                    raise RunError(
                        f"The consumer did not catch up within {CATCH_UP_TIMEOUT_S:.0f} s "
                        f"after phase {self.phase_name!r}: slot {slot} is at "
                        f"{row[0] if row else '?'}, the WAL was at {target:X} when the "
                        "producers stopped. The sink may be down or far too slow; "
                        f"see {self.run_dir / 'logs' / 'consumer.log'}."
                    )
                self._pump(0.2)
                self._check_children()

    def _await_consumer_report(self, timeout_s: float = 5.0) -> None:
        """Ask the consumer for a report now, so the phase's counts include its catch-up."""
        self._consumer_reported = False
        self.server.send(CONSUMER, {"cmd": "report"})
        deadline = time.monotonic() + timeout_s
        while not self._consumer_reported and time.monotonic() < deadline:
            self._pump(0.05)

    def _live_rates(self) -> dict[str, str]:
        now = time.time() - self.started
        recent = [
            r for r in self.recorder.rows["producer"] if r["t"] is not None and r["t"] > now - 2
        ]
        produced = sum(r["records"] or 0 for r in recent) / 2
        consumed_rows = [
            r for r in self.recorder.rows["consumer"] if r["t"] is not None and r["t"] > now - 2
        ]
        consumed = sum(r["records"] or 0 for r in consumed_rows) / 2
        lag = consumed_rows[-1]["lag_p99_ms"] if consumed_rows else None
        return {
            "produced/s": f"{produced:,.0f}",
            "consumed/s": f"{consumed:,.0f}",
            "lag p99": "-" if lag is None else f"{lag:,.0f} ms",
        }

    # --- messages ------------------------------------------------------------------

    def _pump(self, timeout_s: float) -> None:
        """Handle children's messages for up to ``timeout_s``; sample process usage."""
        deadline = time.monotonic() + timeout_s
        while True:
            remaining = deadline - time.monotonic()
            try:
                message = self.server.messages.get(timeout=max(0.0, remaining))
            except queue.Empty:
                break
            self._handle(message.sender, message.body)
            if remaining <= 0:
                break
        self._drain_messages()

    def _drain_messages(self) -> None:
        while True:
            try:
                message = self.server.messages.get_nowait()
            except queue.Empty:
                return
            self._handle(message.sender, message.body)

    def _handle(self, sender: str, body: dict[str, Any]) -> None:
        kind = body.get("type")
        t = body.get("t", time.time()) - self.started
        if kind == "ready":
            self._ready.add(sender)
        elif kind == "connected":
            self._disconnected.discard(sender)
        elif kind == "disconnected":
            self._disconnected.add(sender)
        elif kind == "committing":
            self.unreported.announced(sender, body)
        elif kind == "phase_stopped":
            self._producer_done.add(sender)
        elif kind == "stats" and sender == CONSUMER:
            self._record_consumer(t, body)
            if self.infra.clickhouse_pid:  # the embedded ClickHouse, sampled at the same pace
                self._sample_process("clickhouse", self.infra.clickhouse_pid, t)
            self._consumer_reported = self._consumer_reported or bool(body.get("requested"))
        elif kind == "stats":
            self._record_producer(sender, t, body)
            self.unreported.reported(sender, int(body.get("seq", 0)), body.get("unsure"))
        elif kind == "log":
            log.log(body.get("level", logging.INFO), "%s: %s", sender, body.get("message"))
        if kind == "stats" and "pid" in body:
            self._sample_process(sender, int(body["pid"]), t)

    def _record_consumer(self, t: float, body: dict[str, Any]) -> None:
        phase = self.phase_name
        lags = body.get("lag_ms", [])
        spread = {f"lag_{k}_ms": v for k, v in percentiles(lags).items()}
        spread["lag_max_ms"] = max(lags) if lags else None
        self.recorder.add("consumer", {**body, **spread, "t": t, "phase": phase})
        for lag in body.get("lag_ms", []):
            self.recorder.add("lag", {"t": t, "phase": phase, "lag_ms": lag})
        for flush in body.get("flush_records", []):
            self.recorder.add("flushes", {**flush, "t": flush.get("t", t), "phase": phase})
        for sent_at, event in body.get("sink_events", []):
            self.recorder.add(
                "sink_events", {"t": sent_at - self.started, "phase": phase, "event": event}
            )

    def _record_producer(self, sender: str, t: float, body: dict[str, Any]) -> None:
        phase = body.get("phase") or self.phase_name
        self.recorder.add("producer", {**body, "t": t, "phase": phase, "process": sender})
        for operation, rows, latency_ms in body.get("latencies", []):
            self.recorder.add(
                "producer_latency",
                {"t": t, "phase": phase, "process": sender, "operation": operation,
                 "rows": rows, "latency_ms": latency_ms},
            )  # fmt: skip

    def _sample_process(self, name: str, pid: int, t: float) -> None:
        """CPU % and RSS of a child, measured by the runner from outside (psutil)."""
        try:
            process = self._samplers.get(pid)
            if process is None:
                process = self._samplers[pid] = psutil.Process(pid)
                process.cpu_percent()  # first call only primes the counter
                return
            cpu = process.cpu_percent()
            rss = process.memory_info().rss / 2**20
        except psutil.Error:
            return
        self.recorder.add(
            "processes",
            {"t": t, "phase": self.phase_name, "process": name, "pid": pid,
             "cpu_percent": cpu, "rss_mb": rss},
        )  # fmt: skip


def _within_budget(restarts: int, allowed: int, limit: str, child: ChildProcess) -> None:
    """Log the death of a child about to be restarted; RunError when the budget is spent."""
    description = child.describe_exit()
    if restarts >= allowed:
        raise RunError(
            f"A {child.name.partition('-')[0]} died after {restarts} restarts already "
            f"({limit}): {description}"
        )
    log.warning("Restarting %s: %s", child.name, description)


class ChaosSchedule:
    """When to SIGKILL a process: ``count`` random moments of the load phases' time.

    Kills are spread over the phases' summed duration; the clock only runs while
    producers write (the schedule is consulted from the load loop only), so a kill never
    lands in a catch-up or a pause.
    """

    def __init__(self, count: int, load_s: float, seed: int | None) -> None:
        rng = random.Random(seed)
        self.planned = count
        self._offsets = sorted(rng.uniform(0.05, 0.95) * load_s for _ in range(count))
        self._load_clock = 0.0
        self._last: float | None = None

    def start(self, now: float) -> None:
        """A load phase starts: time since the previous call is not load time."""
        self._last = now

    def wait_s(self, now: float) -> float:
        """Load time from ``now`` until the next kill is due (inf when none is left)."""
        if not self._offsets:
            return math.inf
        running = 0.0 if self._last is None else now - self._last
        return max(0.0, self._offsets[0] - self._load_clock - running)

    def due(self, now: float) -> bool:
        """Advance the load clock to ``now``; True when a kill is due (once per kill)."""
        if self._last is not None:
            self._load_clock += now - self._last
        self._last = now
        if self._offsets and self._offsets[0] <= self._load_clock:
            self._offsets.pop(0)
            return True
        return False


@contextlib.contextmanager
def interrupts_as_exceptions():
    """Turn SIGTERM into RunInterrupted (and Ctrl+C too) in the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_signal(signum, frame):
        raise RunInterrupted(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
