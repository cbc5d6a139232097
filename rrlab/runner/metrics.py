"""Collecting the runner's samples and closing each phase's metrics.

Every sample the children report is kept (no truncated window), tagged with the
phase it belongs to; a phase's percentiles come from all of its samples. Samples
reported while the consumer catches up after a phase still belong to that phase.
"""

from __future__ import annotations

import io
from collections import defaultdict
from pathlib import Path
from typing import Any

import polars as pl

from rrlab.results import write_file

# series name → column → polars dtype. Files in timeseries/ are written with these schemas,
# so an empty series still has its columns and analysis code never special-cases it.
SERIES: dict[str, dict[str, Any]] = {
    "producer": {
        "t": pl.Float64, "phase": pl.Utf8, "process": pl.Utf8, "inserts": pl.Int64,
        "updates": pl.Int64, "deletes": pl.Int64, "records": pl.Int64, "errors": pl.Int64,
        "target_rate": pl.Float64,
    },
    "producer_latency": {
        "t": pl.Float64, "phase": pl.Utf8, "process": pl.Utf8, "operation": pl.Utf8,
        "rows": pl.Int64, "latency_ms": pl.Float64,
    },
    "consumer": {
        "t": pl.Float64, "phase": pl.Utf8, "records": pl.Int64, "inserts": pl.Int64,
        "updates": pl.Int64, "deletes": pl.Int64, "transactions": pl.Int64,
        "rows_flushed": pl.Int64, "flushes": pl.Int64, "pending": pl.Int64,
        "in_flight": pl.Int64, "held_bytes": pl.Int64, "received_lsn": pl.Int64,
        "acked_lsn": pl.Int64,
        "utilization": pl.Float64, "lag_p50_ms": pl.Float64, "lag_p95_ms": pl.Float64,
        "lag_p99_ms": pl.Float64, "lag_max_ms": pl.Float64, "resumes": pl.Int64,
    },
    "lag": {"t": pl.Float64, "phase": pl.Utf8, "lag_ms": pl.Float64},
    "flushes": {
        "t": pl.Float64, "phase": pl.Utf8, "batch_size": pl.Int64, "task_rows": pl.Int64,
        "payload_rows": pl.Int64, "bytes": pl.Int64, "duration_ms": pl.Float64,
        "retries": pl.Int64, "errors": pl.Int64,
    },
    "processes": {
        "t": pl.Float64, "phase": pl.Utf8, "process": pl.Utf8, "pid": pl.Int64,
        "cpu_percent": pl.Float64, "rss_mb": pl.Float64,
    },
    "sink_events": {"t": pl.Float64, "phase": pl.Utf8, "event": pl.Utf8},
}  # fmt: skip
# Columns added to a series after runs were first written: a run from before reads them as
# nulls (its other columns must still be there).
ADDED_COLUMNS: dict[str, frozenset[str]] = {"consumer": frozenset({"held_bytes"})}

# Failures closer than this to the previous recovery belong to the same outage: concurrent
# flushes straddle the moment the sink stops and comes back, and a flapping sink is one outage.
OUTAGE_MERGE_GAP_S = 5.0
FAILED_ATTEMPTS = {"insert_failed": "failed_inserts", "connect_failed": "failed_connects"}


def percentiles(values: list[float] | pl.Series) -> dict[str, float | None]:
    """p50/p95/p99 of all values (linear interpolation); None for no values."""
    series = pl.Series(values, dtype=pl.Float64).drop_nulls()
    if series.len() == 0:
        return {"p50": None, "p95": None, "p99": None}
    return {
        f"p{q}": round(float(series.quantile(q / 100, interpolation="linear")), 3)
        for q in (50, 95, 99)
    }


def outage_windows(
    events: pl.DataFrame, merge_gap_s: float = OUTAGE_MERGE_GAP_S
) -> list[dict[str, Any]]:
    """Sink outage windows from the consumer's sink events (the ``sink_events`` series).

    An outage starts when the first failed attempt was sent and ends with the first
    successful insert after its last failure; a failure less than ``merge_gap_s`` after
    that success continues it. ``end_s`` is None when the sink never answered again, and
    ``duration_s`` then runs to the last failure. ``phase`` is where the outage started.
    """
    windows: list[dict[str, Any]] = []
    current: dict[str, Any] | None = None
    for t, phase, event in events.sort("t").select("t", "phase", "event").iter_rows():
        ended = current is not None and current["end_s"] is not None
        if event in FAILED_ATTEMPTS:
            if current is None or (ended and t - current["end_s"] >= merge_gap_s):
                current = {"phase": phase, "start_s": t, "end_s": None, "last_failure_s": t,
                           "failed_inserts": 0, "failed_connects": 0, "rereads": 0}  # fmt: skip
                windows.append(current)
            current["end_s"] = None
            current["last_failure_s"] = max(current["last_failure_s"], t)
            current[FAILED_ATTEMPTS[event]] += 1
        elif event == "recovered" and current is not None and not ended:
            current["end_s"] = t
        elif event == "reread" and current is not None:
            current["rereads"] += 1
    return [_closed(window) for window in windows]


def _closed(window: dict[str, Any]) -> dict[str, Any]:
    end = window["end_s"]
    return {
        "phase": window["phase"],
        "start_s": round(window["start_s"], 3),
        "end_s": None if end is None else round(end, 3),
        "duration_s": round((window["last_failure_s"] if end is None else end)
                            - window["start_s"], 3),
        "failed_inserts": window["failed_inserts"],
        "failed_connects": window["failed_connects"],
        "reread_from_slot": window["rereads"] > 0,
        "rereads": window["rereads"],
    }  # fmt: skip


def outage_summary(windows: list[dict[str, Any]]) -> dict[str, Any]:
    """The metrics.json keys of a list of outage windows: the list, and their total seconds."""
    return {
        "sink_outages": windows,
        "sink_outage_s": round(sum(window["duration_s"] for window in windows), 3),
    }


class Recorder:
    """Accumulates samples per series and turns a phase's samples into its summary."""

    def __init__(self) -> None:
        self.rows: dict[str, list[dict[str, Any]]] = defaultdict(list)

    def add(self, series: str, row: dict[str, Any]) -> None:
        columns = SERIES[series]
        self.rows[series].append({name: row.get(name) for name in columns})

    def frame(self, series: str) -> pl.DataFrame:
        return pl.DataFrame(self.rows.get(series, []), schema=SERIES[series], orient="row")

    def write(self, timeseries_dir: Path) -> None:
        """One parquet file per series, each written whole or not at all (ResultsError)."""
        for series in SERIES:
            # encoded in memory: a failed write (disk full) is then an OSError of our own
            # write, not an error from inside polars, and leaves no half-written file
            buffer = io.BytesIO()
            self.frame(series).write_parquet(buffer)
            write_file(timeseries_dir / f"{series}.parquet", buffer.getvalue())

    def phase_summary(self, phase: dict[str, Any]) -> dict[str, Any]:
        """The metrics.json object of one phase (keys as the results contract documents)."""
        name = phase["name"]

        def of_phase(series: str) -> pl.DataFrame:
            return self.frame(series).filter(pl.col("phase") == name)

        producer, consumer = of_phase("producer"), of_phase("consumer")
        latency, lag, flushes = of_phase("producer_latency"), of_phase("lag"), of_phase("flushes")
        processes = of_phase("processes")
        duration = phase["duration_s"]
        produced = int(producer["records"].sum())
        consumed = int(consumer["records"].sum())
        utilization = consumer["utilization"].drop_nulls()
        return {
            "name": name,
            "duration_s": duration,
            "target_throughput": phase["target_throughput"],
            "started_at": phase.get("started_at"),
            "ended_at": phase.get("ended_at"),
            "records_produced": produced,
            "inserts": int(producer["inserts"].sum()),
            "updates": int(producer["updates"].sum()),
            "deletes": int(producer["deletes"].sum()),
            "producer_throughput": round(produced / phase["load_s"], 1) if produced else 0.0,
            "producer_latency_ms": percentiles(latency["latency_ms"]),
            "producer_latency_ms_by_operation": {
                op: percentiles(group["latency_ms"])
                for (op,), group in latency.group_by("operation")
            },
            "producer_errors": int(producer["errors"].sum()),
            "records_consumed": consumed,
            "consumer_throughput": (
                round(consumed / phase["consume_s"], 1) if consumed and phase["consume_s"] else 0.0
            ),
            "batches_flushed": flushes.height,
            "rows_flushed": int(flushes["task_rows"].sum()),
            "flush_duration_ms": percentiles(flushes["duration_ms"]),
            "flush_batch_size": percentiles(flushes["batch_size"]),
            "flush_retries": int(flushes["retries"].sum()),
            "flush_errors": int(flushes["errors"].sum()),
            "replication_lag_ms": percentiles(lag["lag_ms"]),
            "consumer_utilization": {
                "mean": round(float(utilization.mean()), 4) if utilization.len() else None,
                "p95": percentiles(utilization)["p95"],
            },
            "cpu_percent": {
                process: round(float(group["cpu_percent"].mean()), 1)
                for (process,), group in processes.group_by("process", maintain_order=True)
            },
            "peak_rss_mb": {
                process: round(float(group["rss_mb"].max()), 1)
                for (process,), group in processes.group_by("process", maintain_order=True)
            },
            "catch_up_s": phase.get("catch_up_s"),
            **outage_summary(
                [
                    {key: value for key, value in window.items() if key != "phase"}
                    for window in self.sink_outages()
                    if window["phase"] == name
                ]
            ),
        }

    def sink_outages(self) -> list[dict[str, Any]]:
        """Every sink outage of the run so far (see :func:`outage_windows`)."""
        return outage_windows(self.frame("sink_events"))
