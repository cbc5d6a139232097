"""A run folder's profiles (``RUN_DIR/profiles``) as polars frames: memray, line-profiler, py-spy.

Files are named ``<process>-<attempt>.<kind>`` (attempt 0 is the first start, 1 the first
restart); every frame carries ``process`` and ``attempt`` columns so restarts stay apart.
"""

from __future__ import annotations

import logging
from pathlib import Path

import polars as pl

from rrlab.exceptions import ResultsError
from rrlab.profiling.flame import ERROR_SUFFIX, FLAME_SUFFIX
from rrlab.profiling.line_profile import STATS_SUFFIX
from rrlab.profiling.line_stats import stats_frame
from rrlab.profiling.memray_profile import CAPTURE_SUFFIX, FLAMEGRAPH_SUFFIX, capture_frames
from rrlab.profiling.wrappers import profile_files, profiles_dir

log = logging.getLogger(__name__)

MEMRAY_FRAMES = ("heap", "top_by_bytes", "top_by_count", "at_peak", "at_exit", "summary")


def memray_frames(run_dir: str | Path) -> dict[str, pl.DataFrame]:
    """Heap over time, top sites by bytes and by count, at peak, at exit, and a summary.

    See :func:`rrlab.profiling.memray_profile.capture_frames` for the columns; each frame
    also has ``process`` and ``attempt``.
    """
    captures = profile_files(run_dir, CAPTURE_SUFFIX)
    if not captures:
        raise ResultsError(_missing(run_dir, "memray capture", "memray"))
    parts: dict[str, list[pl.DataFrame]] = {name: [] for name in MEMRAY_FRAMES}
    unreadable = []
    for process, attempt, path in captures:
        try:
            frames = capture_frames(path)
        except ResultsError as exc:
            unreadable.append(str(exc))  # e.g. a restarted consumer's first, cut-off capture
            continue
        for name, frame in frames.items():
            parts[name].append(_tagged(frame, process, attempt))
    if len(unreadable) == len(captures):
        raise ResultsError(" ".join(unreadable))
    for reason in unreadable:
        log.warning("%s", reason)
    return {name: pl.concat(frames) for name, frames in parts.items()}


def line_profile_frame(run_dir: str | Path) -> pl.DataFrame:
    """Every profiled line: file, function, line, hits, total_s, per_hit_us,
    percent_of_function, source, process, attempt; hottest first."""
    stats = profile_files(run_dir, STATS_SUFFIX)
    if not stats:
        raise ResultsError(_missing(run_dir, "line profile (.lprof)", "lines"))
    frames = [_tagged(stats_frame(path), process, attempt) for process, attempt, path in stats]
    return pl.concat(frames).sort("total_s", descending=True)


def flame_graphs(run_dir: str | Path) -> pl.DataFrame:
    """py-spy flame graphs: process, attempt, svg (path or null) and error (why there is none)."""
    rows = []
    for process, attempt, path in profile_files(run_dir, FLAME_SUFFIX):
        rows.append({"process": process, "attempt": attempt, "svg": str(path), "error": None})
    for process, attempt, path in profile_files(run_dir, ERROR_SUFFIX):
        reason = path.read_text(encoding="utf-8").strip()
        rows.append({"process": process, "attempt": attempt, "svg": None, "error": reason})
    schema = {"process": pl.String, "attempt": pl.Int64, "svg": pl.String, "error": pl.String}
    return pl.DataFrame(rows, schema=schema).sort("process", "attempt")


def memray_flamegraphs(run_dir: str | Path) -> pl.DataFrame:
    """memray's HTML flame graphs written after the run: process, attempt, html (path)."""
    rows = [
        {"process": process, "attempt": attempt, "html": str(path)}
        for process, attempt, path in profile_files(run_dir, FLAMEGRAPH_SUFFIX)
    ]
    return pl.DataFrame(rows, schema={"process": pl.String, "attempt": pl.Int64, "html": pl.String})


def _tagged(frame: pl.DataFrame, process: str, attempt: int) -> pl.DataFrame:
    return frame.with_columns(process=pl.lit(process), attempt=pl.lit(attempt, pl.Int64))


def _missing(run_dir: str | Path, what: str, mode: str) -> str:
    return (
        f"No {what} in {profiles_dir(Path(run_dir))}: this run was not profiled with "
        f"--profile {mode} (or both), or its profiled process was killed before writing it."
    )
