"""Decode throughput of rrlab's pgoutput decoder on a backlog of 83-column TaskRun rows.

Builds a backlog (inserts + updates, REPLICA IDENTITY FULL, ~1 KB payloads) in a
throwaway embedded PostgreSQL, then drains copies of the slot, interleaved over rounds:
``pg_recvlogical`` (the walsender's ceiling), a raw drain (CopyData only), a drain that
decodes every column typed, and one that types only the ~50 columns the ClickHouse rows
use and skips the old tuple of updates. Finally it times the decoder alone on payloads
held in memory. Run::

    .venv/bin/python benchmarks/decode_bench.py [--inserts 20000] [--updates 5000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from importlib import resources

import psycopg

from rrlab.config import load_config
from rrlab.infra.embedded_postgres import EmbeddedPostgres, pg_binary
from rrlab.infra.pg_setup import load_fixtures, setup_profiling_database
from rrlab.replication.pgoutput import Commit, RelationCache, decode_message
from rrlab.replication.stream import ReplicationStream
from rrlab.service.events import lsn_to_int
from rrlab.urls import PostgresUrl

BATCH = 500
PAYLOAD = """'{"data":"' || repeat(md5(g::text), 30) || '","n":' || g || '}'"""
INSERT_SQL = f"""
INSERT INTO "TaskRun" ("id", "friendlyId", "number", "taskIdentifier", "payload", "payloadType",
  "runtimeEnvironmentId", "projectId", "organizationId", "environmentType", "createdAt",
  "updatedAt", "status", "traceId", "spanId", "traceContext", "queue", "masterQueue", "isTest",
  "runTags", "idempotencyKey", "machinePreset", "taskVersion", "sdkVersion", "cliVersion",
  "queuedAt", "queueTimestamp", "maxAttempts", "ttl", "engine", "annotations", "planType",
  "region", "realtimeStreams", "bulkActionGroupIds", "lockedRetryConfig", "context")
SELECT 'c' || md5(g::text), 'run_' || g, g, 'process-order', {PAYLOAD}, 'application/json',
  %(env)s, %(project)s, %(org)s, 'PRODUCTION', now(), now(), 'PENDING', md5(g::text),
  left(md5(g::text), 16), jsonb_build_object('traceparent', '00-' || md5(g::text) || '-01'),
  'task/default', 'main', false, ARRAY['user:alice', 'env:prod'], 'key-' || g, 'small-1x',
  '20250101.1', '4.0.4', '4.0.4', now(), now(), 3, '10m', 'V2',
  '{{"triggerSource": "api", "taskKind": "STANDARD"}}', 'pro', 'us-east-1', ARRAY['default'],
  ARRAY[]::text[], '{{"maxAttempts": 3, "factor": 2}}', '{{"machine": "small-1x"}}'
FROM generate_series(%(first)s::int, %(last)s::int) AS g
"""
UPDATE_SQL = """
UPDATE "TaskRun" SET "status" = 'EXECUTING', "startedAt" = now(), "executedAt" = now(),
  "lockedAt" = now(), "updatedAt" = now(), "attemptNumber" = 1, "isWarmStart" = false
WHERE "number" BETWEEN %(first)s AND %(last)s
"""


def clickhouse_source_columns() -> set[str]:
    """TaskRun columns that the mapping files read (the service's subset)."""
    names: set[str] = set()
    for table in ("mapping_task_runs_v2.tsv", "mapping_raw_task_runs_payload_v1.tsv"):
        text = resources.files("rrlab.reference").joinpath(table).read_text(encoding="utf-8")
        for row in csv.DictReader(text.splitlines(), delimiter="\t"):
            names.update(part.strip() for part in row["source"].split(","))
    return names


def build_backlog(url: PostgresUrl, inserts: int, updates: int) -> int:
    """Write the backlog in transactions of BATCH rows; return the WAL end LSN after it."""
    with psycopg.connect(url.url, autocommit=True) as conn:
        fixtures = load_fixtures(conn)
        owner = {
            "env": fixtures.environment_id,
            "project": fixtures.project_id,
            "org": fixtures.organization_id,
        }
        for first in range(1, inserts + 1, BATCH):
            last = min(first + BATCH - 1, inserts)
            conn.execute(INSERT_SQL, {**owner, "first": first, "last": last})
        for first in range(1, updates + 1, BATCH):
            conn.execute(UPDATE_SQL, {"first": first, "last": min(first + BATCH - 1, updates)})
        return lsn_to_int(conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()[0])


class SlotCopies:
    """Fresh copies of the backlog's slot, one per drain, dropped afterwards."""

    def __init__(self, url: PostgresUrl, slot: str) -> None:
        self.url = url
        self.slot = slot

    def make(self) -> str:
        name = f"bench_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(self.url.url, autocommit=True) as conn:
            conn.execute("SELECT pg_copy_logical_replication_slot(%s, %s)", (self.slot, name))
        return name

    def drop(self, name: str) -> None:
        with psycopg.connect(self.url.url, autocommit=True) as conn:
            conn.execute("SELECT pg_drop_replication_slot(%s)", (name,))


def drain(
    url: PostgresUrl, slot: str, publication: str, messages: int, handle: Callable
) -> tuple[float, list]:
    """Read ``messages`` XLogData messages, passing each batch to ``handle``; return seconds."""
    with ReplicationStream(url.url, slot, publication) as stream:
        started = time.perf_counter()
        seen = 0
        while seen < messages:
            batch = stream.read(5.0)
            if not batch:
                raise RuntimeError(f"stream went quiet after {seen} of {messages} messages")
            handle(batch)
            seen += len(batch)
        return time.perf_counter() - started


def decoding_handler(relations: RelationCache, decode_old: bool) -> Callable:
    def handle(batch: list) -> None:
        for message in batch:
            decode_message(message.payload, relations, decode_old=decode_old)

    return handle


def recvlogical_seconds(url: PostgresUrl, slot: str, publication: str, end_lsn: int) -> float:
    command = [
        pg_binary("pg_recvlogical"),
        "-d",
        url.url,
        "--slot",
        slot,
        "--start",
        "--no-loop",
        "-o",
        "proto_version=1",
        "-o",
        f"publication_names={publication}",
        "--endpos",
        f"{end_lsn >> 32:X}/{end_lsn & 0xFFFFFFFF:X}",
        "-f",
        "/dev/null",
    ]
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - started


def measure(args: argparse.Namespace) -> dict:
    subset = clickhouse_source_columns()
    rows = args.inserts + args.updates
    with tempfile.TemporaryDirectory(prefix="rrlab-bench-") as home:
        server = EmbeddedPostgres(home)
        try:
            config = load_config(overrides={"postgres.database_name": "decode_bench"})
            url = setup_profiling_database(server.start(), config)
            slot, publication = config.consumer.slot_name, config.consumer.publication_name
            end_lsn = build_backlog(url, args.inserts, args.updates)
            copies = SlotCopies(url, slot)

            # One full drain first: it counts the messages and keeps the payloads.
            transactions = -(-args.inserts // BATCH) - (-args.updates // BATCH)
            payloads: list[bytes] = []
            name = copies.make()
            with ReplicationStream(url.url, name, publication) as stream:
                relations = RelationCache()
                while transactions:
                    batch = stream.read(5.0)
                    if not batch:
                        raise RuntimeError(f"the backlog ended {transactions} commits early")
                    for m in batch:
                        payloads.append(bytes(m.payload))
                        if isinstance(decode_message(m.payload, relations), Commit):
                            transactions -= 1
            copies.drop(name)
            count = len(payloads)

            variants: dict[str, Callable[[str], float]] = {
                "pg_recvlogical": lambda s: recvlogical_seconds(url, s, publication, end_lsn),
                "raw_drain": lambda s: drain(url, s, publication, count, lambda b: None),
                "drain_decode_full": lambda s: drain(
                    url, s, publication, count, decoding_handler(RelationCache(), True)
                ),
                "drain_decode_subset": lambda s: drain(
                    url, s, publication, count, decoding_handler(RelationCache(subset), False)
                ),
            }
            seconds: dict[str, list[float]] = {key: [] for key in variants}
            for _round in range(args.rounds):
                for key, run in variants.items():
                    name = copies.make()
                    try:
                        seconds[key].append(run(name))
                    finally:
                        copies.drop(name)
        finally:
            server.stop(force=True)

    offline = {
        "decode_full": lambda: RelationCache(),
        "decode_subset": lambda: RelationCache(subset),
        "decode_untyped_all": lambda: RelationCache(typed=False),
    }
    offline_seconds: dict[str, list[float]] = {key: [] for key in offline}
    for _round in range(args.rounds):
        for key, make in offline.items():
            relations = make()
            decode_old = key != "decode_subset"
            started = time.perf_counter()
            for payload in payloads:
                decode_message(payload, relations, decode_old=decode_old)
            offline_seconds[key].append(time.perf_counter() - started)

    def summary(values: list[float]) -> dict:
        rates = [rows / s for s in values]
        return {
            "rows_per_s_median": round(statistics.median(rates)),
            "rows_per_s_min": round(min(rates)),
            "rows_per_s_max": round(max(rates)),
        }

    return {
        "rows": rows,
        "messages": count,
        "wal_mb": round(sum(map(len, payloads)) / 1e6, 1),
        "subset_columns": len(subset),
        "rounds": args.rounds,
        "drains": {key: summary(v) for key, v in seconds.items()},
        "decode_only": {key: summary(v) for key, v in offline_seconds.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inserts", type=int, default=20_000)
    parser.add_argument("--updates", type=int, default=5_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    result = measure(args)
    if args.json:
        print(json.dumps(result))
        return
    print(
        f"{result['rows']} rows ({args.inserts} inserts + {args.updates} updates), "
        f"{result['messages']} messages, {result['wal_mb']} MB of pgoutput, "
        f"subset = {result['subset_columns']} columns, {args.rounds} rounds"
    )
    ceiling = result["drains"]["pg_recvlogical"]["rows_per_s_median"]
    for section in ("drains", "decode_only"):
        for key, stats in result[section].items():
            ratio = stats["rows_per_s_median"] / ceiling
            print(
                f"  {key:<22} {stats['rows_per_s_median']:>9,} rows/s "
                f"(min {stats['rows_per_s_min']:,}, max {stats['rows_per_s_max']:,}) "
                f"{ratio:.2f}x pg_recvlogical"
            )


if __name__ == "__main__":
    main()
