"""Saved ``rrlab bench drain`` results (``<results_dir>/bench/*-drain.json``) as polars frames."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any

import polars as pl

from rrlab.analysis.load import read_json
from rrlab.bench.saved import CHDB, FOLDER, MOCK, PG_RECVLOGICAL, SUFFIX, TIME_FORMAT, saved_results
from rrlab.config import ConsumerConfig
from rrlab.exceptions import ResultsError

TARGET_RATIOS = {MOCK: 0.9, CHDB: 0.6}
"""Issue 7's targets: each consumer's drain rate as a share of pg_recvlogical's."""
# the benchmark names its own slot and publication: not a setting anyone chose
_OWN_SETTINGS = ("slot_name", "publication_name")

DRAIN_COLUMNS: dict[str, Any] = {
    "result": pl.Utf8, "settings": pl.Utf8, "round": pl.Int64, "variant": pl.Utf8,
    "rows": pl.Int64, "rows_per_s": pl.Float64, "ratio": pl.Float64,
    "cpu_us_per_row": pl.Float64, "clickhouse_cpu_us_per_row": pl.Float64,
    "seconds": pl.Float64, "startup_s": pl.Float64, "path": pl.Utf8,
}  # fmt: skip


def load_drains(
    paths: str | Path | Sequence[str | Path], *, latest: int | None = None
) -> pl.DataFrame:
    """One row per drain of the saved results at ``paths``: result files, or results folders
    (of which the ``latest`` newest results, all when None).

    ``result`` names the benchmark run by its time (UTC), ``settings`` the consumer settings
    it changed from the defaults, ``ratio`` the drain's rate over that round's
    pg_recvlogical; ``clickhouse_cpu_us_per_row`` is the embedded ClickHouse's, for chdb.
    """
    files = _result_files(paths, latest)
    rows = [row for path in files for row in _drain_rows(path, read_json(path))]
    return pl.DataFrame(rows, schema=DRAIN_COLUMNS, orient="row")


def drain_summary(drains: pl.DataFrame) -> pl.DataFrame:
    """Per result and variant: median rows/s, the ratio's median (min–max), CPU per row."""
    return (
        drains.group_by(["result", "settings", "variant"], maintain_order=True)
        .agg(
            pl.len().alias("rounds"),
            pl.col("rows_per_s").median().round(0).cast(pl.Int64).alias("rows_per_s"),
            pl.col("ratio").median().round(3).alias("ratio"),
            pl.col("ratio").min().round(3).alias("ratio_min"),
            pl.col("ratio").max().round(3).alias("ratio_max"),
            pl.col("cpu_us_per_row").median().round(1).alias("cpu_us_per_row"),
            pl.col("clickhouse_cpu_us_per_row").median().round(1),
        )
        .sort("result", maintain_order=True)
    )


def _result_files(paths: str | Path | Sequence[str | Path], latest: int | None) -> list[Path]:
    listed = [paths] if isinstance(paths, str | Path) else list(paths)
    files: list[Path] = []
    for entry in map(Path, listed):
        if entry.is_dir():
            found = saved_results(entry)
            if not found:
                raise ResultsError(
                    f"No saved drain results in {str(entry)!r} (looked for {FOLDER}/*{SUFFIX}); "
                    f"run `rrlab bench drain --output {entry}` first."
                )
            files += found[-latest:] if latest else found
        elif entry.is_file():
            files.append(entry)
        elif entry.exists():
            raise ResultsError(f"{str(entry)!r} is neither a drain result nor a results folder.")
        else:
            raise ResultsError(
                f"{str(entry)!r} does not exist; give a saved drain result, or the results "
                "folder `rrlab bench drain --output` saved into (results by default)."
            )
    return files


_REQUIRED = ("round", "variant", "rows", "rows_per_s", "seconds")


def _drain_rows(path: Path, result: dict[str, Any]) -> list[dict[str, Any]]:
    drains, rows = result.get("drains"), result.get("rows")
    if (
        not isinstance(drains, list)
        or not isinstance(rows, int)
        or rows <= 0
        or not all(isinstance(d, dict) and all(k in d for k in _REQUIRED) for d in drains)
    ):
        raise ResultsError(
            f"{str(path)!r} is not an `rrlab bench drain` result (it needs 'rows' and a "
            f"'drains' list with {', '.join(_REQUIRED)} in each)."
        )
    ceiling = {d["round"]: d["rows_per_s"] for d in drains if d["variant"] == PG_RECVLOGICAL}
    name, settings = _result_name(path), _changed_settings(result.get("consumer") or {})
    return [
        {
            "result": name,
            "settings": settings,
            "round": drain["round"],
            "variant": drain["variant"],
            "rows": drain["rows"],
            "rows_per_s": drain["rows_per_s"],
            "ratio": drain["rows_per_s"] / ceiling[drain["round"]]
            if ceiling.get(drain["round"])
            else None,
            # results saved before the benchmark measured CPU have none
            "cpu_us_per_row": _per_row_us(drain.get("cpu_s"), rows),
            "clickhouse_cpu_us_per_row": _per_row_us(drain.get("clickhouse_cpu_s"), rows),
            "seconds": drain["seconds"],
            "startup_s": drain.get("startup_s"),
            "path": str(path),
        }
        for drain in drains
    ]


def _per_row_us(cpu_s: float | None, rows: int) -> float | None:
    """µs of CPU per row; None when not measured (0 is the benchmark's "no such process")."""
    return cpu_s * 1e6 / rows if cpu_s else None


def _result_name(path: Path) -> str:
    """``2026-11-27 07:47:32 UTC`` from ``20261127T074732Z-drain.json``, ``… UTC (2)`` from
    the second result of that second, ``…-2-drain.json`` (else the file's name)."""
    stamp, _, number = path.name.removesuffix(SUFFIX).partition("-")
    try:
        name = datetime.strptime(stamp, TIME_FORMAT).strftime("%Y-%m-%d %H:%M:%S UTC")
    except ValueError:
        return path.stem
    return f"{name} ({number})" if number else name


def _changed_settings(consumer: dict[str, Any]) -> str:
    """The consumer settings that differ from the defaults, as ``key=value, …``."""
    defaults = asdict(ConsumerConfig())
    changed = [
        f"{key}={value}"
        for key, value in consumer.items()
        if key not in _OWN_SETTINGS and key in defaults and value != defaults[key]
    ]
    return ", ".join(changed) or "defaults"
