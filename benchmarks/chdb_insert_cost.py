"""CPU the embedded ClickHouse spends per task_runs_v2 insert, by batch size (chdb in-process).

Inserts the same generated rows (JSONCompactEachRow with the sink's settings, the whole
statement through ``query()`` as the embedded endpoint runs it) into rrlab's task_runs_v2
table in batches of each size until ``--rows`` rows are in, then waits ``--settle`` seconds
for the background merges. Reports CPU per row and per insert while inserting (merges
running meanwhile included) and the merges' CPU after; the process's CPU, so run it on a
quiet machine and compare sizes within one run::

    .venv/bin/python benchmarks/chdb_insert_cost.py --sizes 10 300 1000 5000
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from collections.abc import Mapping, Sequence
from typing import Any

import chdb
from chdb_insert_formats import insert_columns, make_rows

from rrlab.infra.ch_migrations import migrations
from rrlab.service.sinks import INSERT_FORMAT, INSERT_SETTINGS, encode_rows

DATABASE = "bench"
SAMPLE_ROWS = 5_000


def cpu_s() -> float:
    """CPU seconds of this process so far (user + system: chdb works in its threads)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def insert_statement(
    table: str, columns: Sequence[str], fmt: str, settings: Mapping[str, Any]
) -> bytes:
    """``INSERT INTO bench.<table> (<columns>) SETTINGS … FORMAT <fmt>`` and a newline: the
    head of a query whose data follows, as the embedded endpoint runs inserts."""
    listed = ", ".join(f"{key} = '{value}'" for key, value in settings.items())
    names = ", ".join(columns)
    return f"INSERT INTO {DATABASE}.{table} ({names}) SETTINGS {listed} FORMAT {fmt}\n".encode()


def measure(
    session: Any, head: bytes, rows: list[list[Any]], size: int, total: int
) -> tuple[float, float, float, int]:
    """CPU µs per row and ms per insert while inserting ``total`` rows in batches of
    ``size``; then the CPU clock at the end and the rows inserted."""
    bodies = [encode_rows(rows[i : i + size]) for i in range(0, len(rows), size)]
    session.query(f"TRUNCATE TABLE {DATABASE}.task_runs_v2")
    inserted, inserts = 0, 0
    started = cpu_s()
    while inserted < total:
        for body in bodies:
            session.query(head + body, "TSV")
            inserted += body.count(b"\n") + 1
            inserts += 1
    inserting = cpu_s() - started
    return inserting / inserted * 1e6, inserting / inserts * 1e3, cpu_s(), inserted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 300, 1000, 5000])
    parser.add_argument("--rows", type=int, default=20_000, help="rows inserted per size")
    parser.add_argument("--settle", type=float, default=5.0, help="seconds of merges after")
    args = parser.parse_args()
    columns = insert_columns()
    names = [name for name, _ in columns]
    head = insert_statement("task_runs_v2", names, INSERT_FORMAT, INSERT_SETTINGS)
    rows = make_rows(SAMPLE_ROWS, columns)
    with tempfile.TemporaryDirectory() as data_dir:
        session = chdb.connect(data_dir)
        session.query(f"CREATE DATABASE {DATABASE}")
        for migration in migrations(DATABASE):
            for statement in migration.statements:
                session.query(statement)
        print("batch rows | CPU µs/row inserting | CPU ms/insert | merges after, µs/row")
        for size in args.sizes:
            total = min(args.rows, 200 * size)  # tiny batches: 200 inserts are enough
            per_row, per_insert, settled_from, inserted = measure(session, head, rows, size, total)
            time.sleep(args.settle)
            merges = (cpu_s() - settled_from) / inserted * 1e6
            print(f"{size:10d} | {per_row:20.1f} | {per_insert:13.2f} | {merges:8.1f}")
        session.close()


if __name__ == "__main__":
    main()
