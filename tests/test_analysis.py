"""load_run / find_runs on fabricated run folders, and clear errors on folders that are not runs."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import polars as pl
import pytest

from rrlab.analysis.load import find_runs, load_run
from rrlab.exceptions import ResultsError
from rrlab.runner.metrics import SERIES
from tests.fixtures.fabricated_run import fabricate_run


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return fabricate_run(tmp_path_factory.mktemp("results"), run_name="loaded", flush_errors=2)


def test_load_run_reads_metadata_config_and_phases(run_dir):
    run = load_run(run_dir)
    assert run.path == run_dir
    assert run.name == "loaded"
    assert run.complete
    assert run.config["consumer"]["flush_batch_size"] == 50
    assert run.phases["name"].to_list() == ["warmup", "baseline"]
    assert run.phases["target_throughput"].to_list() == [1000, 4000]
    # nested percentiles and per-process maps are flattened into columns
    for column in ("replication_lag_ms_p99", "flush_duration_ms_p50", "peak_rss_mb_consumer",
                   "cpu_percent_producer-0", "consumer_utilization_mean"):  # fmt: skip
        assert column in run.phases.columns, column
    assert run.phases.schema["replication_lag_ms_p99"] == pl.Float64


def test_load_run_series_follow_the_contract(run_dir):
    run = load_run(run_dir)
    for name, schema in SERIES.items():
        frame = run.series[name]
        assert dict(frame.schema) == schema, name
        assert frame.height > 0, name
    assert run.lag is run.series["lag"]
    assert set(run.processes["process"].unique()) == {"consumer", "producer-0", "producer-1"}
    # the phase summary and the samples it came from agree
    produced = run.producer.filter(pl.col("phase") == "baseline")["records"].sum()
    assert run.phases.filter(pl.col("name") == "baseline")["records_produced"].item() == produced


def test_phase_spans_are_ordered_and_inside_the_samples(run_dir):
    spans = load_run(run_dir).phase_spans
    assert spans["phase"].to_list() == ["warmup", "baseline"]
    warmup, baseline = spans.iter_rows(named=True)
    assert warmup["start_t"] <= warmup["load_end_t"] <= warmup["end_t"] < baseline["start_t"]


def test_profile_files_lists_what_profiles_holds(tmp_path):
    run_dir = fabricate_run(tmp_path)
    assert load_run(run_dir).profile_files == {}
    for name in ("consumer-0.memray.bin", "consumer-1.memray.bin", "consumer-0.lprof"):
        (run_dir / "profiles" / name).write_bytes(b"x")
    files = load_run(run_dir).profile_files
    assert [p.name for p in files["memray"]] == ["consumer-0.memray.bin", "consumer-1.memray.bin"]
    assert [p.name for p in files["lines"]] == ["consumer-0.lprof"]
    assert "flame" not in files


def test_a_run_without_time_series_loads_with_empty_frames(tmp_path):
    run_dir = fabricate_run(tmp_path, status="incomplete")
    for file in (run_dir / "timeseries").iterdir():
        file.unlink()
    run = load_run(run_dir)
    assert not run.complete
    assert run.lag.height == 0 and dict(run.lag.schema) == SERIES["lag"]


def test_not_a_run_folder(tmp_path):
    with pytest.raises(ResultsError, match="not a run folder.*metrics.json"):
        load_run(tmp_path)


def test_results_folder_given_instead_of_a_run_says_so(tmp_path):
    fabricate_run(tmp_path)
    with pytest.raises(ResultsError, match="find_runs"):
        load_run(tmp_path)


def test_damaged_metrics_and_newer_schema(tmp_path):
    run_dir = fabricate_run(tmp_path)
    metrics = run_dir / "metrics.json"
    metrics.write_text('{"schema_version": 1, "run": ')
    with pytest.raises(ResultsError, match="not valid JSON"):
        load_run(run_dir)
    metrics.write_text(json.dumps({"schema_version": 99, "run": {}, "phases": []}))
    with pytest.raises(ResultsError, match="schema_version 99"):
        load_run(run_dir)


def test_time_series_with_missing_columns(tmp_path):
    run_dir = fabricate_run(tmp_path)
    pl.DataFrame({"t": [1.0]}).write_parquet(run_dir / "timeseries" / "lag.parquet")
    with pytest.raises(ResultsError, match="lag.parquet.*lacks the columns"):
        load_run(run_dir)


def test_a_run_from_before_a_column_was_added_reads_it_as_nulls(tmp_path):
    run_dir = fabricate_run(tmp_path)
    path = run_dir / "timeseries" / "consumer.parquet"
    pl.read_parquet(path).drop("held_bytes").write_parquet(path)
    consumer = load_run(run_dir).consumer
    assert dict(consumer.schema) == SERIES["consumer"]
    assert consumer.height > 0 and consumer["held_bytes"].null_count() == consumer.height
    pl.read_parquet(path).drop("pending").write_parquet(path)
    with pytest.raises(ResultsError, match=r"lacks the columns \['pending'\]"):
        load_run(run_dir)


def test_find_runs_lists_newest_first(tmp_path):
    older = fabricate_run(tmp_path, run_name="older", started=datetime(2026, 1, 1, tzinfo=UTC))
    newer = fabricate_run(tmp_path, run_name="newer", started=datetime(2026, 2, 1, tzinfo=UTC))
    (tmp_path / "not-a-run").mkdir()
    runs = find_runs(tmp_path)
    assert runs["path"].to_list() == [str(newer), str(older)]
    assert runs["name"].to_list() == ["newer", "older"]
    assert runs["phases"].to_list() == [2, 2]
    assert find_runs(tmp_path / "nothing-here").height == 0
