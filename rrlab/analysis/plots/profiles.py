"""Profile figures: memray's heap over time and allocation sites, line-profiler's hot lines.

They take the frames of :mod:`rrlab.analysis.profiles` (one row per snapshot, site or line,
with ``process`` and ``attempt`` columns).
"""

from __future__ import annotations

from pathlib import Path

import plotly.graph_objects as go
import polars as pl

from rrlab.analysis.plots._common import MAX_POINTS, SERIES_COLORS, finish


def heap(heap_frame: pl.DataFrame) -> go.Figure:
    """Heap (memray-tracked) and RSS over time, per profiled process start."""
    fig = go.Figure()
    starts = heap_frame.select("process", "attempt").unique(maintain_order=True)
    for index, (process, attempt) in enumerate(starts.iter_rows()):
        samples = heap_frame.filter((pl.col("process") == process) & (pl.col("attempt") == attempt))
        step = max(1, samples.height // MAX_POINTS)
        samples = samples.gather_every(step)
        name = process if attempt == 0 else f"{process} (restart {attempt})"
        for column, dash, label in (("heap_mb", "solid", "heap"), ("rss_mb", "dot", "RSS")):
            fig.add_trace(
                go.Scatter(
                    x=samples["t_s"],
                    y=samples[column].round(2),
                    name=f"{name} · {label}",
                    mode="lines",
                    line={"color": SERIES_COLORS[index % len(SERIES_COLORS)], "dash": dash},
                    hovertemplate=f"{label} %{{y:,.1f}} MB",
                )
            )
    fig.update_xaxes(title_text="time since the process started (s)")
    fig.update_yaxes(title_text="memory (MB)", rangemode="tozero")
    return finish(fig, "Heap over time (memray): heap vs RSS (MB)")


def allocation_sites(sites: pl.DataFrame, measure: str = "bytes", top: int = 15) -> go.Figure:
    """The ``top`` allocation sites by ``measure`` (``bytes`` or ``allocations``), as bars;
    a site seen in several process starts (restarts) counts once, with their sum."""
    ranked = (
        sites.drop_nulls(measure)
        .group_by("function", "file", "line", maintain_order=True)
        .agg(pl.col(measure).sum())
        .sort(measure, descending=True)
        .head(top)
        .reverse()
    )
    labels = [
        f"{row['function']} ({Path(row['file']).name}:{row['line']})"
        for row in ranked.iter_rows(named=True)
    ]
    values = ranked[measure] / 2**20 if measure == "bytes" else ranked[measure]
    unit = "MB allocated" if measure == "bytes" else "allocations"
    fig = go.Figure(
        go.Bar(
            x=values,
            y=labels,
            orientation="h",
            marker_color=SERIES_COLORS[0],
            hovertemplate=f"%{{y}}: %{{x:,.1f}} {unit}<extra></extra>",
        )
    )
    fig.update_xaxes(title_text=f"{unit} over the run")
    fig.update_yaxes(automargin=True)
    title = f"Top allocation sites by {'bytes' if measure == 'bytes' else 'count'} (memray)"
    return finish(fig, title, height=140 + 24 * max(ranked.height, 1))


def hot_lines(lines: pl.DataFrame, top: int = 15) -> go.Figure:
    """The ``top`` lines by total time (line-profiler), as bars labelled with their source;
    a line profiled in several process starts (restarts) counts once, with their sums."""
    ranked = (
        lines.drop_nulls("total_s")
        .group_by("file", "function", "line", maintain_order=True)
        .agg(pl.col("source").first(), pl.col("hits").sum(), pl.col("total_s").sum())
        .with_columns((pl.col("total_s") * 1e6 / pl.col("hits")).alias("per_hit_us"))
        .sort("total_s", descending=True)
        .head(top)
        .reverse()
    )
    labels = [
        f"{row['function']}:{row['line']}  {(row['source'] or '').strip()[:60]}"
        for row in ranked.iter_rows(named=True)
    ]
    fig = go.Figure(
        go.Bar(
            x=ranked["total_s"],
            y=labels,
            orientation="h",
            marker_color=SERIES_COLORS[1],
            customdata=ranked.select("hits", "per_hit_us").rows(),
            hovertemplate="%{x:.3f} s, %{customdata[0]:,} hits, %{customdata[1]:.1f} µs/hit"
            "<extra></extra>",
        )
    )
    fig.update_xaxes(title_text="total time in the line (s)")
    fig.update_yaxes(automargin=True, tickfont={"family": "monospace", "size": 11})
    return finish(fig, "Hot lines (line-profiler): total time per line", height=140 + 24 * top)
