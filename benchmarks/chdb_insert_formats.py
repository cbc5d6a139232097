"""Rows/s of task_runs_v2 inserts through clickhouse-connect into the embedded endpoint, by format.

Native (``client.insert`` of Python rows), Arrow (``insert_arrow`` of a pyarrow table built
from the same rows) and JSONCompactEachRowWithNames (``raw_insert`` of json.dumps lines, the
upstream service's format) are timed in one run, rounds interleaved; medians of wall time and
of the client process's CPU time (what the consumer itself pays) are reported.
Usage: ``.venv/bin/python benchmarks/chdb_insert_formats.py [--rows N] [--rounds R]``.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from importlib import resources
from typing import Any

import pyarrow as pa
from clickhouse_connect.driver.client import Client

from rrlab.infra.ch_migrations import run_migrations
from rrlab.infra.clickhouse import EmbeddedClickHouse, clickhouse_client

DATABASE = "bench"
TABLE = f"{DATABASE}.task_runs_v2"
EPOCH_MS = 1_760_000_000_000
JSON_SETTINGS = {"input_format_read_datetime_number_as_raw_value": 1}


def _tsv(name: str) -> list[dict[str, str]]:
    text = resources.files("rrlab.reference").joinpath(name).read_text(encoding="utf-8")
    return list(csv.DictReader(text.splitlines(), delimiter="\t", quoting=csv.QUOTE_NONE))


def insert_columns() -> list[tuple[str, str]]:
    """(name, ClickHouse type) in the service's insert order, materialized columns left out."""
    types = {row["column"]: row["ch_type"] for row in _tsv("clickhouse_task_runs_v2.tsv")}
    names = [row["ch_column"] for row in _tsv("mapping_task_runs_v2.tsv")]
    return [(name, types[name]) for name in names if name not in ("output_text", "error_text")]


def _value(name: str, ch_type: str, rng: random.Random, i: int) -> Any:
    nullable = ch_type.startswith("Nullable(")
    base = ch_type.removeprefix("Nullable(").removesuffix(")") if nullable else ch_type
    if nullable and rng.random() < 0.5:
        return None
    if base.startswith("DateTime64"):
        return EPOCH_MS + i * 7 + rng.randrange(1000)
    if base.startswith("JSON"):
        if name == "error":
            return {} if rng.random() < 0.9 else {"data": {"message": "boom", "name": "Error"}}
        return {"data": {"ok": True, "n": i, "items": [rng.random() for _ in range(3)]}}
    if base.startswith("Array"):
        return [f"tag_{rng.randrange(20)}" for _ in range(rng.randrange(3))]
    if base.startswith(("UInt", "Int")):
        # _is_deleted = 1 would make ReplacingMergeTree drop the row.
        return {"attempt": 1, "_version": i + 1, "_is_deleted": 0}.get(name, rng.randrange(2))
    if base == "Float64":
        return rng.random() * 10
    if base.startswith("LowCardinality"):
        return rng.choice(["PRODUCTION", "STAGING", "DEVELOPMENT"])
    return f"{name}_{rng.getrandbits(64):016x}"


def make_rows(count: int, columns: list[tuple[str, str]]) -> list[list[Any]]:
    rng = random.Random(42)
    rows = [[_value(name, ch_type, rng, i) for name, ch_type in columns] for i in range(count)]
    organization = columns.index(("organization_id", "String"))
    for row in rows:
        row[organization] = f"org_{rng.randrange(5)}"
    return rows


def _arrow_type(ch_type: str) -> pa.DataType:
    base = ch_type.removeprefix("Nullable(").removesuffix(")")
    if base.startswith("DateTime64"):
        # Arrow int64 into DateTime64 is read as seconds: send timestamps.
        return pa.timestamp("ms")
    if base.startswith("JSON"):
        return pa.string()
    if base.startswith("Array"):
        return pa.list_(pa.string())
    if base == "Float64":
        return pa.float64()
    if base.startswith(("UInt", "Int")):
        return pa.uint64() if base == "UInt64" else pa.int64()
    return pa.string()


def insert_native(client: Client, columns: list[tuple[str, str]], rows: list[list[Any]]) -> None:
    client.insert(TABLE, rows, column_names=[name for name, _ in columns])


def insert_arrow(client: Client, columns: list[tuple[str, str]], rows: list[list[Any]]) -> None:
    arrays = []
    for index, (_, ch_type) in enumerate(columns):
        values = [row[index] for row in rows]
        if ch_type.startswith("JSON"):
            values = [json.dumps(v, separators=(",", ":")) for v in values]
        arrays.append(pa.array(values, _arrow_type(ch_type)))
    client.insert_arrow(TABLE, pa.Table.from_arrays(arrays, names=[n for n, _ in columns]))


def insert_json(client: Client, columns: list[tuple[str, str]], rows: list[list[Any]]) -> None:
    names = [name for name, _ in columns]
    lines = [json.dumps(names)] + [json.dumps(row, separators=(",", ":")) for row in rows]
    client.raw_insert(
        TABLE,
        names,
        "\n".join(lines) + "\n",
        settings=JSON_SETTINGS,
        fmt="JSONCompactEachRowWithNames",
    )


FORMATS: dict[str, Callable[[Client, list[tuple[str, str]], list[list[Any]]], None]] = {
    "Arrow (insert_arrow)": insert_arrow,
    "Native (insert)": insert_native,
    "JSONCompactEachRowWithNames (raw_insert)": insert_json,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    columns = insert_columns()
    rows = make_rows(args.rows, columns)
    timings: dict[str, list[float]] = {name: [] for name in FORMATS}
    client_cpu: dict[str, list[float]] = {name: [] for name in FORMATS}
    with tempfile.TemporaryDirectory() as data_dir, EmbeddedClickHouse(data_dir) as endpoint:
        client = clickhouse_client(endpoint.url)
        run_migrations(client, DATABASE)
        for insert in FORMATS.values():  # warm-up, also checks every format works
            insert(client, columns, rows[:100])
        for _ in range(args.rounds):
            for name, insert in FORMATS.items():
                start, cpu = time.perf_counter(), time.process_time()
                insert(client, columns, rows)
                timings[name].append(time.perf_counter() - start)
                client_cpu[name].append(time.process_time() - cpu)
        # Every format inserted the same runs; ReplacingMergeTree keeps one row per run.
        stored = client.command(f"SELECT count() FROM {TABLE} FINAL")
    print(f"{args.rows} task_runs_v2 rows x {args.rounds} rounds; {stored} distinct runs stored")
    for name, seconds in timings.items():
        median = statistics.median(seconds)
        cpu = statistics.median(client_cpu[name])
        print(
            f"{name:42s} {args.rows / median:>9,.0f} rows/s  median {median * 1000:5.0f} ms, "
            f"client CPU {cpu * 1000:5.0f} ms"
        )


if __name__ == "__main__":
    main()
