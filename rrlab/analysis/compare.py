"""Comparing runs: a per-phase table of the key metrics of each run and their % change vs the
first run (the upstream benchmark's comparison section)."""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl

from rrlab.analysis.load import Run, flatten

# phases-frame column → how the table names it
COMPARED_METRICS: dict[str, str] = {
    "producer_throughput": "producer throughput (rec/s)",
    "consumer_throughput": "consumer throughput (rec/s)",
    "replication_lag_ms_p50": "replication lag p50 (ms)",
    "replication_lag_ms_p95": "replication lag p95 (ms)",
    "replication_lag_ms_p99": "replication lag p99 (ms)",
    "consumer_utilization_mean": "consumer utilisation (mean)",
    "cpu_percent_consumer": "consumer CPU (%)",
    "peak_rss_mb_consumer": "consumer peak RSS (MB)",
    "flush_duration_ms_p50": "flush duration p50 (ms)",
    "flush_duration_ms_p99": "flush duration p99 (ms)",
    "flush_batch_size_p50": "flush batch size p50 (rows)",
    "catch_up_s": "catch-up (s)",
}


def run_labels(runs: Sequence[Run]) -> list[str]:
    """Legend and column names that tell runs apart, even two runs with the same folder name."""
    labels: list[str] = []
    for run in runs:
        label = run.label
        if label in labels:
            label = f"{run.path.parent.name}/{run.label}"
        while label in labels:
            label = f"{label}'"
        labels.append(label)
    return labels


def phase_deltas(runs: Sequence[Run], metrics: dict[str, str] | None = None) -> pl.DataFrame:
    """``phase, metric, <run 1>, <run 2>, ..., <run 2> Δ%, ...``: one row per phase and metric.

    Phases are matched by name, in the first run's order (then any the first run lacks);
    a metric a run does not have is null, and so is its % change.
    """
    if len(runs) < 2:
        raise ValueError("phase_deltas() compares two or more runs")
    metrics = metrics or COMPARED_METRICS
    labels = run_labels(runs)
    long = [_long_metrics(run, label, metrics) for run, label in zip(runs, labels, strict=True)]
    table = long[0]
    for frame in long[1:]:
        table = table.join(frame, on=["phase", "metric"], how="full", coalesce=True)
    order = _phase_order(runs)
    baseline = pl.col(labels[0])
    table = (
        table.with_columns(
            pl.col("phase").replace_strict(order, default=len(order)).alias("_phase"),
            pl.col("metric")
            .replace_strict(list(metrics.values()), list(range(len(metrics))))
            .alias("_metric"),
        )  # fmt: skip
        .sort("_phase", "_metric")
        .drop("_phase", "_metric")
    )
    return table.with_columns(
        pl.when(baseline != 0)
        .then(((pl.col(label) / baseline - 1) * 100).round(1))
        .otherwise(None)
        .alias(f"{label} Δ%")
        for label in labels[1:]
    )


def config_differences(runs: Sequence[Run]) -> pl.DataFrame:
    """``setting, <run 1>, <run 2>, ...``: the configuration keys whose values differ between
    runs (what the comparison is about), plus the sink and profiler actually used."""
    labels = run_labels(runs)
    flat = [
        {**flatten(run.config, "."), "sink (used)": run.metadata.get("sink"),
         "profile (used)": run.metadata.get("profile")}
        for run in runs
    ]  # fmt: skip
    keys = list(dict.fromkeys(key for config in flat for key in config))
    rows = [
        [key, *(_text(config.get(key)) for config in flat)]
        for key in keys
        if len({_text(config.get(key)) for config in flat}) > 1
    ]
    return pl.DataFrame(rows, schema=["setting", *labels], orient="row")


def _text(value: object) -> str:
    return "–" if value is None else str(value)


def _long_metrics(run: Run, label: str, metrics: dict[str, str]) -> pl.DataFrame:
    present = [column for column in metrics if column in run.phases.columns]
    if not present:
        return pl.DataFrame(schema={"phase": pl.Utf8, "metric": pl.Utf8, label: pl.Float64})
    return (
        run.phases.select(
            pl.col("name").alias("phase"), *(pl.col(c).cast(pl.Float64) for c in present)
        )
        .unpivot(index="phase", variable_name="metric", value_name=label)
        .with_columns(pl.col("metric").replace_strict(metrics))
    )


def _phase_order(runs: Sequence[Run]) -> dict[str, int]:
    order: dict[str, int] = {}
    for run in runs:
        for name in run.phases["name"].to_list():
            order.setdefault(name, len(order))
    return order
