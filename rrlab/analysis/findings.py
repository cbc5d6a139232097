"""Findings computed from a run's data: overloaded phases, growing lag, memory growth, errors,
sink outages.

Each check is a pure function of plain polars frames (or metadata) returning a list of
:class:`Finding`; :func:`run_findings` applies them all to a loaded run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import polars as pl

if TYPE_CHECKING:
    from rrlab.analysis.load import Run

Severity = Literal["warning", "info"]


@dataclass(frozen=True)
class Thresholds:
    """When a measurement becomes a finding. Defaults suit the seed's scenarios."""

    lag_p99_ms: float = 1_000.0
    # lag rising faster than this across a phase means the consumer is falling behind
    lag_growth_ms_per_s: float = 20.0
    utilization: float = 0.8
    producer_shortfall: float = 0.10
    memory_growth_mb: float = 50.0
    memory_growth_fraction: float = 0.25


@dataclass(frozen=True)
class Finding:
    severity: Severity
    check: str
    phase: str | None
    message: str


def lag_p99_exceeded(phases: pl.DataFrame, threshold_ms: float) -> list[Finding]:
    """Phases whose p99 replication lag is above ``threshold_ms``."""
    return [
        Finding(
            "warning",
            "lag_p99",
            row["name"],
            f"p99 replication lag {row['replication_lag_ms_p99']:,.0f} ms is above "
            f"{threshold_ms:,.0f} ms.",
        )  # fmt: skip
        for row in _rows(phases, "replication_lag_ms_p99")
        if row["replication_lag_ms_p99"] > threshold_ms
    ]


def lag_slopes(lag: pl.DataFrame) -> pl.DataFrame:
    """Least-squares slope of lag over time per phase: ``phase, slope_ms_per_s, rise_ms``.

    ``rise_ms`` is the slope times the phase's time span: how much lag built up across it.
    """
    fitted = (
        lag.drop_nulls(["t", "lag_ms"])
        .filter(pl.col("phase") != "startup")
        .group_by("phase", maintain_order=True)
        .agg(
            (pl.cov("t", "lag_ms") / pl.col("t").var()).alias("slope_ms_per_s"),
            (pl.col("t").max() - pl.col("t").min()).alias("span_s"),
            pl.len().alias("samples"),
        )
        .filter(pl.col("samples") >= 3)
    )
    return fitted.select(
        "phase",
        pl.col("slope_ms_per_s").fill_nan(0.0).fill_null(0.0),
        (pl.col("slope_ms_per_s").fill_nan(0.0).fill_null(0.0) * pl.col("span_s")).alias("rise_ms"),
    )


def lag_growing(lag: pl.DataFrame, threshold_ms_per_s: float) -> list[Finding]:
    """Phases across which replication lag keeps rising: the consumer falls behind."""
    return [
        Finding(
            "warning",
            "lag_growth",
            row["phase"],
            f"replication lag grew {row['slope_ms_per_s']:,.0f} ms per second across the phase "
            f"(+{row['rise_ms']:,.0f} ms): the consumer is falling behind the producers.",
        )  # fmt: skip
        for row in lag_slopes(lag).iter_rows(named=True)
        if row["slope_ms_per_s"] > threshold_ms_per_s
    ]


def utilization_high(phases: pl.DataFrame, threshold: float) -> list[Finding]:
    """Phases where the consumer's main loop was busy more than ``threshold`` of the time."""
    return [
        Finding(
            "warning",
            "utilization",
            row["name"],
            f"consumer utilisation averaged {row['consumer_utilization_mean']:.0%} "
            f"(above {threshold:.0%}): little headroom left.",
        )  # fmt: skip
        for row in _rows(phases, "consumer_utilization_mean")
        if row["consumer_utilization_mean"] > threshold
    ]


def producer_short(phases: pl.DataFrame, shortfall: float) -> list[Finding]:
    """Phases where the producers achieved less than (1 − shortfall) of the target rate."""
    return [
        Finding(
            "warning",
            "producer_short",
            row["name"],
            f"producers reached {row['producer_throughput']:,.0f} rec/s of the "
            f"{row['target_throughput']:,.0f} target "
            f"({row['producer_throughput'] / row['target_throughput'] - 1:+.0%}): "
            "the load generator or PostgreSQL, not the consumer, set this phase's rate.",
        )  # fmt: skip
        for row in _rows(phases, "producer_throughput", "target_throughput")
        if row["target_throughput"] > 0
        and row["producer_throughput"] < row["target_throughput"] * (1 - shortfall)
    ]


def memory_growth(
    processes: pl.DataFrame, min_growth_mb: float, min_growth_fraction: float
) -> list[Finding]:
    """Processes whose RSS grew from the first to the last minute of the run (first to last
    sample for runs shorter than three minutes), by at least both thresholds."""
    samples = processes.drop_nulls(["t", "rss_mb"])
    if samples.filter(pl.col("phase") != "startup").height:
        samples = samples.filter(pl.col("phase") != "startup")  # imports and warm-up, not growth
    findings = []
    for (process,), group in samples.sort("t").group_by("process", maintain_order=True):
        span = group["t"].max() - group["t"].min()
        window = 60.0 if span >= 180 else 0.0
        first = group.filter(pl.col("t") <= group["t"].min() + window)["rss_mb"].median()
        last = group.filter(pl.col("t") >= group["t"].max() - window)["rss_mb"].median()
        growth = last - first
        if growth >= min_growth_mb and growth >= first * min_growth_fraction:
            where = "first to last minute" if window else "first to last sample"
            findings.append(
                Finding(
                    "warning",
                    "memory_growth",
                    None,
                    f"{process} RSS grew {first:,.0f} → {last:,.0f} MB ({where}, "
                    f"+{growth / first:.0%}): a leak or an unbounded buffer?",
                )  # fmt: skip
            )
    return findings


def flush_problems(phases: pl.DataFrame) -> list[Finding]:
    """Flushes that failed every attempt (rows lost to the sink) and retried inserts."""
    findings = []
    for row in _rows(phases, "flush_errors", "flush_retries"):
        if row["flush_errors"]:
            findings.append(
                Finding(
                    "warning",
                    "flush_errors",
                    row["name"],
                    f"{row['flush_errors']} flushes failed every retry: their rows did not "
                    "reach the sink.",
                )  # fmt: skip
            )
        if row["flush_retries"]:
            findings.append(
                Finding(
                    "info",
                    "flush_retries",
                    row["name"],
                    f"{row['flush_retries']} inserts were retried.",
                )  # fmt: skip
            )
    return findings


def run_problems(metadata: dict[str, Any]) -> list[Finding]:
    """Run-level trouble: consumer or producer restarts, an incomplete run and its error."""
    findings = []
    for role, logs in (("consumer", "logs/consumer.log"), ("producer", "logs/producer-*.log")):
        restarts = metadata.get(f"{role}_restarts") or 0
        if restarts:
            findings.append(
                Finding(
                    "warning",
                    f"{role}_restarts",
                    None,
                    f"a {role} died and was restarted {restarts} time(s); see {logs}.",
                )
            )
    if metadata.get("status") != "complete":
        error = metadata.get("error") or "no error recorded"
        findings.append(Finding("warning", "incomplete", None, f"the run is incomplete: {error}."))
    return findings


def sink_outages(metadata: dict[str, Any]) -> list[Finding]:
    """One line per sink outage of the run (metrics.json ``run.sink_outages``)."""
    findings = []
    for window in metadata.get("sink_outages") or []:
        end = window["end_s"]
        until = "and was not back when the run ended" if end is None else f"until {end:,.1f} s"
        reread = f"; re-read from the slot {window['rereads']}×" if window["rereads"] else ""
        findings.append(
            Finding(
                "warning",
                "sink_outage",
                window.get("phase"),
                f"ClickHouse failed from {window['start_s']:,.1f} s {until} "
                f"({window['duration_s']:,.1f} s): {window['failed_inserts']} failed inserts, "
                f"{window['failed_connects']} failed connects{reread}.",
            )
        )
    return findings


def run_findings(run: Run, thresholds: Thresholds | None = None) -> list[Finding]:
    """Every check on one loaded run."""
    th = thresholds or Thresholds()
    return [
        *run_problems(run.metadata),
        *sink_outages(run.metadata),
        *lag_p99_exceeded(run.phases, th.lag_p99_ms),
        *lag_growing(run.lag, th.lag_growth_ms_per_s),
        *utilization_high(run.phases, th.utilization),
        *producer_short(run.phases, th.producer_shortfall),
        *memory_growth(run.processes, th.memory_growth_mb, th.memory_growth_fraction),
        *flush_problems(run.phases),
    ]


def findings_frame(findings: Sequence[Finding]) -> pl.DataFrame:
    """Findings as a table (severity, check, phase, message) for display."""
    schema = {"severity": pl.Utf8, "check": pl.Utf8, "phase": pl.Utf8, "message": pl.Utf8}
    rows = [(f.severity, f.check, f.phase, f.message) for f in findings]
    return pl.DataFrame(rows, schema=schema, orient="row")


# --- breaking point -------------------------------------------------------------------


@dataclass(frozen=True)
class SustainableRate:
    """The highest phase the consumer kept up with, and why the next one failed."""

    target_throughput: float
    achieved_throughput: float
    phase: str
    run: str
    failed_phase: str | None
    failure: str | None


def ramp_verdicts(
    runs: Run | Sequence[Run], lag_p99_threshold_ms: float, lag_growth_ms_per_s: float = 20.0
) -> pl.DataFrame:
    """One row per phase of ``runs`` (in order): rates, lag, and whether it was sustained.

    A phase is not sustained when its p99 lag passes the threshold or its lag keeps growing.
    """
    runs = [runs] if not isinstance(runs, Sequence) else list(runs)
    frames = []
    for run in runs:
        slopes = lag_slopes(run.lag).rename({"phase": "name"})
        frames.append(
            run.phases.select(
                pl.lit(run.label).alias("run"),
                "name",
                pl.col("target_throughput").cast(pl.Float64),
                pl.col("producer_throughput").cast(pl.Float64),
                pl.col("consumer_throughput").cast(pl.Float64),
                pl.col("replication_lag_ms_p50").cast(pl.Float64),
                pl.col("replication_lag_ms_p99").cast(pl.Float64),
            ).join(slopes, on="name", how="left")
        )
    if not frames:
        raise ValueError("ramp_verdicts() needs at least one run")
    table = pl.concat(frames, how="vertical")
    too_slow = pl.col("replication_lag_ms_p99") > lag_p99_threshold_ms
    growing = pl.col("slope_ms_per_s").fill_null(0.0) > lag_growth_ms_per_s
    return table.with_columns(
        (~(too_slow.fill_null(False) | growing)).alias("sustained"),
        pl.when(too_slow)
        .then(pl.format("p99 lag {} ms > {} ms", pl.col("replication_lag_ms_p99").round(0),
                        pl.lit(lag_p99_threshold_ms)))
        .when(growing)
        .then(pl.format("lag grows {} ms/s", pl.col("slope_ms_per_s").round(1)))
        .otherwise(None)
        .alias("failure"),
    )  # fmt: skip


def sustainable_rate(
    runs: Run | Sequence[Run], lag_p99_threshold_ms: float, lag_growth_ms_per_s: float = 20.0
) -> SustainableRate | None:
    """The last phase before the first one the consumer could not sustain (None if the very
    first phase failed). Phases are taken in run order: a ramp's rising targets."""
    verdicts = ramp_verdicts(runs, lag_p99_threshold_ms, lag_growth_ms_per_s)
    best = None
    for row in verdicts.iter_rows(named=True):
        if not row["sustained"]:
            if best is None:
                return None
            return SustainableRate(**best, failed_phase=row["name"], failure=row["failure"])
        best = {
            "target_throughput": row["target_throughput"],
            "achieved_throughput": row["consumer_throughput"],
            "phase": row["name"],
            "run": row["run"],
        }
    return None if best is None else SustainableRate(**best, failed_phase=None, failure=None)


def _rows(phases: pl.DataFrame, *columns: str) -> list[dict[str, Any]]:
    """Phase rows that have every column, non-null (an empty phase has no percentiles)."""
    if not all(column in phases.columns for column in columns):
        return []
    return list(phases.drop_nulls(list(columns)).iter_rows(named=True))
