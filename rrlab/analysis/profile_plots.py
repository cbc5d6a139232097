"""Plotly figures of a run's profiles: heap over time, top allocation sites, hottest lines.

Each takes the frames of :mod:`rrlab.analysis.profiles` and returns a figure.
"""

from __future__ import annotations

from pathlib import Path

import plotly.graph_objects as go
import polars as pl

from rrlab.analysis.plots._common import SERIES_COLORS, finish

TOP_BARS = 15


def heap_over_time(heap: pl.DataFrame) -> go.Figure:
    """Heap (memray-tracked) and RSS in MB over seconds since tracking started, per capture."""
    fig = go.Figure()
    for index, ((process, attempt), samples) in enumerate(
        heap.sort("t_s").group_by(["process", "attempt"], maintain_order=True)
    ):
        label = f"{process}" if attempt == 0 else f"{process} (restart {attempt})"
        for dash, column, what in (("solid", "heap_mb", "heap"), ("dot", "rss_mb", "RSS")):
            fig.add_trace(
                go.Scatter(
                    x=samples["t_s"],
                    y=samples[column].round(2),
                    name=f"{label} · {what}",
                    mode="lines",
                    line={"color": SERIES_COLORS[index % len(SERIES_COLORS)], "dash": dash},
                    hovertemplate=f"{what} %{{y:.1f}} MB",
                )
            )
    fig.update_xaxes(title_text="time since tracking started (s)")
    fig.update_yaxes(title_text="MB", rangemode="tozero")
    return finish(fig, "Memory over time (memray)")


def top_allocation_sites(sites: pl.DataFrame, by: str = "bytes", top: int = TOP_BARS) -> go.Figure:
    """Horizontal bars of the ``top`` sites of a memray site frame by ``bytes`` or
    ``allocations`` (labels: function and file:line)."""
    if by not in ("bytes", "allocations"):
        raise ValueError(f"by must be 'bytes' or 'allocations', not {by!r}")
    ranked = (
        sites.drop_nulls(by)
        .group_by("function", "file", "line")
        .agg(pl.col(by).sum())
        .sort(by, descending=True)
        .head(top)
        .reverse()  # plotly draws the first bar at the bottom
    )
    labels = [
        f"{row['function']} ({Path(row['file']).name}:{row['line']})"
        for row in ranked.iter_rows(named=True)
    ]
    values = ranked[by] / 2**20 if by == "bytes" else ranked[by]
    unit = "MB" if by == "bytes" else "allocations"
    fig = go.Figure(
        go.Bar(
            x=values,
            y=labels,
            orientation="h",
            marker_color=SERIES_COLORS[0],
            hovertemplate=f"%{{x:,.1f}} {unit}<extra>%{{y}}</extra>",
        )
    )
    fig.update_xaxes(title_text=unit)
    title = "Top allocation sites by " + ("bytes" if by == "bytes" else "count")
    fig = finish(fig, title, height=max(320, 28 * ranked.height + 120))
    fig.update_layout(hovermode="closest", margin={"l": 320})
    return fig


def hottest_lines(lines: pl.DataFrame, top: int = TOP_BARS) -> go.Figure:
    """Horizontal bars of the ``top`` lines by total time (seconds), labelled with their source."""
    ranked = (
        lines.group_by("file", "function", "line", "source")
        .agg(pl.col("total_s").sum(), pl.col("hits").sum())
        .sort("total_s", descending=True)
        .head(top)
        .reverse()
    )
    labels = [
        f"{row['function']}:{row['line']}  {row['source'].strip()[:60]}"
        for row in ranked.iter_rows(named=True)
    ]
    fig = go.Figure(
        go.Bar(
            x=ranked["total_s"],
            y=labels,
            orientation="h",
            marker_color=SERIES_COLORS[1],
            customdata=ranked["hits"],
            hovertemplate="%{x:.3f} s over %{customdata:,} hits<extra></extra>",
        )
    )
    fig.update_xaxes(title_text="time in the line (s)")
    fig = finish(fig, "Hottest lines (line-profiler)", height=max(320, 28 * ranked.height + 120))
    fig.update_layout(hovermode="closest", margin={"l": 480})
    return fig
