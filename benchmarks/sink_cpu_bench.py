"""The consumer's CPU per row by sink, in-process: what the ClickHouse sink itself costs it.

Replays a captured backlog (``hot_path_bench``'s capture) through the consumer's own
pipeline (``Consumer._handle`` → flush scheduler → flusher → sink, GC and malloc tuned as
the consumer tunes them), each run in a fresh process, variants alternated round by round:

- ``mock``: the mock sink;
- ``chdb``: the consumer's ClickHouse sink (built by ``consumer._sink_for``) writing into the
  embedded ClickHouse;
- ``mock-beside-clickhouse``: the mock sink again, while another process keeps inserting the
  same batches into the embedded ClickHouse, so that ClickHouse works beside the consumer as
  it does in a chdb drain, but the consumer does none of the inserting.

Reported per variant (medians): the replay's CPU per row (user + system), minor page faults
per row, voluntary context switches, and the CPU of making the sink (for ``chdb``, its
client's first queries; clickhouse-connect is already imported here, so its import, part
of a real consumer's start-up, is not counted). ``chdb`` minus ``mock`` is what the
ClickHouse sink adds per row; ``chdb`` minus ``mock-beside-clickhouse`` is the part of it
that is the consumer's own inserting rather than ClickHouse working beside it::

    .venv/bin/python benchmarks/sink_cpu_bench.py --rounds 4
    .venv/bin/python benchmarks/sink_cpu_bench.py --batch 50 --interval-ms 100 --concurrency 100
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

from hot_path_bench import CAPTURE, capture, load_messages

from rrlab.config import load_config
from rrlab.infra.ch_migrations import run_migrations
from rrlab.infra.clickhouse import EmbeddedClickHouse, clickhouse_client
from rrlab.service import consumer
from rrlab.service.sink_events import SinkEvents
from rrlab.service.sinks import MockSink

VARIANTS = ("mock", "chdb", "mock-beside-clickhouse")
DATABASE = "sink_cpu_bench"


def _to_stderr(report: dict[str, Any]) -> None:
    """The consumer's reports (only failures and warnings here: no 1 s reports are made)."""
    print(json.dumps(report), file=sys.stderr)


def _usage() -> tuple[float, float, int, int]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime, usage.ru_minflt, usage.ru_nvcsw


def replay(messages: list[bytes], args: argparse.Namespace, sink_name: str) -> dict[str, Any]:
    """One run of the consumer's pipeline over ``messages`` with ``sink_name``'s sink."""
    config = load_config(
        overrides={
            "consumer.flush_batch_size": args.batch,
            "consumer.flush_interval_ms": args.interval_ms,
            "consumer.max_flush_concurrency": args.concurrency,
            "clickhouse.sink": sink_name,
            "clickhouse.database": DATABASE,
        }
    )
    before_sink = _usage()
    sink = consumer._sink_for(config, SinkEvents(), _to_stderr, threading.Event())
    before = _usage()
    # the URL is only parsed: the replay never connects to PostgreSQL
    pipeline = consumer.Consumer(config, "postgresql://bench@127.0.0.1/bench", sink, _to_stderr)
    pipeline.scheduler.start()
    consumer._tune_garbage_collector()
    consumer._tune_malloc()
    for payload in messages:
        pipeline._handle(memoryview(payload))
    if not pipeline.scheduler.close(timeout=300):
        raise RuntimeError("the replay's flushes did not finish")
    after = _usage()
    sink.close()
    rows = pipeline.records
    return {
        "cpu_us_per_row": (after[0] + after[1] - before[0] - before[1]) / rows * 1e6,
        "minor_faults_per_row": (after[2] - before[2]) / rows,
        "voluntary_switches": after[3] - before[3],
        "sink_setup_cpu_ms": (before[0] + before[1] - before_sink[0] - before_sink[1]) * 1e3,
        "flushes": pipeline.scheduler.flushes_started,
    }


def insert_beside(messages: list[bytes], args: argparse.Namespace) -> None:
    """Collect the replay's batches with a mock sink, say ``ready``, then insert them over
    and over until SIGTERM, so that ClickHouse is busy for the whole of the measured replay."""
    batches: list[tuple[str, tuple[str, ...], Any, frozenset[str]]] = []

    class Collecting(MockSink):
        def insert(self, table: str, columns: Any, rows: Any, json_columns: frozenset[str]):
            batches.append((table, tuple(columns), rows, json_columns))
            return super().insert(table, columns, rows, json_columns)

    config = load_config(
        overrides={
            "consumer.flush_batch_size": args.batch,
            "consumer.flush_interval_ms": args.interval_ms,
            "consumer.max_flush_concurrency": args.concurrency,
        }
    )
    url = "postgresql://bench@127.0.0.1/bench"
    pipeline = consumer.Consumer(config, url, Collecting(), _to_stderr)
    pipeline.scheduler.start()
    for payload in messages:
        pipeline._handle(memoryview(payload))
    pipeline.scheduler.close(timeout=300)
    config = config.with_overrides({"clickhouse.sink": "chdb", "clickhouse.database": DATABASE})
    sink = consumer._sink_for(config, SinkEvents(), _to_stderr, threading.Event())
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    print("ready", flush=True)
    while not stop.is_set():
        for table, columns, rows, json_columns in batches:
            sink.insert(table, columns, rows, json_columns)
    sink.close()


def run_variant(variant: str, args: argparse.Namespace, url: str) -> dict[str, Any]:
    here = str(Path(__file__).resolve())
    env = {**os.environ, "RRLAB_CLICKHOUSE_URL": url}
    common = ["--capture-file", str(args.capture_file), "--batch", str(args.batch)]
    common += ["--interval-ms", str(args.interval_ms), "--concurrency", str(args.concurrency)]
    beside = None
    if variant == "mock-beside-clickhouse":
        beside = subprocess.Popen(
            [sys.executable, here, "--insert-beside", *common],
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert beside.stdout is not None
        if beside.stdout.readline().strip() != "ready":
            raise RuntimeError("the inserting process did not start")
    sink = "chdb" if variant == "chdb" else "mock"
    output = subprocess.run(
        [sys.executable, here, "--once", sink, *common],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    if beside is not None:
        beside.terminate()
        if beside.wait() != 0:
            raise RuntimeError("the inserting process failed")
    return json.loads(output.splitlines()[-1])


def compare(args: argparse.Namespace) -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {variant: [] for variant in VARIANTS}
    with (
        tempfile.TemporaryDirectory(prefix="rrlab-sink-cpu-") as home,
        EmbeddedClickHouse(Path(home) / "clickhouse") as server,
    ):
        client = clickhouse_client(server.url)
        for number in range(args.rounds):
            order = VARIANTS if number % 2 == 0 else VARIANTS[::-1]
            for variant in order:
                # fresh tables every run: parts left by earlier runs would make
                # ClickHouse merge beside later ones
                client.command(f"DROP DATABASE IF EXISTS {DATABASE} SYNC")
                run_migrations(client, DATABASE)
                runs[variant].append(run_variant(variant, args, server.url))
        client.command(f"DROP DATABASE IF EXISTS {DATABASE} SYNC")
        client.close()
    summary: dict[str, Any] = {"rounds": args.rounds, "load_avg": os.getloadavg()}
    for variant, results in runs.items():
        summary[variant] = {
            key: round(statistics.median(r[key] for r in results), 2) for key in results[0]
        }
        summary[variant]["cpu_us_per_row_range"] = [
            round(min(r["cpu_us_per_row"] for r in results), 2),
            round(max(r["cpu_us_per_row"] for r in results), 2),
        ]
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inserts", type=int, default=40_000, help="backlog size to capture")
    parser.add_argument("--capture-file", type=Path, help="default: hot_path_bench's file")
    parser.add_argument("--batch", type=int, default=5000, help="consumer.flush_batch_size")
    parser.add_argument("--interval-ms", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--once", choices=("mock", "chdb"), help="one replay, one JSON line")
    parser.add_argument("--insert-beside", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.capture_file = args.capture_file or Path(str(CAPTURE).format(inserts=args.inserts))
    if not args.capture_file.exists():
        capture(args.capture_file, args.inserts)
    if args.insert_beside:
        insert_beside(load_messages(args.capture_file), args)
    elif args.once:
        print(json.dumps(replay(load_messages(args.capture_file), args, args.once)))
    else:
        print(json.dumps(compare(args), indent=1))


if __name__ == "__main__":
    main()
