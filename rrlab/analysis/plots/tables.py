"""Tables as plotly figures: the per-phase summary of a run, and any polars frame."""

from __future__ import annotations

import plotly.graph_objects as go
import polars as pl

from rrlab.analysis.load import Run
from rrlab.analysis.plots._common import finish

# phases-frame column → row label, format
PHASE_SUMMARY_ROWS: dict[str, tuple[str, str]] = {
    "target_throughput": ("target (rec/s)", "{:,.0f}"),
    "producer_throughput": ("produced (rec/s)", "{:,.0f}"),
    "consumer_throughput": ("consumed (rec/s)", "{:,.0f}"),
    "records_produced": ("records produced", "{:,.0f}"),
    "records_consumed": ("records consumed", "{:,.0f}"),
    "producer_latency_ms_p50": ("producer write latency p50 (ms)", "{:,.1f}"),
    "producer_latency_ms_p99": ("producer write latency p99 (ms)", "{:,.1f}"),
    "producer_errors": ("producer errors", "{:,.0f}"),
    "replication_lag_ms_p50": ("replication lag p50 (ms)", "{:,.0f}"),
    "replication_lag_ms_p95": ("replication lag p95 (ms)", "{:,.0f}"),
    "replication_lag_ms_p99": ("replication lag p99 (ms)", "{:,.0f}"),
    "batches_flushed": ("flushes", "{:,.0f}"),
    "flush_batch_size_p50": ("rows per flush p50", "{:,.0f}"),
    "flush_duration_ms_p50": ("flush duration p50 (ms)", "{:,.1f}"),
    "flush_duration_ms_p99": ("flush duration p99 (ms)", "{:,.1f}"),
    "flush_retries": ("flush retries", "{:,.0f}"),
    "flush_errors": ("flush errors", "{:,.0f}"),
    "consumer_utilization_mean": ("consumer utilisation mean", "{:.0%}"),
    "consumer_utilization_p95": ("consumer utilisation p95", "{:.0%}"),
    "cpu_percent_consumer": ("consumer CPU (%)", "{:,.0f}"),
    "peak_rss_mb_consumer": ("consumer peak RSS (MB)", "{:,.0f}"),
    "catch_up_s": ("catch-up (s)", "{:,.1f}"),
}
HEADER = {"fill_color": "#eef0f6", "font": {"size": 12}, "align": "left"}


def phase_summary(run: Run) -> go.Figure:
    """Metrics as rows, phases as columns: the numbers metrics.json holds, formatted."""
    rows = [(column, *spec) for column, spec in PHASE_SUMMARY_ROWS.items()
            if column in run.phases.columns]  # fmt: skip
    cells = [[label for _, label, _ in rows]]
    for phase in run.phases.iter_rows(named=True):
        cells.append([_format(fmt, phase[column]) for column, _, fmt in rows])
    fig = go.Figure(
        go.Table(
            header={"values": ["metric", *run.phases["name"].to_list()], **HEADER},
            cells={"values": cells, "align": ["left"] + ["right"] * run.phases.height},
            columnwidth=[2.2] + [1] * run.phases.height,
        )
    )
    return finish(fig, "Per-phase summary", height=table_height(len(rows)))


def table(frame: pl.DataFrame, title: str) -> go.Figure:
    """Any polars frame as a plotly table; numbers right-aligned with thousands separators."""
    cells = [[_format(_number_format(frame.schema[c]), v) for v in frame[c]] for c in frame.columns]
    align = ["right" if frame.schema[c].is_numeric() else "left" for c in frame.columns]
    fig = go.Figure(
        go.Table(
            header={"values": frame.columns, **HEADER},
            cells={"values": cells, "align": align},
        )
    )
    return finish(fig, title, height=table_height(frame.height))


def table_height(rows: int) -> int:
    """Pixels for a header and ``rows`` one-line rows, plus the title and margins."""
    return 160 + 24 * max(rows, 1)


def _number_format(dtype: pl.DataType) -> str:
    if dtype.is_float():
        return "{:,.2f}"
    if dtype.is_integer():
        return "{:,}"
    return "{}"


def _format(fmt: str, value: object) -> str:
    return "–" if value is None else fmt.format(value)
