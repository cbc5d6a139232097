"""CPU the embedded ClickHouse spends per replicated row, by table variant and insert format.

Replays a captured backlog (``hot_path_bench``'s capture: 1 KB payloads, updates as status
transitions) through the consumer's decoding and row building, then inserts the rows into
chdb in-process in batches of ``--batch`` rows, measuring the process's CPU per row. The
variants take task_runs_v2 apart — as migrated, without its skip indexes, also without its
MATERIALIZED text columns, also with String instead of its JSON columns, into a ``Null``
table (parsing only) — and the payload table with its JSON column or a String; each as
JSONCompactEachRow (the sink's format and settings) and as RowBinary (JSON columns sent as
strings). Variants alternate round by round; medians are printed::

    .venv/bin/python benchmarks/chdb_row_cost.py --rounds 3
"""

from __future__ import annotations

import argparse
import re
import statistics
import struct
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import chdb
import orjson
from chdb_insert_cost import DATABASE, cpu_s, insert_statement
from chdb_insert_formats import insert_columns
from hot_path_bench import CAPTURE, assemble, capture, load_messages

from rrlab.infra.ch_migrations import migrations
from rrlab.replication.pgoutput import RelationCache
from rrlab.service import transform
from rrlab.service.consumer import source_columns
from rrlab.service.events import Transaction
from rrlab.service.sinks import INSERT_FORMAT, INSERT_SETTINGS, encode_rows
from rrlab.service.transactions import TransactionAssembler

Row = Sequence[Any]


def replayed_rows(messages: list[bytes]) -> tuple[list[Row], list[Row]]:
    """The task_runs_v2 and payload rows the consumer builds from ``messages``."""

    class Collect:
        events: list = []

        def add_transaction(self, transaction: Transaction) -> None:
            self.events.extend(transaction.events)

        def note_position(self, lsn: int) -> None:
            pass

    receiver = Collect()
    assemble(
        messages,
        RelationCache(source_columns()),
        TransactionAssembler(receiver, now_ms=lambda: 0.0),
    )
    tasks = [transform.task_run_row(event) for event in receiver.events]
    payloads = [transform.payload_row(event) for event in receiver.events if event.kind == "insert"]
    return tasks, payloads


def _varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _string(value: str | bytes) -> bytes:
    data = value.encode() if isinstance(value, str) else value
    return _varint(len(data)) + data


_FIXED = {"UInt8": "<B", "UInt32": "<I", "UInt64": "<Q", "Float64": "<d", "DateTime64(3)": "<q"}


def _binary(value: Any, ch_type: str) -> bytes:
    """One value in RowBinary; JSON as a string (input_format_binary_read_json_as_string)."""
    if ch_type.startswith("Nullable("):
        return b"\x01" if value is None else b"\x00" + _binary(value, ch_type[9:-1])
    if ch_type.startswith("LowCardinality("):
        ch_type = ch_type[15:-1]
    if ch_type in _FIXED:
        return struct.pack(_FIXED[ch_type], int(value) if ch_type != "Float64" else value)
    if ch_type.startswith("JSON"):
        return _string(value if isinstance(value, str) else orjson.dumps(value))
    if ch_type == "Array(String)":
        return _varint(len(value)) + b"".join(map(_string, value))
    if ch_type == "String":
        return _string(value)
    raise ValueError(f"no RowBinary encoding here for {ch_type}")


def row_binary(rows: Sequence[Row], types: Sequence[str]) -> bytes:
    return b"".join(b"".join(map(_binary, row, types)) for row in rows)


def create_variants(session: Any) -> None:
    """rrlab's tables, plus task_runs_v2 and payload variants with parts of them removed."""
    statements = [s for m in migrations(DATABASE) for s in m.statements]
    for statement in statements:
        session.query(statement)
    task = next(s for s in statements if "TABLE IF NOT EXISTS bench.task_runs_v2" in s)
    payload = next(s for s in statements if "bench.raw_task_runs_payload_v1" in s)
    lines = [line for line in task.splitlines() if not line.strip().startswith("INDEX")]
    no_index = re.sub(r",\s*\)\s*ENGINE", "\n)\nENGINE", "\n".join(lines))
    # the two MATERIALIZED columns: from their name to the `toJSONString(x))` that ends them
    no_text = re.sub(
        r",\s*\w+_text\s+String MATERIALIZED.*?toJSONString\(\w+\)\)", "", no_index, flags=re.S
    )
    no_json = re.sub(r"JSON\(max_dynamic_paths = \d+\)", "String", no_text)
    variants = {"t_no_index": no_index, "t_no_text": no_text, "t_no_json": no_json}
    for name, ddl in variants.items():
        session.query(ddl.replace("bench.task_runs_v2", f"bench.{name}"))
    session.query(
        no_index.replace("bench.task_runs_v2", "bench.t_null").split("ENGINE")[0] + "ENGINE = Null"
    )
    session.query(
        re.sub(r"JSON\(max_dynamic_paths = \d+\)", "String", payload).replace(
            "raw_task_runs_payload_v1", "p_string"
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--inserts", type=int, default=40_000, help="backlog size to capture")
    parser.add_argument("--batch", type=int, default=5_000, help="rows per insert")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    path = Path(str(CAPTURE).format(inserts=args.inserts))
    if not path.exists():
        capture(path, args.inserts)
    tasks, payloads = replayed_rows(load_messages(path))
    types = dict(insert_columns())
    task_types = [types[name] for name in transform.TASK_RUN_COLUMNS]
    payload_types = ["String", "DateTime64(3)", "JSON"]
    binary_settings = {**INSERT_SETTINGS, "input_format_binary_read_json_as_string": 1}
    encodings: dict[
        str, tuple[str, dict[str, Any], Callable[[Sequence[Row], list[str]], bytes]]
    ] = {
        INSERT_FORMAT: (INSERT_FORMAT, INSERT_SETTINGS, lambda rows, _types: encode_rows(rows)),
        "RowBinary": ("RowBinary", binary_settings, row_binary),
    }
    tables = [
        (t, transform.TASK_RUN_COLUMNS, tasks, task_types)
        for t in ("task_runs_v2", "t_no_index", "t_no_text", "t_no_json", "t_null")
    ]
    tables += [
        (t, transform.PAYLOAD_COLUMNS, payloads, payload_types)
        for t in ("raw_task_runs_payload_v1", "p_string")
    ]
    inserts = {}
    for label, (fmt, settings, encode) in encodings.items():
        for table, columns, rows, row_types in tables:
            head = insert_statement(table, columns, fmt, settings)
            bodies = [
                head + encode(rows[i : i + args.batch], row_types)
                for i in range(0, len(rows), args.batch)
            ]
            inserts[(table, label)] = (bodies, len(rows))
    spent: dict[tuple[str, str], list[float]] = {key: [] for key in inserts}
    with tempfile.TemporaryDirectory() as data_dir:
        session = chdb.connect(data_dir)
        session.query(f"CREATE DATABASE {DATABASE}")
        create_variants(session)
        for _round in range(args.rounds):
            for (table, label), (bodies, count) in inserts.items():
                if table != "t_null":
                    session.query(f"TRUNCATE TABLE {DATABASE}.{table}")
                started = cpu_s()
                for body in bodies:
                    session.query(body, "TSV")
                spent[(table, label)].append((cpu_s() - started) / count * 1e6)
        session.close()
    print(f"{len(tasks)} task rows, {len(payloads)} payload rows, {args.batch} rows per insert")
    print(f"{'table':26s} | {INSERT_FORMAT} µs/row (range) | RowBinary µs/row (range)")
    for table, *_ in tables:
        cells = []
        for label in encodings:
            values = spent[(table, label)]
            cells.append(f"{statistics.median(values):5.1f} ({min(values):.1f}–{max(values):.1f})")
        print(f"{table:26s} | " + " | ".join(cells))


if __name__ == "__main__":
    main()
