"""Flushes to the sink: how long they take and how many rows each carries."""

from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go
import polars as pl
from plotly.subplots import make_subplots

from rrlab.analysis.compare import run_labels
from rrlab.analysis.load import Run
from rrlab.analysis.plots._common import (
    TIME_AXIS,
    add_phase_bands,
    as_runs,
    bucket_width,
    bucketed,
    finish,
    line_style,
    trace_name,
)

# (row, series, expression over the flushes of a bucket, unit)
PANELS = (
    (1, "duration p50", pl.col("duration_ms").median(), "ms"),
    (1, "duration p99", pl.col("duration_ms").quantile(0.99, interpolation="linear"), "ms"),
    (2, "batch size (mean)", pl.col("batch_size").mean(), "rows"),
    (2, "batch size (max)", pl.col("batch_size").max(), "rows"),
)


def flushes(runs: Run | Sequence[Run]) -> go.Figure:
    """Top: flush duration p50/p99 per bucket. Bottom: rows per flush (mean and max)."""
    runs = as_runs(runs)
    several = len(runs) > 1
    width = bucket_width(runs)
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08)
    for index, (run, label) in enumerate(zip(runs, run_labels(runs), strict=True)):
        points = bucketed(run.flushes, width, [expr.alias(series) for _, series, expr, _ in PANELS])
        for series_index, (row, series, _, unit) in enumerate(PANELS):
            fig.add_trace(
                go.Scatter(
                    x=points["t"],
                    y=points[series].round(2),
                    name=trace_name(series, label, several),
                    legendgroup=label,
                    mode="lines",
                    line=line_style(index, series_index, several),
                    hovertemplate=f"{series} %{{y:,.1f}} {unit}",
                ),
                row=row,
                col=1,
            )
    add_phase_bands(fig, runs[0], label_row=1)
    fig.update_xaxes(title_text=TIME_AXIS, row=2, col=1)
    fig.update_yaxes(title_text="flush duration (ms)", rangemode="tozero", row=1, col=1)
    fig.update_yaxes(title_text="rows per flush", rangemode="tozero", row=2, col=1)
    return finish(fig, "Flushes to the sink: duration (ms) and batch size (rows)", height=560)
