"""Load a run folder (docs/results.md) into polars frames: metadata, config, phases, time series."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import polars as pl

from rrlab.exceptions import ResultsError
from rrlab.profiling.flame import ERROR_SUFFIX, FLAME_SUFFIX
from rrlab.profiling.line_profile import STATS_SUFFIX
from rrlab.profiling.memray_profile import CAPTURE_SUFFIX, FLAMEGRAPH_SUFFIX
from rrlab.results import METRICS_SCHEMA_VERSION
from rrlab.runner.metrics import ADDED_COLUMNS, SERIES

# profiles/ files by kind, named <process>-<attempt><suffix> (rrlab.profiling writes them)
PROFILE_SUFFIXES: dict[str, str] = {
    "memray": CAPTURE_SUFFIX,
    "memray_flamegraph": FLAMEGRAPH_SUFFIX,
    "lines": STATS_SUFFIX,
    "flame": FLAME_SUFFIX,
    "flame_error": ERROR_SUFFIX,
}


CORE_PHASE_COLUMNS: dict[str, Any] = {
    "name": pl.Utf8, "duration_s": pl.Float64, "target_throughput": pl.Int64,
    "producer_throughput": pl.Float64, "consumer_throughput": pl.Float64,
    "replication_lag_ms_p50": pl.Float64, "replication_lag_ms_p99": pl.Float64,
}  # fmt: skip


@dataclass(frozen=True)
class Run:
    """One run folder as data. ``phases`` has one row per phase, nested metrics flattened."""

    path: Path
    config: dict[str, Any]
    metadata: dict[str, Any]
    phases: pl.DataFrame
    series: dict[str, pl.DataFrame] = field(repr=False)

    @property
    def producer(self) -> pl.DataFrame:
        return self.series["producer"]

    @property
    def producer_latency(self) -> pl.DataFrame:
        return self.series["producer_latency"]

    @property
    def consumer(self) -> pl.DataFrame:
        return self.series["consumer"]

    @property
    def lag(self) -> pl.DataFrame:
        return self.series["lag"]

    @property
    def flushes(self) -> pl.DataFrame:
        return self.series["flushes"]

    @property
    def processes(self) -> pl.DataFrame:
        return self.series["processes"]

    @property
    def name(self) -> str:
        return str(self.metadata.get("name") or self.path.name)

    @property
    def label(self) -> str:
        """A short name that tells runs apart in legends: the folder name (time + run name)."""
        return self.path.name

    @property
    def complete(self) -> bool:
        return self.metadata.get("status") == "complete"

    @cached_property
    def phase_spans(self) -> pl.DataFrame:
        """``phase, start_t, end_t, load_end_t`` in run time (s), from the samples of each phase.

        ``load_end_t`` is the producers' last report of the phase (the end of the load; the
        consumer may still be catching up until ``end_t``).
        """
        tagged = pl.concat(
            [frame.select("t", "phase") for frame in self.series.values()], how="vertical"
        ).drop_nulls()
        # a producer report counts the records of the second before it: the load began then
        producer = (
            self.producer.drop_nulls("t")
            .sort("t")
            .with_columns(pl.col("t").diff().over("process").median().alias("interval"))
            .group_by("phase")
            .agg(
                (pl.col("t").min() - pl.col("interval").fill_null(1.0).first()).alias("load_t"),
                pl.col("t").max().alias("load_end_t"),
            )
        )
        order = self.phases.select(pl.col("name").alias("phase")).with_row_index("order")
        return (
            tagged.group_by("phase")
            .agg(pl.col("t").min().alias("start_t"), pl.col("t").max().alias("end_t"))
            .join(order, on="phase", how="inner")
            .join(producer, on="phase", how="left")
            .with_columns(
                pl.min_horizontal("start_t", pl.col("load_t").clip(lower_bound=0.0)),
                pl.col("load_end_t").fill_null(pl.col("end_t")),
            )
            .sort("order")
            .drop("order", "load_t")
        )

    @property
    def profile_files(self) -> dict[str, list[Path]]:
        """Files under profiles/ by kind (``memray``, ``lines``, ``flame``, ...); empty if none.

        :mod:`rrlab.analysis.profiles` reads them into frames.
        """
        folder = self.path / "profiles"
        found: dict[str, list[Path]] = {}
        for kind, suffix in PROFILE_SUFFIXES.items():
            paths = sorted(folder.glob(f"*{suffix}"))
            if paths:
                found[kind] = paths
        return found


def load_run(path: str | Path) -> Run:
    """Read the run folder at ``path``; raises ResultsError if it is not one."""
    run_dir = Path(path).expanduser()
    metrics_file = run_dir / "metrics.json"
    if not metrics_file.is_file():
        hint = ""
        if run_dir.is_dir() and any(run_dir.glob("*/*/metrics.json")):
            hint = " It looks like a results folder: use find_runs() on it to list its runs."
        raise ResultsError(
            f"{str(run_dir)!r} is not a run folder: it has no metrics.json. Give a folder "
            f"written by `rrlab run` (results/<date>/<time>-<name>/).{hint}"
        )
    metrics = read_json(metrics_file)
    version = metrics.get("schema_version")
    if not isinstance(version, int) or version > METRICS_SCHEMA_VERSION:
        raise ResultsError(
            f"{str(metrics_file)!r} has schema_version {version!r}; this rrlab reads versions "
            f"up to {METRICS_SCHEMA_VERSION}. Upgrade rrlab to read it."
        )
    config_file = run_dir / "config.json"
    config = read_json(config_file) if config_file.is_file() else {}
    return Run(
        path=run_dir.resolve(),
        config=config,
        metadata=dict(metrics.get("run") or {}),
        phases=phases_frame(metrics.get("phases") or []),
        series={name: _read_series(run_dir, name) for name in SERIES},
    )


def find_runs(results_dir: str | Path = "results") -> pl.DataFrame:
    """Every run folder under ``results_dir``, newest first: path, name, started_at, status, ..."""
    rows = []
    for metrics_file in Path(results_dir).expanduser().glob("*/*/metrics.json"):
        try:
            metrics = json.loads(metrics_file.read_text(encoding="utf-8"))
            meta, phases = metrics.get("run") or {}, metrics.get("phases") or []
        except (OSError, ValueError, AttributeError):
            continue  # a run being written or a damaged file: not listable, not fatal
        rows.append(
            {
                "path": str(metrics_file.parent.resolve()),
                "name": meta.get("name"),
                "started_at": meta.get("started_at"),
                "status": meta.get("status"),
                "sink": meta.get("sink"),
                "profile": meta.get("profile"),
                "phases": len(phases),
            }
        )
    schema = {
        "path": pl.Utf8, "name": pl.Utf8, "started_at": pl.Utf8, "status": pl.Utf8,
        "sink": pl.Utf8, "profile": pl.Utf8, "phases": pl.Int64,
    }  # fmt: skip
    return pl.DataFrame(rows, schema=schema, orient="row").sort(
        ["started_at", "path"], descending=True, nulls_last=True
    )


def phases_frame(phases: list[dict[str, Any]]) -> pl.DataFrame:
    """One row per phase; nested objects flattened with ``_`` (replication_lag_ms_p99,
    cpu_percent_consumer, peak_rss_mb_producer-0, ...)."""
    rows = [flatten(phase) for phase in phases]
    columns = list(dict.fromkeys(key for row in rows for key in row))
    frame = pl.DataFrame(
        [{key: row.get(key) for key in columns} for row in rows],
        infer_schema_length=None,
        strict=False,
    )
    # a run stopped before its first phase ended still has the columns figures select
    missing = [pl.lit(None, dtype).alias(c) for c, dtype in CORE_PHASE_COLUMNS.items()
               if c not in frame.columns]  # fmt: skip
    return frame.with_columns(missing) if rows else pl.DataFrame(schema=CORE_PHASE_COLUMNS)


def flatten(data: dict[str, Any], sep: str = "_", prefix: str = "") -> dict[str, Any]:
    """Nested dicts to one level, keys joined with ``sep``."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, sep, f"{name}{sep}"))
        else:
            flat[name] = value
    return flat


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from ``path``; ResultsError naming the file when it cannot be read."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ResultsError(f"Cannot read {str(path)!r}: {exc.strerror or exc}.") from None
    except ValueError as exc:
        raise ResultsError(
            f"{str(path)!r} is not valid JSON ({exc}); the run may have been cut off while "
            "writing it."
        ) from None
    if not isinstance(data, dict):
        raise ResultsError(f"{str(path)!r} must hold a JSON object, not {type(data).__name__}.")
    return data


def _read_series(run_dir: Path, name: str) -> pl.DataFrame:
    """A time series with the contract's columns; an empty frame when the file is absent
    (a run that failed before its first sample writes none)."""
    schema = SERIES[name]
    path = run_dir / "timeseries" / f"{name}.parquet"
    if not path.is_file():
        return pl.DataFrame(schema=schema)
    try:
        frame = pl.read_parquet(path)
    except (OSError, pl.exceptions.PolarsError) as exc:
        raise ResultsError(f"Cannot read the time series {str(path)!r}: {exc}") from None
    missing = [column for column in schema if column not in frame.columns]
    lacking = [column for column in missing if column not in ADDED_COLUMNS.get(name, ())]
    if lacking:
        raise ResultsError(
            f"The time series {str(path)!r} lacks the columns {lacking}; it was written by an "
            "incompatible rrlab version."
        )
    return frame.select(
        pl.col(c).cast(dtype) if c in frame.columns else pl.lit(None, dtype).alias(c)
        for c, dtype in schema.items()
    )
