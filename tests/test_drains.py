"""Saved drain benchmark results as frames, their summary and figure (rrlab.analysis.drains)."""

from __future__ import annotations

import json
from datetime import datetime

import pytest

from rrlab.analysis.drains import drain_summary, load_drains
from rrlab.analysis.plots import drain_ratios
from rrlab.bench import saved
from rrlab.exceptions import ResultsError
from tests.fixtures.saved_drains import ROWS, save_drains

SECONDS = {"pg_recvlogical": [0.02, 0.025], "mock": [0.025, 0.025], "chdb": [0.05, 0.1]}


def test_each_drain_is_a_row_with_its_ratio_to_the_same_rounds_pg_recvlogical(tmp_path) -> None:
    save_drains(tmp_path, "20261127T074732Z", SECONDS)
    drains = load_drains(tmp_path)
    assert drains.height == 6
    assert drains["result"].unique().to_list() == ["2026-11-27 07:47:32 UTC"]
    assert drains["settings"].unique().to_list() == ["defaults"]
    by_drain = {(r["variant"], r["round"]): r for r in drains.iter_rows(named=True)}
    assert by_drain[("mock", 1)]["ratio"] == pytest.approx(0.8)  # 0.02 s against 0.025 s
    assert by_drain[("mock", 2)]["ratio"] == pytest.approx(1.0)
    assert by_drain[("chdb", 2)]["ratio"] == pytest.approx(0.25)
    assert by_drain[("chdb", 2)]["rows_per_s"] == pytest.approx(ROWS / 0.1)
    assert by_drain[("chdb", 2)]["cpu_us_per_row"] == pytest.approx(0.01 * 1e6 / ROWS)
    assert by_drain[("chdb", 2)]["clickhouse_cpu_us_per_row"] == pytest.approx(0.02 * 1e6 / ROWS)
    assert by_drain[("mock", 1)]["clickhouse_cpu_us_per_row"] is None


def test_results_are_named_by_time_and_changed_settings_newest_last(tmp_path) -> None:
    big = {"consumer.flush_batch_size": 5000, "consumer.max_flush_concurrency": 4}
    save_drains(tmp_path, "20261127T080000Z", SECONDS, big)
    save_drains(tmp_path, "20261127T070000Z", SECONDS)
    save_drains(tmp_path, "20261126T230000Z", SECONDS)
    summary = drain_summary(load_drains(tmp_path, latest=2))
    assert summary["result"].unique(maintain_order=True).to_list() == [
        "2026-11-27 07:00:00 UTC",
        "2026-11-27 08:00:00 UTC",
    ]
    assert summary["settings"].unique(maintain_order=True).to_list() == [
        "defaults",
        "flush_batch_size=5000, max_flush_concurrency=4",  # not the benchmark's own slot
    ]
    (chdb,) = summary.filter(variant="chdb", settings="defaults").iter_rows(named=True)
    assert (chdb["ratio"], chdb["ratio_min"], chdb["ratio_max"]) == (0.325, 0.25, 0.4)
    assert chdb["rows_per_s"] == round((ROWS / 0.05 + ROWS / 0.1) / 2)
    assert chdb["rounds"] == 2


def test_the_figure_shows_each_consumer_against_its_target(tmp_path) -> None:
    save_drains(tmp_path, "20261127T074732Z", SECONDS)
    fig = drain_ratios(load_drains(tmp_path))
    medians = {t.name: list(t.y) for t in fig.data if t.name.endswith("median")}
    assert medians == {"mock, median": [0.9], "chdb, median": [0.325]}
    targets = sorted(shape.y0 for shape in fig.layout.shapes)
    assert targets == [0.6, 0.9]
    cpu = {t.name: list(t.y) for t in fig.data if t.type == "bar" and "median" not in t.name}
    assert cpu["embedded ClickHouse"] == [pytest.approx(15.0)]  # median of 10 and 20 µs


@pytest.mark.parametrize(
    ("content", "message"),
    [("{", "not valid JSON"), ('{"rows": 5}', "not an `rrlab bench drain` result")],
)
def test_a_file_that_is_not_a_drain_result_is_named(tmp_path, content, message) -> None:
    path = tmp_path / "other.json"
    path.write_text(content)
    with pytest.raises(ResultsError, match=message) as refused:
        load_drains(path)
    assert str(path) in str(refused.value)


def test_a_folder_without_results_says_how_to_make_one(tmp_path) -> None:
    with pytest.raises(ResultsError, match=r"rrlab bench drain --output"):
        load_drains(tmp_path)
    with pytest.raises(ResultsError, match="missing' does not exist; give a saved drain result"):
        load_drains(tmp_path / "missing")


def test_results_saved_before_cpu_was_measured_load_without_it(tmp_path) -> None:
    path = save_drains(tmp_path, "20261126T181356Z", SECONDS)
    result = json.loads(path.read_text())
    for drain in result["drains"]:
        del drain["cpu_s"], drain["clickhouse_cpu_s"]
    path.write_text(json.dumps(result))
    drains = load_drains(path)
    assert drains.height == 6 and drains["cpu_us_per_row"].null_count() == 6
    assert drains.filter(variant="chdb")["ratio"].to_list() == [0.4, 0.25]


def test_a_drain_without_its_rate_is_refused(tmp_path) -> None:
    path = save_drains(tmp_path, "20261127T074732Z", SECONDS)
    result = json.loads(path.read_text())
    del result["drains"][1]["rows_per_s"]
    path.write_text(json.dumps(result))
    with pytest.raises(ResultsError, match="rows_per_s"):
        load_drains(path)


def test_results_of_the_same_second_are_all_kept_and_told_apart(tmp_path, monkeypatch) -> None:
    class Frozen(datetime):
        @classmethod
        def now(cls, tz=None):  # noqa: ANN206 - datetime's signature
            return datetime(2026, 11, 27, 7, 47, 32, tzinfo=tz)

    monkeypatch.setattr(saved, "datetime", Frozen)
    first = saved.save_result({"rows": 1}, tmp_path)
    second = saved.save_result({"rows": 2}, tmp_path)
    assert (first.name, second.name) == (
        "20261127T074732Z-drain.json",
        "20261127T074732Z-2-drain.json",
    )
    assert json.loads(first.read_text()) == {"rows": 1}
    save_drains(tmp_path / "other", "20261127T074732Z-2", SECONDS)
    assert load_drains(tmp_path / "other")["result"][0] == "2026-11-27 07:47:32 UTC (2)"
