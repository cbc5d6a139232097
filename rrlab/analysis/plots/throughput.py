"""Produced vs consumed records per second, with phase bands and the target rate."""

from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go

from rrlab.analysis.compare import run_labels
from rrlab.analysis.load import Run
from rrlab.analysis.plots._common import (
    TIME_AXIS,
    add_phase_bands,
    as_runs,
    bucket_width,
    finish,
    line_style,
    rates,
    time_grid,
    trace_name,
)


def throughput(runs: Run | Sequence[Run]) -> go.Figure:
    """Records/s written by all producers and received by the consumer; the target as a step.

    Several runs overlay (colour per run); phase bands and target come from the first run.
    """
    runs = as_runs(runs)
    several = len(runs) > 1
    width = bucket_width(runs)
    fig = go.Figure()
    for index, (run, label) in enumerate(zip(runs, run_labels(runs), strict=True)):
        grid = time_grid(run, width)
        for series_index, (series, frame, by) in enumerate(
            (("produced", run.producer, "process"), ("consumed", run.consumer, None))
        ):
            fig.add_trace(
                go.Scatter(
                    x=grid,
                    y=rates(frame, "records", grid, by=by).round(1),
                    name=trace_name(series, label, several),
                    legendgroup=label,
                    mode="lines",
                    line=line_style(index, series_index, several),
                    hovertemplate="%{y:,.0f} rec/s",
                )
            )
    _add_target(fig, runs[0])
    add_phase_bands(fig, runs[0])
    fig.update_xaxes(title_text=TIME_AXIS)
    fig.update_yaxes(title_text="records per second", rangemode="tozero")
    return finish(fig, "Throughput: produced vs consumed (records/s)")


def _add_target(fig: go.Figure, run: Run) -> None:
    """The target rate over each phase's load, as one broken line."""
    spans = run.phase_spans.join(
        run.phases.select("name", "target_throughput"), left_on="phase", right_on="name"
    )
    x: list[float | None] = []
    y: list[float | None] = []
    for phase in spans.iter_rows(named=True):
        x += [phase["start_t"], phase["load_end_t"], None]
        y += [phase["target_throughput"]] * 2 + [None]
    fig.add_trace(
        go.Scatter(
            x=x,
            y=y,
            name="target",
            mode="lines",
            line={"color": "#444", "dash": "dash", "width": 1.2},
            hovertemplate="target %{y:,.0f} rec/s",
        )
    )
