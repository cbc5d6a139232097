"""Each finding fires on crafted data and stays quiet when things are fine."""

from __future__ import annotations

import polars as pl
import pytest

from rrlab.analysis import findings as f
from rrlab.analysis.load import load_run
from tests.fixtures.fabricated_run import fabricate_run


def phases(**columns) -> pl.DataFrame:
    return pl.DataFrame({"name": ["warmup", "stress"], **columns})


def lag_series(slopes: dict[str, float], seconds: int = 30) -> pl.DataFrame:
    rows = [
        (float(t), phase, 40.0 + slope * t + (7.0 if t % 2 else -7.0))  # noise around the line
        for phase, slope in slopes.items()
        for t in range(seconds)
    ]
    return pl.DataFrame(rows, schema=["t", "phase", "lag_ms"], orient="row")


def test_lag_p99_exceeded():
    table = phases(replication_lag_ms_p99=[80.0, 2500.0])
    found = f.lag_p99_exceeded(table, 1000)
    assert [(x.check, x.phase) for x in found] == [("lag_p99", "stress")]
    assert "2,500 ms" in found[0].message
    assert f.lag_p99_exceeded(table, 3000) == []


def test_lag_p99_of_a_phase_without_samples_is_not_a_finding():
    assert f.lag_p99_exceeded(phases(replication_lag_ms_p99=[None, None]), 1000) == []


def test_lag_slopes_fit_the_line():
    slopes = f.lag_slopes(lag_series({"warmup": 0.0, "stress": 100.0}))
    by_phase = dict(zip(slopes["phase"], slopes["slope_ms_per_s"], strict=True))
    assert by_phase["warmup"] == pytest.approx(0.0, abs=1.0)
    assert by_phase["stress"] == pytest.approx(100.0, abs=1.0)


def test_lag_growing():
    found = f.lag_growing(lag_series({"warmup": 1.0, "stress": 100.0}), 20)
    assert [(x.check, x.phase) for x in found] == [("lag_growth", "stress")]
    assert f.lag_growing(lag_series({"warmup": 1.0, "stress": -50.0}), 20) == []


def test_utilization_high():
    table = phases(consumer_utilization_mean=[0.3, 0.93])
    assert [x.phase for x in f.utilization_high(table, 0.8)] == ["stress"]
    assert f.utilization_high(table, 0.95) == []


def test_producer_short():
    table = phases(target_throughput=[1000, 20000], producer_throughput=[995.0, 15000.0])
    found = f.producer_short(table, 0.10)
    assert [x.phase for x in found] == ["stress"]
    assert "-25%" in found[0].message
    assert f.producer_short(table, 0.30) == []


def rss(process: str, start: float, end: float, seconds: int) -> list[tuple]:
    return [
        (float(t), "load", process, start + (end - start) * t / (seconds - 1))
        for t in range(seconds)
    ]


def test_memory_growth_first_to_last_sample_of_a_short_run():
    samples = pl.DataFrame(
        rss("consumer", 100, 400, 60) + rss("producer-0", 60, 62, 60),
        schema=["t", "phase", "process", "rss_mb"],
        orient="row",
    )
    found = f.memory_growth(samples, 50, 0.25)
    assert [x.check for x in found] == ["memory_growth"]
    assert "consumer" in found[0].message and "first to last sample" in found[0].message


def test_memory_growth_compares_minutes_in_long_runs_and_ignores_startup():
    startup = [(0.0, "startup", "consumer", 10.0)]  # before imports: not growth
    steady = rss("consumer", 300, 320, 600)
    samples = pl.DataFrame(
        startup + steady, schema=["t", "phase", "process", "rss_mb"], orient="row"
    )
    assert f.memory_growth(samples, 50, 0.25) == []
    found = f.memory_growth(
        pl.DataFrame(rss("consumer", 300, 900, 600), schema=samples.columns, orient="row"), 50, 0.25
    )
    assert "first to last minute" in found[0].message


def test_flush_problems():
    table = phases(flush_errors=[0, 2], flush_retries=[1, 0])
    found = {(x.check, x.phase, x.severity) for x in f.flush_problems(table)}
    assert found == {("flush_errors", "stress", "warning"), ("flush_retries", "warmup", "info")}
    assert f.flush_problems(phases(flush_errors=[0, 0], flush_retries=[0, 0])) == []


def test_run_problems():
    assert f.run_problems({"status": "complete", "consumer_restarts": 0}) == []
    found = f.run_problems({"status": "incomplete", "consumer_restarts": 2, "error": "SIGINT"})
    assert [x.check for x in found] == ["consumer_restarts", "incomplete"]
    assert "SIGINT" in found[1].message
    found = f.run_problems({"status": "complete", "consumer_restarts": 0, "producer_restarts": 2})
    assert [(x.check, "2 time(s)" in x.message) for x in found] == [("producer_restarts", True)]


def test_run_findings_on_healthy_and_overloaded_runs(tmp_path):
    healthy = load_run(fabricate_run(tmp_path, run_name="healthy"))
    assert f.run_findings(healthy) == []
    overloaded = load_run(
        fabricate_run(tmp_path, run_name="overloaded", consumer_capacity=3000,
                      consumer_rss_growth_mb_per_s=10, flush_errors=1, consumer_restarts=1)
    )  # fmt: skip
    checks = {x.check for x in f.run_findings(overloaded)}
    assert checks == {"lag_p99", "lag_growth", "utilization", "memory_growth", "flush_errors",
                      "flush_retries", "consumer_restarts"}  # fmt: skip
    frame = f.findings_frame(f.run_findings(overloaded))
    assert frame.columns == ["severity", "check", "phase", "message"]


@pytest.fixture(scope="module")
def ramp(tmp_path_factory):
    return load_run(
        fabricate_run(
            tmp_path_factory.mktemp("ramp"),
            phases=(("r5k", 8, 5000), ("r10k", 8, 10000), ("r15k", 8, 15000)),
            consumer_capacity=12000,
        )
    )


def test_sustainable_rate_is_the_last_phase_before_the_first_failure(ramp):
    rate = f.sustainable_rate(ramp, lag_p99_threshold_ms=1000)
    assert (rate.phase, rate.target_throughput, rate.failed_phase) == ("r10k", 10000, "r15k")
    assert rate.achieved_throughput == pytest.approx(10000, rel=0.05)
    verdicts = f.ramp_verdicts(ramp, 1000)
    assert verdicts["sustained"].to_list() == [True, True, False]


def test_sustainable_rate_with_lag_growth_but_low_p99(ramp):
    # a generous p99 threshold: the growing lag alone marks the overload
    rate = f.sustainable_rate(ramp, lag_p99_threshold_ms=1e9)
    assert rate.failed_phase == "r15k" and "grows" in rate.failure


def test_sustainable_rate_none_when_the_first_phase_fails_or_all_pass(ramp):
    assert f.sustainable_rate(ramp, lag_p99_threshold_ms=1.0) is None
    everything = f.sustainable_rate(ramp, lag_p99_threshold_ms=1e9, lag_growth_ms_per_s=1e9)
    assert (everything.phase, everything.failed_phase) == ("r15k", None)


def test_sustainable_rate_across_several_runs(tmp_path):
    runs = [
        load_run(
            fabricate_run(
                tmp_path,
                run_name=f"at{rate}",
                phases=(("load", 8, rate),),
                consumer_capacity=12000,
                seed=rate,
            )
        )  # fmt: skip
        for rate in (6000, 11000, 16000)
    ]
    rate = f.sustainable_rate(runs, lag_p99_threshold_ms=1000)
    assert rate.target_throughput == 11000 and rate.run == runs[1].label
