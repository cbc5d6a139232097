"""Notebook output that renders both in JupyterLab and in an exported, offline HTML report.

Figures are displayed as plotly's own MIME type (drawn by JupyterLab's plotly extension) plus
an HTML fallback that nbconvert keeps; :func:`init_notebook` embeds plotly.js once, so the
fallbacks need no CDN.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import plotly.graph_objects as go
import plotly.io as pio
import polars as pl
from IPython.display import HTML, Markdown, display
from plotly.offline import get_plotlyjs

from rrlab.analysis import plots, profiles
from rrlab.analysis.findings import Finding
from rrlab.analysis.load import Run

PLOTLY_MIME = "application/vnd.plotly.v1+json"
FIGURE_CONFIG = {"displaylogo": False, "responsive": True}


def init_notebook() -> None:
    """Embed the plotly.js bundle in the notebook (once, before the first figure)."""
    display(HTML(f'<script type="text/javascript">{get_plotlyjs()}</script>'))


def show(fig: go.Figure) -> None:
    """Display ``fig`` for JupyterLab (plotly MIME) and for HTML export (div + script)."""
    html = pio.to_html(
        fig,
        include_plotlyjs=False,
        include_mathjax=False,
        full_html=False,
        config=FIGURE_CONFIG,
        validate=False,
    )
    bundle = {PLOTLY_MIME: json.loads(pio.to_json(fig, validate=False)), "text/html": html}
    display(bundle, raw=True)


def note(text: str) -> None:
    """A line of Markdown in the output (e.g. why a section is empty)."""
    display(Markdown(text))


def overview(run: Run) -> str:
    """Markdown: what was run, where, with what result."""
    meta = run.metadata
    phases = ", ".join(
        f"{row['name']} ({row['duration_s']:g} s @ {row['target_throughput']:,}/s)"
        for row in run.phases.select("name", "duration_s", "target_throughput").iter_rows(
            named=True
        )
    ) if {"duration_s", "target_throughput"} <= set(run.phases.columns) else "none"  # fmt: skip
    lines = [
        f"**Run** `{run.name}` — {meta.get('status', '?')}"
        + (f" (error: {meta['error']})" if meta.get("error") else ""),
        f"**Folder** `{run.path}`",
        f"**When** {meta.get('started_at', '?')} → {meta.get('ended_at', '?')}",
        f"**Sink** {meta.get('sink', '?')} · **profile** {meta.get('profile', '?')} · "
        f"**PostgreSQL** {meta.get('postgres_version') or '?'} · "
        f"**ClickHouse** {meta.get('clickhouse_version') or '–'}",
        f"**Phases** {phases}",
        f"**Machine** {meta.get('host', '?')}, {meta.get('cpu_count', '?')} CPUs, "
        f"Python {meta.get('python', '?')}, rrlab {meta.get('rrlab_version', '?')}"
        + (f" ({meta['git_commit'][:10]})" if meta.get("git_commit") else ""),
    ]
    return "  \n".join(lines)


def findings_markdown(findings: Sequence[Finding]) -> str:
    """Findings as a Markdown list, warnings first; a reassuring line when there are none."""
    if not findings:
        return "No findings: every phase kept up, within the thresholds."
    ordered = sorted(findings, key=lambda f: f.severity != "warning")
    return "\n".join(
        f"- {'**Warning**' if f.severity == 'warning' else '**Note**'}: "
        f"{f'**{f.phase}**: ' if f.phase else ''}{f.message}"
        for f in ordered
    )


def verification_markdown(run: Run) -> str:
    """The end-of-run comparison of PostgreSQL with ClickHouse (metrics.json ``run.verify``)."""
    verify = run.metadata.get("verify")
    if not verify:
        return "Not verified: the sink was the mock, or the run ended before its verification."
    if "error" in verify:
        return f"**Not verified**: the databases could not be compared: {verify['error']}"
    # words, not emoji: a report must read the same on a machine without an emoji font
    verdict = (
        "**OK**: ClickHouse matches PostgreSQL."
        if verify["ok"]
        else "**Differs**: ClickHouse does not match PostgreSQL."
    )
    lines = [
        verdict,
        "",
        f"- rows: PostgreSQL {verify['postgres_rows']:,}, "
        f"ClickHouse (FINAL, live) {verify['clickhouse_rows']:,}",
        f"- missing in ClickHouse: {verify['missing']:,} {_ids(verify['missing_ids'])}",
        f"- extra in ClickHouse: {verify['extra']:,} {_ids(verify['extra_ids'])}",
        f"- stale (status or updated_at differ): {verify['stale']:,}",
        f"- runs without a payload row: {verify['payload_missing']:,}",
    ]
    return "\n".join(lines)


def _ids(ids: Sequence[str]) -> str:
    return f"(e.g. {', '.join(f'`{i}`' for i in ids)})" if ids else ""


def show_memray(run: Run) -> None:
    """The memray section: heap over time, summary, top sites, what was left at exit, and
    links to memray's own flame graphs; a note when the run has no capture."""
    if "memray" not in run.profile_files:
        note("No memray profile in this run (run with `profile='memray'` to record one).")
        return
    memray = profiles.memray_frames(run.path)
    show(plots.heap(memray["heap"]))
    show(plots.table(memray["summary"].drop("pid"), "memray summary per process start"))
    show(plots.allocation_sites(memray["top_by_bytes"], "bytes"))
    show(plots.allocation_sites(memray["top_by_count"], "allocations"))
    at_exit = memray["at_exit"].select("function", "file", "line", "bytes", "allocations",
                                       "rrlab_frame", "process", "attempt")  # fmt: skip
    show(plots.table(at_exit.head(15), "Still allocated at exit (largest call stacks)"))
    note(_links(profiles.memray_flamegraphs(run.path), "html", "memray flame graph"))


def show_hot_lines(run: Run, top: int = 15) -> None:
    """The line-profiler section: a bar chart and a table of the hottest lines."""
    if "lines" not in run.profile_files:
        note("No line-profiler profile in this run (run with `profile='lines'` to record one).")
        return
    lines = profiles.line_profile_frame(run.path)
    show(plots.hot_lines(lines, top))
    columns = ["function", "line", "hits", "total_s", "per_hit_us", "percent_of_function",
               "source", "file", "process", "attempt"]  # fmt: skip
    show(plots.table(lines.select(columns).head(top * 2), "Hot lines (line-profiler)"))


def show_flame(run: Run) -> None:
    """Links to py-spy flame graphs, or why there is none."""
    if not {"flame", "flame_error"} & set(run.profile_files):
        note("No py-spy flame graph in this run (run with `profile='flame'` to record one).")
        return
    graphs = profiles.flame_graphs(run.path)
    reasons = [f"- {row['process']}: {row['error']}"
               for row in graphs.drop_nulls("error").iter_rows(named=True)]  # fmt: skip
    note("\n".join([_links(graphs.drop_nulls("svg"), "svg", "py-spy flame graph"), *reasons]))


def _links(files: pl.DataFrame, column: str, what: str) -> str:
    """Markdown links relative to the run folder, where report.html sits."""
    return "\n".join(
        f"- [{what}: {row['process']} (start {row['attempt']})](profiles/{Path(row[column]).name})"
        for row in files.iter_rows(named=True)
    )
