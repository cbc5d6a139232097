"""The breaking-point figure: what the consumer achieved, and its lag, against the target rate."""

from __future__ import annotations

import plotly.graph_objects as go
import polars as pl
from plotly.subplots import make_subplots

from rrlab.analysis.findings import SustainableRate
from rrlab.analysis.plots._common import SERIES_COLORS, finish


def breaking_point(
    verdicts: pl.DataFrame, lag_p99_threshold_ms: float, rate: SustainableRate | None
) -> go.Figure:
    """From :func:`rrlab.analysis.findings.ramp_verdicts`: achieved vs target throughput (top)
    and p50/p99 lag (bottom) per phase; the sustainable rate as a vertical line."""
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08)
    target = verdicts["target_throughput"]
    marker_symbols = ["circle" if ok else "x" for ok in verdicts["sustained"]]
    fig.add_trace(
        go.Scatter(x=target, y=target, name="target (ideal)", mode="lines",
                   line={"color": "#888", "dash": "dash", "width": 1}),
        row=1, col=1,
    )  # fmt: skip
    for index, (column, name) in enumerate(
        (("producer_throughput", "produced"), ("consumer_throughput", "consumed"))
    ):
        fig.add_trace(
            go.Scatter(
                x=target,
                y=verdicts[column],
                name=name,
                mode="lines+markers",
                marker={"symbol": marker_symbols, "size": 9},
                line={"color": SERIES_COLORS[index]},
                text=verdicts["name"],
                hovertemplate="%{text}: %{y:,.0f} rec/s",
            ),
            row=1,
            col=1,
        )
    for index, column in enumerate(("replication_lag_ms_p50", "replication_lag_ms_p99"), start=2):
        fig.add_trace(
            go.Scatter(
                x=target,
                y=verdicts[column],
                name=f"lag {column.rsplit('_', 1)[1]}",
                mode="lines+markers",
                marker={"symbol": marker_symbols, "size": 9},
                line={"color": SERIES_COLORS[index]},
                text=verdicts["name"],
                hovertemplate="%{text}: %{y:,.0f} ms",
            ),
            row=2,
            col=1,
        )
    fig.add_hline(y=lag_p99_threshold_ms, line={"color": "#d62728", "dash": "dot", "width": 1},
                  annotation_text=f"p99 threshold {lag_p99_threshold_ms:,.0f} ms",
                  annotation_position="top left", row=2, col=1)  # fmt: skip
    if rate is not None:
        line = {"color": "#2ca02c", "width": 1.5}
        fig.add_vline(x=rate.target_throughput, line=line, row=2, col=1)
        fig.add_vline(x=rate.target_throughput, line=line, row=1, col=1,
                      annotation_text=f"sustainable: {rate.target_throughput:,.0f} rec/s",
                      annotation_position="top right")  # fmt: skip
    fig.update_xaxes(title_text="target rate (records/s)", row=2, col=1)
    fig.update_yaxes(title_text="achieved (records/s)", rangemode="tozero", row=1, col=1)
    fig.update_yaxes(title_text="replication lag (ms)", rangemode="tozero", row=2, col=1)
    return finish(fig, "Breaking point: achieved throughput and lag vs target rate (× = not "
                  "sustained)", height=620)  # fmt: skip
