"""The drain benchmark figure: each consumer's rate against pg_recvlogical's, and CPU per row."""

from __future__ import annotations

import plotly.graph_objects as go
import polars as pl
from plotly.subplots import make_subplots

from rrlab.analysis.drains import TARGET_RATIOS, drain_summary
from rrlab.analysis.plots._common import SERIES_COLORS, finish
from rrlab.bench.saved import CHDB, MOCK, PG_RECVLOGICAL

# what each bar of CPU per row stands for: (variant, column, name)
CPU_BARS = (
    (PG_RECVLOGICAL, "cpu_us_per_row", "pg_recvlogical"),
    (MOCK, "cpu_us_per_row", "consumer, mock sink"),
    (CHDB, "cpu_us_per_row", "consumer, chdb sink"),
    (CHDB, "clickhouse_cpu_us_per_row", "embedded ClickHouse"),
)


def drain_ratios(drains: pl.DataFrame) -> go.Figure:
    """From :func:`rrlab.analysis.drains.load_drains`: top, each round's rate over
    pg_recvlogical's for the mock and chdb consumers (the median as a bar, issue 7's targets
    as dotted lines); bottom, median CPU per replicated row of each process."""
    if drains.height == 0:
        raise ValueError("a figure needs at least one drain")
    fig = make_subplots(rows=2, cols=1, vertical_spacing=0.1)
    labels = {
        result: "<br>".join([result, *settings.split(", ")])
        for result, settings in drains.select("result", "settings").unique().iter_rows()
    }
    summary = drain_summary(drains).with_columns(
        pl.col("result").replace_strict(labels).alias("label")
    )
    for index, (variant, target) in enumerate(TARGET_RATIOS.items()):
        color = SERIES_COLORS[index]
        rows = summary.filter(pl.col("variant") == variant)
        fig.add_trace(
            go.Bar(x=rows["label"], y=rows["ratio"], name=f"{variant}, median",
                   marker={"color": color, "opacity": 0.45}, offsetgroup=variant,
                   hovertemplate=f"{variant} median %{{y:.2f}}×<extra></extra>"),
            row=1, col=1,
        )  # fmt: skip
        rounds = drains.filter(pl.col("variant") == variant)
        fig.add_trace(
            go.Scatter(x=rounds["result"].replace_strict(labels), y=rounds["ratio"],
                       name=f"{variant}, each round", mode="markers", offsetgroup=variant,
                       marker={"color": color, "size": 7}, text=rounds["round"],
                       hovertemplate=f"{variant} round %{{text}}: %{{y:.2f}}×<extra></extra>"),
            row=1, col=1,
        )  # fmt: skip
        fig.add_hline(y=target, line={"color": color, "dash": "dot", "width": 1},
                      annotation_text=f"{variant} target {target}×",
                      annotation_position="top left", row=1, col=1)  # fmt: skip
    for index, (variant, column, name) in enumerate(CPU_BARS, start=2):
        rows = summary.filter(pl.col("variant") == variant)
        fig.add_trace(
            go.Bar(x=rows["label"], y=rows[column], name=name,
                   marker={"color": SERIES_COLORS[index]}, offsetgroup=name,
                   hovertemplate=f"{name}: %{{y:.1f}} µs<extra></extra>"),
            row=2, col=1,
        )  # fmt: skip
    fig.update_layout(barmode="group", scattermode="group")
    fig.update_xaxes(tickangle=0)
    fig.update_xaxes(showticklabels=False, row=1, col=1)  # the same results as below
    fig.update_yaxes(title_text="rows/s over pg_recvlogical's", row=1, col=1)
    fig.update_yaxes(title_text="CPU µs per row", row=2, col=1)
    finish(fig, "Drain benchmark: rate against pg_recvlogical, and CPU per row", height=700)
    fig.update_layout(hovermode="closest")
    return fig
