"""Reading line-profiler's .lprof files into polars frames (runner and notebook side)."""

from __future__ import annotations

import linecache
from pathlib import Path
from typing import Any

import polars as pl

from rrlab.exceptions import ResultsError

FRAME_SCHEMA = {
    "file": pl.String,
    "function": pl.String,
    "line": pl.Int64,
    "hits": pl.Int64,
    "total_s": pl.Float64,
    "per_hit_us": pl.Float64,
    "percent_of_function": pl.Float64,
    "source": pl.String,
}


def stats_frame(stats_path: Path) -> pl.DataFrame:
    """One row per profiled line of a .lprof file, hottest first."""
    from line_profiler import load_stats

    try:
        stats = load_stats(str(stats_path))
    except (OSError, EOFError, ValueError) as exc:
        raise ResultsError(f"Cannot read the line profile {stats_path}: {exc}") from None
    rows: list[dict[str, Any]] = []
    for (file, _first_line, function), timings in stats.timings.items():
        function_time = sum(time for _line, _hits, time in timings)
        for line, hits, time in timings:
            rows.append(
                {
                    "file": file,
                    "function": function,
                    "line": line,
                    "hits": hits,
                    "total_s": time * stats.unit,
                    "per_hit_us": time * stats.unit * 1e6 / hits if hits else None,
                    "percent_of_function": 100 * time / function_time if function_time else None,
                    "source": linecache.getline(file, line).rstrip(),
                }
            )
    return pl.DataFrame(rows, schema=FRAME_SCHEMA).sort("total_s", descending=True)
