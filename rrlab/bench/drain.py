"""How fast the consumer drains a replication backlog, against ``pg_recvlogical``'s ceiling.

:func:`drain_bench` writes a backlog of TaskRun changes with the producer's writer into a
throwaway embedded PostgreSQL, then drains copies of the same slot
(``pg_copy_logical_replication_slot``), interleaved round after round: ``pg_recvlogical``
(the walsender's speed, nothing done with the data), the consumer process with the mock
sink, and the consumer process with the embedded ClickHouse (fresh tables every round).

A consumer drain is timed from the moment its stream is started (its ``ready`` report) to
the moment everything up to the backlog's end LSN is flushed and acknowledged (its last
report, written when it stops at ``--end-lsn``); process start-up (imports) is excluded and
reported apart. ``pg_recvlogical`` is timed from spawn to exit (``--endpos``). Each drain
also records the CPU seconds of the draining process (the consumer's include its start-up,
~0.4 s of imports) and, for the chdb sink, of the ClickHouse endpoint: on a shared machine
CPU per row is steadier than rows/s.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil

from rrlab.bench.saved import CHDB, MOCK, PG_RECVLOGICAL, VARIANTS, save_result
from rrlab.config import RunConfig, load_config
from rrlab.exceptions import ConfigError, RunError
from rrlab.infra.ch_migrations import run_migrations
from rrlab.infra.clickhouse import EmbeddedClickHouse, clickhouse_client
from rrlab.infra.embedded_postgres import EmbeddedPostgres, pg_binary
from rrlab.infra.pg_setup import current_wal_lsn, load_fixtures, setup_profiling_database
from rrlab.infra.postgres import connect
from rrlab.producer.generator import RunGenerator
from rrlab.producer.writer import RunPool, RunWriter
from rrlab.runner.disk_space import (
    DiskNeed,
    check_disk_space,
    clickhouse_need,
    postgres_need,
    wal_ceiling_bytes,
)
from rrlab.service.events import lsn_to_int, lsn_to_str
from rrlab.urls import PostgresUrl

log = logging.getLogger(__name__)

WRITE_BATCH = 500
BENCH_DATABASE = "rrlab_bench"
BENCH_SLOT = "rrlab_bench_slot"
BENCH_PUBLICATION = "rrlab_bench_publication"
# generous: a drain of the default backlog takes seconds; this only catches a hung drain
DRAIN_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class DrainOptions:
    """What to build and how to drain it; ``consumer_params``/``overrides`` shape the
    consumer's settings like ``rrlab run --config/--set`` (slot, publication and sink are
    the benchmark's own)."""

    inserts: int = 100_000
    update_ratio: float = 0.25
    deletes: int = 0
    payload_kb: float = 1.0
    rounds: int = 3
    consumer_params: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    results_dir: str = "results"
    seed: int = 7

    @property
    def updates(self) -> int:
        return round(self.inserts * self.update_ratio)

    @property
    def changes(self) -> int:
        """The backlog's inserts, updates and deletes."""
        return self.inserts + self.updates + self.deletes

    def check(self) -> None:
        if self.inserts < 1:
            raise ConfigError(f"--inserts must be at least 1 (got {self.inserts}).")
        if not 0 <= self.update_ratio <= 10:
            raise ConfigError(
                f"--update-ratio must be between 0 and 10 updates per insert "
                f"(got {self.update_ratio})."
            )
        if not 0 <= self.deletes <= self.inserts:
            raise ConfigError(
                f"--deletes must be between 0 and --inserts ({self.inserts}); got {self.deletes}."
            )
        if not 0 <= self.payload_kb <= 1024:
            raise ConfigError(f"--payload-kb must be between 0 and 1024 (got {self.payload_kb}).")
        if self.rounds < 1:
            raise ConfigError(f"--rounds must be at least 1 (got {self.rounds}).")


@dataclass
class Backlog:
    """The changes written, and the WAL they span."""

    inserts: int
    updates: int
    deletes: int
    start_lsn: int
    end_lsn: int

    @property
    def rows(self) -> int:
        return self.inserts + self.updates + self.deletes


@dataclass
class Drain:
    """One timed drain: ``seconds`` as described in the module docstring."""

    round: int
    variant: str
    seconds: float
    rows: int
    received_rows: int
    startup_s: float = 0.0
    cpu_s: float = 0.0
    clickhouse_cpu_s: float = 0.0
    flushes: int = 0
    rows_flushed: int = 0

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds


class BacklogMix:
    """Splits each batch by what is still to write, so the backlog has exactly the changes
    asked for (the writer turns updates and deletes it has no runs for into inserts)."""

    def __init__(self, inserts: int, updates: int, deletes: int) -> None:
        self.remaining = [inserts, updates, deletes]

    def split(self, records: int) -> tuple[int, int, int]:
        inserts, updates, deletes = (max(n, 0) for n in self.remaining)
        total = inserts + updates + deletes
        deletes = min(deletes, records * deletes // total)
        inserts = min(inserts, records * inserts // total)
        return inserts, records - inserts - deletes, deletes

    def record(self, inserts: int, updates: int, deletes: int) -> None:
        for kind, count in enumerate((inserts, updates, deletes)):
            self.remaining[kind] -= count

    @property
    def left(self) -> int:
        return sum(max(n, 0) for n in self.remaining)


def build_backlog(url: PostgresUrl, options: DrainOptions) -> Backlog:
    """Write the backlog with the producer's writer (batches of 500 records, each kind its
    own transaction, updates as real status transitions of earlier runs)."""
    mix = BacklogMix(options.inserts, options.updates, options.deletes)
    with connect(url) as conn:
        fixtures = load_fixtures(conn)
        start_lsn = lsn_to_int(current_wal_lsn(conn))
    rng = random.Random(options.seed)
    generator = RunGenerator(rng, fixtures, payload_size_kb=options.payload_kb)
    writer = RunWriter(url, generator, RunPool(rng), mix)  # type: ignore[arg-type]
    written = Backlog(0, 0, 0, start_lsn, 0)
    try:
        while mix.left:
            outcome = writer.write_batch(min(WRITE_BATCH, mix.left))
            if outcome.error:
                raise RunError(f"Writing the benchmark backlog failed: {outcome.error}")
            mix.record(outcome.inserts, outcome.updates, outcome.deletes)
            written.inserts += outcome.inserts
            written.updates += outcome.updates
            written.deletes += outcome.deletes
    finally:
        writer.close()
    with connect(url) as conn:
        written.end_lsn = lsn_to_int(current_wal_lsn(conn))
    return written


@contextmanager
def slot_copy(url: PostgresUrl, slot: str) -> Iterator[str]:
    """A fresh copy of ``slot`` (same position, same plugin), dropped afterwards."""
    name = f"bench_{uuid.uuid4().hex[:12]}"
    with connect(url) as conn:
        conn.execute("SELECT pg_copy_logical_replication_slot(%s, %s)", (slot, name))
    try:
        yield name
    finally:
        with connect(url) as conn:
            conn.execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                "WHERE slot_name = %s AND NOT active",
                (name,),
            )


def drain_pg_recvlogical(url: PostgresUrl, slot: str, publication: str, backlog: Backlog) -> Drain:
    """``pg_recvlogical`` streaming the slot up to the backlog's end; it received every row,
    as it exits 0 only once it reached ``--endpos``."""
    command = [
        pg_binary("pg_recvlogical"),
        "--dbname",
        url.url,
        "--slot",
        slot,
        "--start",
        "--no-loop",
        "--option",
        "proto_version=1",
        "--option",
        f"publication_names={publication}",
        "--endpos",
        lsn_to_str(backlog.end_lsn),
        "--file",
        "/dev/null",
    ]
    with tempfile.TemporaryFile() as errors:
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=errors)
        code, cpu_s = _wait_with_cpu(process, DRAIN_TIMEOUT_S)
        seconds = time.perf_counter() - started
        if code != 0:
            errors.seek(0)
            raise RunError(
                f"pg_recvlogical failed ({'timed out' if code is None else f'exit {code}'}): "
                f"{errors.read().decode(errors='replace').strip()[-500:]}"
            )
    return Drain(0, PG_RECVLOGICAL, seconds, backlog.rows, backlog.rows, cpu_s=cpu_s)


def consumer_config(options: DrainOptions, slot: str, sink: str, database: str) -> RunConfig:
    """The consumer's settings: the user's params and overrides, the benchmark's slot/sink."""
    config = load_config(options.consumer_params, options.overrides)
    return config.with_overrides(
        {
            "consumer.slot_name": slot,
            "consumer.publication_name": BENCH_PUBLICATION,
            "clickhouse.sink": sink,
            "clickhouse.database": database,
        }
    )


def drain_consumer(
    config: RunConfig,
    database_url: PostgresUrl,
    clickhouse_url: str | None,
    backlog: Backlog,
    workdir: Path,
) -> Drain:
    """Run ``python -m rrlab.service.consumer`` until it stops at the backlog's end LSN."""
    name = f"{config.consumer.slot_name}-{config.clickhouse.sink}"
    config_path = workdir / f"{name}.json"
    stats_path = workdir / f"{name}.stats.jsonl"
    log_path = workdir / f"{name}.log"
    config_path.write_text(json.dumps(config.to_dict()))
    env = {**os.environ, "RRLAB_DATABASE_URL": database_url.url}
    if clickhouse_url is not None:
        env["RRLAB_CLICKHOUSE_URL"] = clickhouse_url
    command = [
        sys.executable,
        "-m",
        "rrlab.service.consumer",
        "--config",
        str(config_path),
        "--stats-file",
        str(stats_path),
        "--end-lsn",
        lsn_to_str(backlog.end_lsn),
    ]
    spawned = time.time()
    with open(log_path, "wb") as output:
        process = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT)
        code, cpu_s = _wait_with_cpu(process, DRAIN_TIMEOUT_S)
    if code != 0:
        tail = log_path.read_text(errors="replace")[-1500:]
        raise RunError(
            f"The consumer ({config.clickhouse.sink} sink) did not drain the backlog "
            f"({'timed out' if code is None else f'exit {code}'}); its log ends:\n{tail}"
        )
    drain = _drain_from_reports(stats_path, spawned, backlog)
    drain.cpu_s = cpu_s
    return drain


def _wait_with_cpu(process: subprocess.Popen[bytes], timeout_s: float) -> tuple[int | None, float]:
    """Wait for ``process``; its exit code (None when killed at the timeout) and the CPU
    seconds it used (user + system, from the kernel's accounting of the reaped child).

    CPU per row is steadier than rows/s on a shared machine: other load slows a drain but
    barely changes the work it does."""
    deadline = time.monotonic() + timeout_s
    while True:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            process.returncode = os.waitstatus_to_exitcode(status)
            return process.returncode, usage.ru_utime + usage.ru_stime
        if time.monotonic() > deadline:
            process.kill()
            _, _, usage = os.wait4(process.pid, 0)
            process.returncode = -9
            return None, usage.ru_utime + usage.ru_stime
        time.sleep(0.01)


def _drain_from_reports(stats_path: Path, spawned: float, backlog: Backlog) -> Drain:
    reports = [json.loads(line) for line in stats_path.read_text().splitlines() if line]
    ready = next(r for r in reports if r.get("type") == "ready")
    stats = [r for r in reports if r.get("type") == "stats"]
    last = stats[-1]
    if last["acked_lsn"] < backlog.end_lsn:
        raise RunError(
            f"The consumer stopped with {lsn_to_str(last['acked_lsn'])} acknowledged, short of "
            f"the backlog's end {lsn_to_str(backlog.end_lsn)}."
        )
    return Drain(
        round=0,
        variant="",
        seconds=last["t"] - ready["t"],
        rows=backlog.rows,
        received_rows=sum(r["records"] for r in stats),
        startup_s=ready["t"] - spawned,
        flushes=sum(r["flushes"] for r in stats),
        rows_flushed=sum(r["rows_flushed"] for r in stats),
    )


def spread(values: list[float]) -> dict[str, float]:
    """Median, min and max, rounded for reading."""
    return {
        "median": round(statistics.median(values), 3),
        "min": round(min(values), 3),
        "max": round(max(values), 3),
    }


def summarise(options: DrainOptions, backlog: Backlog, drains: list[Drain]) -> dict[str, Any]:
    """The result object: medians per variant, per-round ratios to pg_recvlogical, all drains."""
    by_variant = {v: [d for d in drains if d.variant == v] for v in VARIANTS}
    ceiling = {d.round: d.rows_per_s for d in by_variant[PG_RECVLOGICAL]}
    result: dict[str, Any] = {
        "rows": backlog.rows,
        "inserts": backlog.inserts,
        "updates": backlog.updates,
        "deletes": backlog.deletes,
        "payload_kb": options.payload_kb,
        "wal_mb": round((backlog.end_lsn - backlog.start_lsn) / 1e6, 1),
        "rounds": options.rounds,
        "all_rows_received": all(d.received_rows == d.rows for d in drains),
    }
    for variant, runs in by_variant.items():
        rates = [d.rows_per_s for d in runs]
        result[f"{variant}_rows_per_s"] = round(statistics.median(rates))
        result[f"{variant}_rows_per_s_range"] = [round(min(rates)), round(max(rates))]
        result[f"{variant}_cpu_us_per_row"] = round(
            statistics.median(d.cpu_s for d in runs) * 1e6 / backlog.rows, 1
        )
    result["chdb_clickhouse_cpu_us_per_row"] = round(
        statistics.median(d.clickhouse_cpu_s for d in by_variant[CHDB]) * 1e6 / backlog.rows, 1
    )
    for variant in (MOCK, CHDB):
        result[f"ratio_{variant}"] = spread(
            [d.rows_per_s / ceiling[d.round] for d in by_variant[variant]]
        )
    result["drains"] = [{**asdict(d), "rows_per_s": round(d.rows_per_s)} for d in drains]
    result["machine"] = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    result["consumer"] = asdict(consumer_config(options, BENCH_SLOT, MOCK, "bench").consumer)
    return result


def backlog_needs(options: DrainOptions, workdir: Path) -> list[DiskNeed]:
    """What the benchmark writes in ``workdir``: the backlog in its PostgreSQL with all its
    WAL (the slot is only copied, never advanced), and one copy of it in ClickHouse per
    round (a dropped database's files stay for 8 minutes)."""
    changes, payload_kb = options.changes, options.payload_kb
    return [
        postgres_need(changes, payload_kb, workdir / "pg", wal_ceiling_bytes()),
        clickhouse_need(changes * options.rounds, payload_kb, workdir / "clickhouse"),
    ]


def drain_bench(
    options: DrainOptions | None = None, *, progress: Callable[[str], None] = log.info
) -> dict[str, Any]:
    """Build the backlog, drain it ``options.rounds`` times with each variant, interleaved,
    save the result under ``results/bench/`` and return it (see :func:`summarise`)."""
    options = options or DrainOptions()
    options.check()
    # bad params fail before anything starts
    config = consumer_config(options, BENCH_SLOT, MOCK, "bench")
    if config.output.check_disk_space:
        check_disk_space(
            backlog_needs(options, Path(tempfile.gettempdir()) / "rrlab-bench-*"),
            f"a backlog of {options.changes:,} changes (--inserts, --update-ratio, --deletes) "
            f"with --payload-kb {options.payload_kb:g}, drained into ClickHouse "
            f"{options.rounds} time(s) (--rounds)",
            "use fewer --inserts or --rounds, set TMPDIR to a folder on a larger disk",
        )
    with tempfile.TemporaryDirectory(prefix="rrlab-bench-") as home:
        workdir = Path(home)
        server = EmbeddedPostgres(workdir / "pg")
        clickhouse = EmbeddedClickHouse(workdir / "clickhouse")
        try:
            config = load_config(
                overrides={
                    "postgres.database_name": BENCH_DATABASE,
                    "consumer.slot_name": BENCH_SLOT,
                    "consumer.publication_name": BENCH_PUBLICATION,
                }
            )
            url = setup_profiling_database(server.start(), config)
            clickhouse.start()
            progress(f"writing the backlog ({options.inserts:,} inserts)…")
            backlog = build_backlog(url, options)
            progress(
                f"backlog: {backlog.rows:,} changes ({backlog.inserts:,} inserts, "
                f"{backlog.updates:,} updates, {backlog.deletes:,} deletes), "
                f"{(backlog.end_lsn - backlog.start_lsn) / 1e6:.0f} MB of WAL"
            )
            drains = []
            for number in range(1, options.rounds + 1):
                for variant in VARIANTS:
                    drain = _drain_once(variant, options, url, clickhouse, backlog, workdir)
                    drain.round, drain.variant = number, variant
                    drains.append(drain)
                    progress(
                        f"round {number} {variant:<15} {drain.rows_per_s:>9,.0f} rows/s "
                        f"({drain.seconds:.2f} s)"
                    )
        finally:
            clickhouse.stop()
            server.stop(force=True)
    result = summarise(options, backlog, drains)
    result["saved_to"] = str(save_result(result, Path(options.results_dir)))
    return result


def _drain_once(
    variant: str,
    options: DrainOptions,
    url: PostgresUrl,
    clickhouse: EmbeddedClickHouse,
    backlog: Backlog,
    workdir: Path,
) -> Drain:
    with slot_copy(url, BENCH_SLOT) as slot:
        if variant == PG_RECVLOGICAL:
            return drain_pg_recvlogical(url, slot, BENCH_PUBLICATION, backlog)
        if variant == MOCK:
            config = consumer_config(options, slot, MOCK, "bench")
            return drain_consumer(config, url, None, backlog, workdir)
        database = f"bench_{slot}"
        client = clickhouse_client(clickhouse.url)
        try:
            run_migrations(client, database)
            config = consumer_config(options, slot, CHDB, database)
            server = psutil.Process(clickhouse.pid)
            before = sum(server.cpu_times()[:2])
            drain = drain_consumer(config, url, clickhouse.url, backlog, workdir)
            drain.clickhouse_cpu_s = sum(server.cpu_times()[:2]) - before
            return drain
        finally:
            client.command(f"DROP DATABASE IF EXISTS {database}")
            client.close()


def format_result(result: dict[str, Any]) -> str:
    """A few lines for a terminal: rows/s of each variant and the ratios."""
    lines = [
        f"{result['rows']:,} changes ({result['inserts']:,} inserts, {result['updates']:,} "
        f"updates, {result['deletes']:,} deletes), {result['wal_mb']} MB of WAL, "
        f"{result['rounds']} rounds"
    ]
    for variant in VARIANTS:
        low, high = result[f"{variant}_rows_per_s_range"]
        line = (
            f"  {variant:<15} {result[f'{variant}_rows_per_s']:>9,} rows/s "
            f"(min {low:,}, max {high:,})"
        )
        line += f", {result[f'{variant}_cpu_us_per_row']} µs CPU/row"
        if variant != PG_RECVLOGICAL:
            ratio = result[f"ratio_{variant}"]
            line += (
                f"  {ratio['median']:.2f}x pg_recvlogical "
                f"(min {ratio['min']:.2f}, max {ratio['max']:.2f})"
            )
        lines.append(line)
    if not result["all_rows_received"]:
        lines.append("  WARNING: a drain did not receive every change")
    lines.append(f"saved to {result['saved_to']} (notebooks/drain.ipynb plots saved results)")
    return "\n".join(lines)
