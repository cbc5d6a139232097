"""Rows/s of the transform (task_run_row + payload_row) on realistic TaskRun change events.

Events come from the producer's seeded generator (1 KB JSON payloads, some super+json,
outputs, failed runs with errors), typed as the pgoutput decoder hands them over.
The pre-built events are moved out of the garbage collector's sight (``gc.freeze``) and
transformed one flush-sized batch at a time, so the collector sees what a consumer holds:
the batch in flight. Rates are per CPU-second of this process (the box is shared).
Usage: ``.venv/bin/python benchmarks/transform_bench.py [--events N] [--batch B] [--rounds R]``.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import statistics
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from rrlab.producer.generator import (
    EXECUTING,
    INSERT_COLUMNS,
    JSONB_COLUMNS,
    PENDING,
    RunGenerator,
)
from rrlab.service.events import ChangeEvent
from rrlab.service.fingerprint import fingerprint_parts
from rrlab.service.transform import payload_row, sort_payload_rows, sort_task_rows, task_run_row


@dataclass(frozen=True)
class _Owner:
    organization_id: str = "cm0org0000000000000000001"
    project_id: str = "cm0prj0000000000000000001"
    environment_id: str = "cm0env0000000000000000001"
    environment_type: str = "PRODUCTION"


def _typed(column: str, value: Any) -> Any:
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC)
    if column in JSONB_COLUMNS and isinstance(value, str):
        return json.loads(value)
    return value


def make_events(count: int, seed: int = 7) -> list[ChangeEvent]:
    """``count`` events: each run is inserted, then updated to EXECUTING and to a final status."""
    rng = random.Random(seed)
    generator = RunGenerator(rng, _Owner(), payload_size_kb=1.0, super_json_ratio=0.1)
    start = datetime(2025, 6, 1, 12, 0, 0)
    events: list[ChangeEvent] = []
    version = 1 << 32
    while len(events) < count:
        now = start + timedelta(milliseconds=len(events))
        run = {c: _typed(c, v) for c, v in zip(INSERT_COLUMNS, generator.new_run(now), strict=True)}
        run.setdefault("outputType", "application/json")
        events.append(ChangeEvent("insert", dict(run), version))
        status = PENDING
        for _ in range(2):
            update = generator.transition(run["id"], status, now)
            run.update(
                {c: _typed(c, v) for c, v in zip(update.columns, update.values, strict=True)}
            )
            status = update.status
            version += 1
            events.append(ChangeEvent("update", dict(run), version))
        assert status not in (PENDING, EXECUTING)
    return events[:count]


def transform_all(events: list[ChangeEvent]) -> int:
    task_rows = [task_run_row(event) for event in events]
    payload_rows = [payload_row(event) for event in events if event.kind == "insert"]
    sort_task_rows(task_rows)
    sort_payload_rows(payload_rows)
    return len(task_rows) + len(payload_rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=60_000)
    parser.add_argument("--batch", type=int, default=1_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    events = make_events(args.events)
    gc.collect()
    gc.freeze()
    batches = [events[i : i + args.batch] for i in range(0, len(events), args.batch)]
    inserts = sum(event.kind == "insert" for event in events)
    failed = sum(bool(event.run.get("error")) for event in events)
    print(f"{len(events)} events: {inserts} inserts, {failed} with an error")
    rates = []
    for _ in range(args.rounds):
        fingerprint_parts.cache_clear()
        started = time.process_time()
        for batch in batches:
            transform_all(batch)
        rates.append(len(events) / (time.process_time() - started))
    print(
        f"task_run_row + payload_row + sort: median {statistics.median(rates):,.0f} events/CPU-s "
        f"(min {min(rates):,.0f}, max {max(rates):,.0f}) over {args.rounds} rounds, "
        f"batches of {args.batch}"
    )


if __name__ == "__main__":
    main()
