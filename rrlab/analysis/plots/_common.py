"""What every figure shares: time buckets for display, phase bands, colours and layout."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
import polars as pl
from plotly.colors import qualitative

from rrlab.analysis.load import Run

MAX_POINTS = 2_000  # per trace: keeps a report small and a browser quick
SERIES_COLORS = qualitative.D3
RUN_COLORS = qualitative.Plotly
DASHES = ("solid", "dot", "dash", "longdash", "dashdot", "longdashdot")
BAND_COLORS = ("rgba(99, 110, 250, 0.07)", "rgba(0, 204, 150, 0.07)")
TIME_AXIS = "time since the run started (s)"


def as_runs(runs: Run | Sequence[Run]) -> list[Run]:
    listed = [runs] if isinstance(runs, Run) else list(runs)
    if not listed:
        raise ValueError("a figure needs at least one run")
    return listed


def bucket_width(runs: Sequence[Run], max_points: int = MAX_POINTS) -> float:
    """Seconds per display point: 1 s, or wider so that no trace exceeds ``max_points``."""
    span = max((_span(run) for run in runs), default=0.0)
    return float(max(1, math.ceil(span / max_points)))


def _span(run: Run) -> float:
    ends = [frame["t"].max() for frame in run.series.values() if frame.height]
    return float(max(ends)) if ends else 0.0


def time_grid(run: Run, width: float) -> np.ndarray:
    """Bucket starts covering the whole run."""
    return np.arange(0.0, _span(run) + width, width)


def rates(frame: pl.DataFrame, column: str, grid: np.ndarray, by: str | None = None) -> np.ndarray:
    """Per-second rate on ``grid`` of a counter reported in increments (``column`` counts what
    happened since the previous report), summed over ``by`` (e.g. each producer process).

    Each report's count is spread over the report interval before it, cumulated, interpolated
    at the bucket edges and differenced; unlike summing reports per bucket, this does not alias
    a ~1 s report cadence into spikes and gaps, nor smear a report across a pause.
    """
    width = grid[1] - grid[0] if len(grid) > 1 else 1.0
    edges = np.append(grid, grid[-1] + width) if len(grid) else grid
    total = np.zeros(len(edges))
    samples = frame.drop_nulls(["t", column]).sort("t")
    for group in samples.partition_by(by) if by and samples.height else [samples]:
        if group.height == 0:
            continue
        t = group["t"].to_numpy()
        interval = float(np.median(np.diff(t))) if len(t) > 1 else 1.0
        starts = np.maximum(t - interval, np.insert(t[:-1], 0, -np.inf))
        cumulative = np.cumsum(group[column].to_numpy().astype(float))
        before = np.insert(cumulative[:-1], 0, 0.0)
        # points (start_i, cum_{i-1}), (t_i, cum_i): flat between reports' intervals
        xs = np.column_stack([starts, t]).ravel()
        ys = np.column_stack([before, cumulative]).ravel()
        total += np.interp(edges, xs, ys, left=0.0, right=cumulative[-1])
    return np.diff(total) / width


def bucketed(
    frame: pl.DataFrame, width: float, aggs: Sequence[pl.Expr], by: str | None = None
) -> pl.DataFrame:
    """``aggs`` per time bucket (and ``by`` group), for buckets that have samples. Where two or
    more buckets in a row are empty (a pause, a stalled process) a null row breaks the line,
    instead of drawing through the gap; one missing bucket (report jitter) does not."""
    keys = [by, "t"] if by else ["t"]
    values = (
        frame.drop_nulls("t")
        .with_columns(((pl.col("t") / width).floor() * width).alias("t"))
        .group_by(keys)
        .agg(*aggs)
        .sort(keys)
    )
    previous = pl.col("t").shift(1)
    gaps = (
        values.with_columns((previous.over(by) if by else previous).alias("_previous"))
        .filter(pl.col("t") - pl.col("_previous") > 2 * width)
        .select(*([by] if by else []), (pl.col("_previous") + width).alias("t"))
    )
    return pl.concat([values, gaps], how="diagonal_relaxed").sort(keys)


def add_phase_bands(fig: go.Figure, run: Run, label_row: int | None = None) -> None:
    """Shade each phase of ``run`` (alternating tints) and name it at the top of the plot."""
    for index, phase in enumerate(run.phase_spans.iter_rows(named=True)):
        fig.add_vrect(
            x0=phase["start_t"],
            x1=phase["end_t"],
            fillcolor=BAND_COLORS[index % 2],
            line_width=0,
            layer="below",
            row="all" if label_row is not None else None,
            col="all" if label_row is not None else None,
        )
        fig.add_annotation(
            x=(phase["start_t"] + phase["end_t"]) / 2,
            y=1.0,
            yref="paper",
            yanchor="bottom",
            text=phase["phase"],
            showarrow=False,
            font={"size": 11, "color": "#555"},
        )


def line_style(run_index: int, series_index: int, several_runs: bool) -> dict:
    """One run: colour tells series apart. Several runs: colour is the run, dash the series."""
    if several_runs:
        color = RUN_COLORS[run_index % len(RUN_COLORS)]
        return {"color": color, "dash": DASHES[series_index % len(DASHES)], "width": 1.5}
    return {"color": SERIES_COLORS[series_index % len(SERIES_COLORS)], "width": 1.5}


def trace_name(series: str, label: str, several_runs: bool) -> str:
    return f"{label} · {series}" if several_runs else series


def finish(fig: go.Figure, title: str, height: int = 420) -> go.Figure:
    """Shared layout: title, legend above the plot, white template, hover across traces."""
    fig.update_layout(
        title={"text": title, "x": 0.01, "xanchor": "left", "y": 0.98, "yanchor": "top"},
        template="plotly_white",
        height=height,
        margin={"l": 70, "r": 20, "t": 70, "b": 55},
        legend={"font": {"size": 11}, "tracegroupgap": 8},
        hovermode="x unified",
    )
    return fig
