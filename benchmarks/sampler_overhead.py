"""Cost of the always-on samplers: what measuring utilisation, CPU and RSS adds per second.

Times, in this process: the consumer's per-iteration busy accounting (two perf_counter
reads and ``ProcessStats.busy``), one ``ProcessStats.sample()``, one stats report sent over
the real runner channel (loopback JSON lines) with 0 to 10,000 lag samples, and the
runner's psutil sample of one child. Prints microseconds per call and, for the once-a-second
ones, the share of one core they take. Run::

    .venv/bin/python benchmarks/sampler_overhead.py [--repeat 7]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import psutil

from rrlab.runner.ipc import ChildChannel, ControlServer
from rrlab.service.process_stats import ProcessStats


def per_call_us(action: Callable[[], object], calls: int, repeat: int) -> tuple[float, float]:
    """Median and best microseconds per call over ``repeat`` rounds of ``calls`` calls."""
    rounds = []
    for _ in range(repeat):
        started = time.perf_counter()
        for _ in range(calls):
            action()
        rounds.append((time.perf_counter() - started) / calls * 1e6)
    return statistics.median(rounds), min(rounds)


def report_body(lags: int) -> dict:
    """A consumer report shaped like the real one, with ``lags`` lag samples."""
    return {
        "type": "stats", "t": time.time(), "pid": os.getpid(), "records": 123_456,
        "insert": 1000, "update": 400, "delete": 0, "transactions": 140,
        "lag_ms": [12.5 + i % 7 for i in range(lags)],
        "flush_records": [
            {"batch_size": 1000, "task_rows": 1000, "payload_rows": 700, "bytes": 2_000_000,
             "duration_ms": 45.2, "retries": 0, "errors": 0}
        ] * 3,
        "pending": 10, "in_flight": 1, "received_lsn": 123456789, "acked_lsn": 123456000,
        "stalled": False, "utilization": 0.42, "cpu_percent": 55.1, "rss_mb": 80.2,
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    stats = ProcessStats()

    def busy_accounting() -> None:
        started = time.perf_counter()
        stats.busy(time.perf_counter() - started)

    rows: list[tuple[str, float, float, bool]] = []
    rows.append(("busy accounting (per loop iteration)",
                 *per_call_us(busy_accounting, 200_000, args.repeat), False))  # fmt: skip
    rows.append(("ProcessStats.sample()", *per_call_us(stats.sample, 20_000, args.repeat), True))

    server = ControlServer()
    channel = ChildChannel(*server.child_environment("consumer").values(), on_lost=lambda: None)
    try:
        for lags in (0, 100, 1_000, 10_000):
            body = report_body(lags)
            calls = max(20, 20_000 // (lags + 1))
            median, best = per_call_us(lambda b=body: channel.send(b), calls, args.repeat)
            rows.append((f"stats report sent, {lags:,} lag samples", median, best, True))
            while not server.messages.empty():  # keep the runner side from piling up
                server.messages.get_nowait()
    finally:
        channel.close()
        server.close()

    child = psutil.Process(os.getpid())
    child.cpu_percent()

    def runner_sample() -> None:
        child.cpu_percent()
        child.memory_info()

    rows.append(("runner psutil sample of one child", *per_call_us(runner_sample, 20_000,
                 args.repeat), True))  # fmt: skip

    print(f"{'what':<44}{'median µs':>12}{'best µs':>10}{'% of a core at 1/s':>21}")
    for what, median, best, once_a_second in rows:
        share = f"{median / 1e6 * 100:.4f}" if once_a_second else "-"
        print(f"{what:<44}{median:>12.2f}{best:>10.2f}{share:>21}")


if __name__ == "__main__":
    main()
