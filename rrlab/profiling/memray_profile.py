"""memray for a child process: the ``memray run`` wrapper argv, and a capture read into polars.

Python frames only by default: native frames (``--native``) resolve C symbols for every
allocation and make the capture several times larger. ``--trace-python-allocators`` is
not used: it records every pymalloc allocation, which slows a busy consumer by an order
of magnitude; without it, small objects appear through the arenas pymalloc requests.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import polars as pl

from rrlab.exceptions import ResultsError

CAPTURE_SUFFIX = ".memray.bin"
FLAMEGRAPH_SUFFIX = ".memray-flamegraph.html"
TOP_SITES = 25

SITE_SCHEMA = {
    "function": pl.String,
    "file": pl.String,
    "line": pl.Int64,
    "bytes": pl.Int64,
    "allocations": pl.Int64,
}
STACK_SITE_SCHEMA = {**SITE_SCHEMA, "rrlab_frame": pl.String, "stack": pl.String}


def memray_wrapper(capture: Path, *, native: bool = False) -> list[str]:
    """``python -m <this> -m module ...``: memray run writing ``capture`` (never overwritten)."""
    return ["memray", "run", "--quiet", *(["--native"] if native else []), "--output", str(capture)]


def write_flamegraph(capture: Path) -> Path:
    """memray's own HTML flame graph (peak memory) next to the capture; returns its path.

    ``--no-web`` inlines memray's scripts (about 4.5 MB) so the file opens offline, like
    the rest of the run folder, instead of fetching them from a CDN.
    """
    html = capture.with_name(capture.name.removesuffix(CAPTURE_SUFFIX) + FLAMEGRAPH_SUFFIX)
    command = [sys.executable, "-m", "memray", "flamegraph", "--no-web", "--force", "-o", str(html)]
    result = subprocess.run([*command, str(capture)], capture_output=True, text=True)
    if result.returncode != 0:
        raise ResultsError(
            f"memray could not draw a flame graph of {capture}: "
            f"{(result.stderr or result.stdout).strip()[-500:]}"
        )
    return html


def capture_frames(capture: Path, top: int = TOP_SITES) -> dict[str, pl.DataFrame]:
    """Everything rrlab shows of one capture, as polars frames.

    - ``heap``: ``t_s`` (seconds since tracking started), ``heap_mb``, ``rss_mb``
    - ``top_by_bytes`` / ``top_by_count``: allocation sites (innermost frame) ranked by
      bytes and by number of allocations over the whole run (memray's stats engine)
    - ``at_peak`` / ``at_exit``: what was allocated at the high-water mark and still
      allocated at exit, per call stack, with the innermost rrlab frame
    - ``summary``: one row: peak, totals, still allocated at exit (at the kill, for a killed
      process; memray's header does not reliably tell the two apart), duration, native frames
    """
    import memray
    from memray._memray import compute_statistics  # the engine behind `memray stats`

    try:
        reader = memray.FileReader(str(capture))
    except (OSError, RuntimeError) as exc:
        raise ResultsError(f"memray cannot read the capture {capture}: {exc}") from None
    try:
        meta = reader.metadata
        start_ms = meta.start_time.timestamp() * 1000
        snapshots = list(reader.get_memory_snapshots())
        heap = pl.DataFrame(
            {
                "t_s": [(s.time - start_ms) / 1000 for s in snapshots],
                "heap_mb": [s.heap / 2**20 for s in snapshots],
                "rss_mb": [s.rss / 2**20 for s in snapshots],
            },
            schema={"t_s": pl.Float64, "heap_mb": pl.Float64, "rss_mb": pl.Float64},
        )
        at_peak, _ = _stack_sites(reader.get_high_watermark_allocation_records(), top)
        at_exit, leaked_bytes = _stack_sites(reader.get_leaked_allocation_records(), top)
    finally:
        reader.close()
    last_s = heap["t_s"].max() if heap.height else 0.0
    stats = compute_statistics(str(capture), num_largest=top)
    by_bytes = dict(stats.top_locations_by_size)
    by_count = dict(stats.top_locations_by_count)
    summary = pl.DataFrame(
        {
            "peak_memory_mb": [meta.peak_memory / 2**20],
            "total_allocated_mb": [stats.total_memory_allocated / 2**20],
            "total_allocations": [stats.total_num_allocations],
            "still_allocated_at_exit_mb": [leaked_bytes / 2**20],
            # a killed process leaves no end time: its last snapshot tells how long it ran
            "duration_s": [max((meta.end_time - meta.start_time).total_seconds(), last_s)],
            "native_frames": [meta.has_native_traces],
            "pid": [meta.pid],
        }
    )
    return {
        "heap": heap,
        "top_by_bytes": _sites(by_bytes, by_count, sort="bytes"),
        "top_by_count": _sites(by_bytes, by_count, sort="allocations"),
        "at_peak": at_peak,
        "at_exit": at_exit,
        "summary": summary,
    }


def _sites(by_bytes: dict, by_count: dict, sort: str) -> pl.DataFrame:
    """One row per (function, file, line) ranked list; the other measure where memray gave it."""
    ranked = by_bytes if sort == "bytes" else by_count
    rows = [
        {
            "function": function,
            "file": file,
            "line": line,
            "bytes": by_bytes.get((function, file, line)),
            "allocations": by_count.get((function, file, line)),
        }
        for (function, file, line) in ranked
    ]
    return pl.DataFrame(rows, schema=SITE_SCHEMA).sort(sort, descending=True, nulls_last=True)


def _stack_sites(records: Iterable[Any], top: int) -> tuple[pl.DataFrame, int]:
    """The ``top`` Python call stacks by bytes (with allocation counts), and the bytes of all."""
    totals: dict[tuple, list[int]] = {}
    for record in records:
        stack = tuple(record.stack_trace())
        entry = totals.setdefault(stack, [0, 0])
        entry[0] += record.size
        entry[1] += record.n_allocations
    rows = []
    for stack, (size, count) in sorted(totals.items(), key=lambda item: -item[1][0])[:top]:
        function, file, line = stack[0] if stack else ("<unknown>", "<unknown>", 0)
        rows.append(
            {
                "function": function,
                "file": file,
                "line": line,
                "bytes": size,
                "allocations": count,
                "rrlab_frame": _first_rrlab_frame(stack),
                "stack": " ← ".join(f"{f} ({Path(p).name}:{n})" for f, p, n in stack[:12]),
            }
        )
    return pl.DataFrame(rows, schema=STACK_SITE_SCHEMA), sum(size for size, _ in totals.values())


def _first_rrlab_frame(stack: tuple) -> str | None:
    """The innermost frame in rrlab's own code: where an allocation in a library came from."""
    for function, file, line in stack:
        if "/rrlab/" in file and "/rrlab/profiling/" not in file:
            return f"{function} ({file.rsplit('/rrlab/', 1)[1]}:{line})"
    return None
