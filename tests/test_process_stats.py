"""The consumer's vitals sampler."""

from rrlab.service.process_stats import ProcessStats, rss_mb


def test_utilisation_is_busy_time_over_wall_time() -> None:
    stats = ProcessStats()
    stats.sample()
    stats.busy(1e6)  # more busy time than wall time is clamped to 1
    assert stats.sample()["utilization"] == 1.0
    assert stats.sample()["utilization"] == 0.0  # the counter restarts at each sample


def test_cpu_and_rss_are_measured() -> None:
    stats = ProcessStats()
    sum(i * i for i in range(2_000_000))  # burn some CPU
    sample = stats.sample()
    assert sample["cpu_percent"] > 0
    assert sample["rss_mb"] > 5 and abs(sample["rss_mb"] - rss_mb()) < 50
