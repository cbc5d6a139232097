"""Where the machine went: consumer main-loop utilisation, CPU and RSS of every process."""

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


def resources(runs: Run | Sequence[Run]) -> go.Figure:
    """Three panels: consumer utilisation (% busy), CPU % and RSS (MB) per process, with the
    encoded rows the consumer held (pending and in flight, MB) beside its RSS."""
    runs = as_runs(runs)
    several = len(runs) > 1
    width = bucket_width(runs)
    fig = make_subplots(rows=3, cols=1, shared_xaxes=True, vertical_spacing=0.06)
    for index, (run, label) in enumerate(zip(runs, run_labels(runs), strict=True)):
        busy = bucketed(run.consumer, width, [(pl.col("utilization").mean() * 100).alias("busy")])
        fig.add_trace(
            go.Scatter(
                x=busy["t"],
                y=busy["busy"].round(1),
                name=trace_name("consumer utilisation", label, several),
                legendgroup=label,
                mode="lines",
                line=line_style(index, 0, several),
                hovertemplate="consumer busy %{y:.0f}%",
            ),
            row=1,
            col=1,
        )
        usage = bucketed(
            run.processes,
            width,
            [pl.col("cpu_percent").mean().alias("cpu"), pl.col("rss_mb").max().alias("rss")],
            by="process",
        )
        processes = usage["process"].unique(maintain_order=True).to_list() if usage.height else []
        for process_index, process in enumerate(processes):
            samples = usage.filter(pl.col("process") == process)
            style = line_style(index, process_index, several)
            for row, column, unit in ((2, "cpu", "%"), (3, "rss", "MB")):
                fig.add_trace(
                    go.Scatter(
                        x=samples["t"],
                        y=samples[column].round(1),
                        name=trace_name(process, label, several),
                        legendgroup=f"{label}/{process}",
                        showlegend=row == 2,
                        mode="lines",
                        line=style,
                        hovertemplate=f"{process} %{{y:,.1f}} {unit}",
                    ),
                    row=row,
                    col=1,
                )
        held = bucketed(
            run.consumer.drop_nulls("held_bytes"),  # runs from before it was reported: none
            width,
            [(pl.col("held_bytes").max() / 2**20).alias("held")],
        )
        if held.height:
            fig.add_trace(
                go.Scatter(
                    x=held["t"],
                    y=held["held"].round(1),
                    name=trace_name("consumer rows held", label, several),
                    legendgroup=f"{label}/held",
                    mode="lines",
                    line={**line_style(index, len(processes), several), "dash": "dot"},
                    hovertemplate="consumer rows held %{y:,.1f} MB",
                ),
                row=3,
                col=1,
            )
    add_phase_bands(fig, runs[0], label_row=1)
    fig.update_xaxes(title_text=TIME_AXIS, row=3, col=1)
    fig.update_yaxes(title_text="consumer busy (%)", range=[0, 105], row=1, col=1)
    fig.update_yaxes(title_text="CPU (%, 100 = 1 core)", rangemode="tozero", row=2, col=1)
    fig.update_yaxes(title_text="RSS (MB)", rangemode="tozero", row=3, col=1)
    return finish(fig, "Resources: consumer utilisation, CPU and RSS per process", height=720)
