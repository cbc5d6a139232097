"""Replication lag (commit to receipt) percentiles over time."""

from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go
import polars as pl

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

QUANTILES = (0.5, 0.95, 0.99)


def replication_lag(runs: Run | Sequence[Run]) -> go.Figure:
    """p50/p95/p99 of every transaction's lag within each display bucket."""
    runs = as_runs(runs)
    several = len(runs) > 1
    width = bucket_width(runs)
    fig = go.Figure()
    for index, (run, label) in enumerate(zip(runs, run_labels(runs), strict=True)):
        points = bucketed(
            run.lag.drop_nulls("lag_ms"),
            width,
            [pl.col("lag_ms").quantile(q, interpolation="linear").alias(f"p{q * 100:g}")
             for q in QUANTILES],
        )  # fmt: skip
        for series_index, q in enumerate(QUANTILES):
            column = f"p{q * 100:g}"
            fig.add_trace(
                go.Scatter(
                    x=points["t"],
                    y=points[column].round(1),
                    name=trace_name(column, label, several),
                    legendgroup=label,
                    mode="lines",
                    line=line_style(index, series_index, several),
                    hovertemplate=f"{column} %{{y:,.0f}} ms",
                )
            )
    add_phase_bands(fig, runs[0])
    fig.update_xaxes(title_text=TIME_AXIS)
    fig.update_yaxes(title_text="replication lag (ms)", rangemode="tozero")
    per = "second" if width == 1 else f"{width:g} s"
    return finish(fig, f"Replication lag: p50 / p95 / p99 of transactions per {per} (ms)")
