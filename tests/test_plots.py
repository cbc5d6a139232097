"""Figures built from fabricated runs: the traces each promises, titles, axes, downsampling."""

from __future__ import annotations

import json

import numpy as np
import plotly.graph_objects as go
import polars as pl
import pytest

from rrlab.analysis import plots
from rrlab.analysis.compare import phase_deltas
from rrlab.analysis.findings import ramp_verdicts, sustainable_rate
from rrlab.analysis.load import load_run
from rrlab.analysis.plots._common import bucketed, rates
from tests.fixtures.fabricated_run import fabricate_run


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    results = tmp_path_factory.mktemp("results")
    return [
        load_run(fabricate_run(results, run_name="a")),
        load_run(fabricate_run(results, run_name="b", flush_batch_size=100, seed=5)),
    ]


def names(fig: go.Figure) -> list[str]:
    return [trace.name for trace in fig.data]


def test_throughput(runs):
    fig = plots.throughput(runs[0])
    assert names(fig) == ["produced", "consumed", "target"]
    assert "records/s" in fig.layout.title.text
    assert fig.layout.xaxis.title.text and fig.layout.yaxis.title.text
    # phase bands and their names
    assert len(fig.layout.shapes) == 2
    assert [a.text for a in fig.layout.annotations] == ["warmup", "baseline"]
    # the rate on the plateau of the baseline phase is its target
    produced = np.array(fig.data[0].y)
    assert np.median(produced[produced > 2000]) == pytest.approx(4000, rel=0.03)
    target = [y for y in fig.data[2].y if y is not None]
    assert set(target) == {1000, 4000}


def test_overlay_has_a_trace_per_run_and_series(runs):
    fig = plots.throughput(runs)
    expected = [f"{run.label} · {series}" for run in runs for series in ("produced", "consumed")]
    assert names(fig)[:4] == expected
    assert fig.data[0].line.color == fig.data[1].line.color != fig.data[2].line.color


def test_replication_lag(runs):
    fig = plots.replication_lag(runs[0])
    assert names(fig) == ["p50", "p95", "p99"]
    p50, p99 = (np.array(trace.y, dtype=float) for trace in (fig.data[0], fig.data[2]))
    both = ~np.isnan(p50) & ~np.isnan(p99)
    assert both.any() and (p99[both] >= p50[both]).all()
    # no samples between phases: a gap in the line, not a line drawn through it
    assert np.isnan(p50).any()
    assert fig.layout.yaxis.title.text == "replication lag (ms)"


def test_flushes_and_resources(runs):
    fig = plots.flushes(runs[0])
    assert names(fig) == ["duration p50", "duration p99", "batch size (mean)", "batch size (max)"]
    fig = plots.resources(runs[0])
    per_process = [
        name for name in ("consumer", "producer-0", "producer-1") for _ in ["cpu", "rss"]
    ]
    assert names(fig) == ["consumer utilisation", *per_process, "consumer rows held"]
    assert fig.layout.yaxis3.title.text == "RSS (MB)"
    held = np.array(fig.data[-1].y, dtype=float)  # 1,500 bytes per fabricated change held
    assert fig.data[-1].yaxis == "y3" and np.nanmax(held) > 0
    assert 15 < np.nanmax(np.array(fig.data[0].y, dtype=float)) <= 100  # ~20% busy, not 0.2


def test_tables(runs):
    fig = plots.phase_summary(runs[0])
    header = fig.data[0].header.values
    assert list(header) == ["metric", "warmup", "baseline"]
    assert "replication lag p99 (ms)" in fig.data[0].cells.values[0]
    deltas = plots.table(phase_deltas(runs), "Per-phase deltas")
    assert f"{runs[1].label} Δ%" in deltas.data[0].header.values


def test_breaking_point(tmp_path):
    ramp = load_run(
        fabricate_run(tmp_path, phases=(("a", 6, 5000), ("b", 6, 10000), ("c", 6, 15000)),
                      consumer_capacity=12000)
    )  # fmt: skip
    fig = plots.breaking_point(ramp_verdicts(ramp, 1000), 1000, sustainable_rate(ramp, 1000))
    assert names(fig) == ["target (ideal)", "produced", "consumed", "lag p50", "lag p99"]
    assert list(fig.data[2].marker.symbol) == ["circle", "circle", "x"]
    assert any("10,000" in (a.text or "") for a in fig.layout.annotations)


def test_long_runs_are_downsampled(tmp_path):
    run = load_run(fabricate_run(tmp_path, phases=(("long", 5000, 200),), consumer_capacity=1e6))
    for fig in (plots.throughput(run), plots.replication_lag(run), plots.resources(run)):
        assert max(len(trace.x) for trace in fig.data) <= plots.MAX_POINTS + 2


def test_rates_spread_reports_over_their_interval():
    # two processes reporting 100 records every second, offset by half a second
    frame = pl.DataFrame(
        {
            "t": [1.0, 2.0, 3.0, 1.5, 2.5, 3.5],
            "records": [100] * 6,
            "process": ["a"] * 3 + ["b"] * 3,
        }
    )
    grid = np.arange(0.0, 5.0, 1.0)
    assert rates(frame, "records", grid, by="process").tolist() == [150, 200, 200, 50, 0]


def test_bucketed_breaks_lines_at_pauses_not_at_jitter():
    frame = pl.DataFrame({"t": [0.2, 0.7, 2.1, 6.5], "v": [1.0, 3.0, 5.0, 7.0]})
    out = bucketed(frame, 1.0, [pl.col("v").mean()])
    assert out["t"].to_list() == [0.0, 2.0, 3.0, 6.0]
    assert out["v"].to_list() == [2.0, 5.0, None, 7.0]


def test_profile_figures_on_plain_frames():
    heap = pl.DataFrame(
        {"t_s": [0.0, 1.0, 2.0] * 2, "heap_mb": [1.0, 2.0, 3.0] * 2, "rss_mb": [40.0] * 6,
         "process": ["consumer"] * 6, "attempt": [0, 0, 0, 1, 1, 1]}
    )  # fmt: skip
    assert names(plots.heap(heap)) == [
        "consumer · heap", "consumer · RSS",
        "consumer (restart 1) · heap", "consumer (restart 1) · RSS",
    ]  # fmt: skip
    sites = pl.DataFrame(
        {"function": ["decode", "encode", "decode"], "file": ["/a/pgoutput.py", "/a/sinks.py",
         "/a/pgoutput.py"], "line": [87, 56, 87], "bytes": [3 * 2**20, 2 * 2**20, 2**20],
         "allocations": [10, 500, 5], "attempt": [0, 0, 1]}
    )  # fmt: skip
    by_bytes = plots.allocation_sites(sites, "bytes")
    # the same site in two process starts is one bar; the largest at the top
    assert list(by_bytes.data[0].y) == ["encode (sinks.py:56)", "decode (pgoutput.py:87)"]
    assert list(by_bytes.data[0].x) == [2.0, 4.0]
    assert list(plots.allocation_sites(sites, "allocations").data[0].x) == [15, 500]
    lines = pl.DataFrame(
        {"file": ["f.py"] * 3, "function": ["flush", "flush", "decode"], "line": [10, 11, 5],
         "hits": [100, 1000, 50], "total_s": [0.5, 2.0, 0.1], "per_hit_us": [5e3, 2e3, 2e3],
         "percent_of_function": [20.0, 80.0, 100.0],
         "source": ["x = 1", "rows = encode(batch)", "y = 2"]}
    )  # fmt: skip
    fig = plots.hot_lines(lines, top=2)
    assert list(fig.data[0].y) == ["flush:10  x = 1", "flush:11  rows = encode(batch)"]
    assert fig.layout.xaxis.title.text == "total time in the line (s)"


def test_figures_of_a_run_stopped_before_its_first_phase(tmp_path):
    run_dir = fabricate_run(tmp_path, status="incomplete")
    for file in (run_dir / "timeseries").iterdir():
        file.unlink()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    (run_dir / "metrics.json").write_text(json.dumps({**metrics, "phases": []}))
    run = load_run(run_dir)
    for figure in (plots.throughput, plots.replication_lag, plots.flushes, plots.resources,
                   plots.phase_summary):  # fmt: skip
        assert isinstance(figure(run), go.Figure)
    assert sustainable_rate(run, 1000) is None
