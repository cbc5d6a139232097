"""Sink outage windows: the consumer's sink events (rrlab.service.sink_events) and the windows
the runner derives from them for metrics.json (rrlab.runner.metrics.outage_windows)."""

from __future__ import annotations

import polars as pl
import pytest

from rrlab.analysis.findings import sink_outages
from rrlab.runner.metrics import SERIES, Recorder, outage_windows
from rrlab.service.sink_events import (
    CONNECT_FAILED,
    INSERT_FAILED,
    RECOVERED,
    REREAD,
    RecordingSink,
    SinkEvents,
)
from rrlab.service.sinks import MockSink


def events(*rows: tuple[float, str], phase: str = "load") -> pl.DataFrame:
    return pl.DataFrame(
        [(t, phase, event) for t, event in rows], schema=SERIES["sink_events"], orient="row"
    )


def test_an_outage_runs_from_the_first_failure_to_the_first_success_after_the_last() -> None:
    (window,) = outage_windows(
        events(
            (10.0, INSERT_FAILED),
            (10.4, INSERT_FAILED),
            (12.0, REREAD),
            (13.0, INSERT_FAILED),
            (21.5, RECOVERED),
        )
    )
    assert window == {
        "phase": "load",
        "start_s": 10.0,
        "end_s": 21.5,
        "duration_s": 11.5,
        "failed_inserts": 3,
        "failed_connects": 0,
        "reread_from_slot": True,
        "rereads": 1,
    }


def test_failures_soon_after_a_recovery_continue_the_outage_and_later_ones_start_another() -> None:
    first, second = outage_windows(
        events(
            (1.0, INSERT_FAILED),
            (2.0, RECOVERED),  # a flush that was already through when the sink stopped
            (3.0, INSERT_FAILED),
            (8.0, RECOVERED),
            (20.0, CONNECT_FAILED),
            (22.0, RECOVERED),
        )
    )
    assert (first["start_s"], first["end_s"], first["failed_inserts"]) == (1.0, 8.0, 2)
    assert not first["reread_from_slot"]
    assert (second["start_s"], second["end_s"], second["failed_connects"]) == (20.0, 22.0, 1)


def test_an_outage_still_going_at_the_end_has_no_end_and_lasts_until_its_last_failure() -> None:
    (window,) = outage_windows(events((5.0, INSERT_FAILED), (9.0, INSERT_FAILED)))
    assert window["end_s"] is None and window["duration_s"] == 4.0


def test_recoveries_and_rereads_without_a_failure_are_no_outage() -> None:
    assert outage_windows(events((1.0, RECOVERED), (2.0, REREAD))) == []


def test_the_phase_summary_lists_the_outages_that_started_in_it() -> None:
    recorder = Recorder()
    for t, phase, event in [
        (1.0, "warmup", INSERT_FAILED),
        (2.5, "warmup", RECOVERED),
        (30.0, "load", INSERT_FAILED),
        (34.0, "load", RECOVERED),
    ]:
        recorder.add("sink_events", {"t": t, "phase": phase, "event": event})
    phase = {"name": "load", "duration_s": 10, "target_throughput": 1, "load_s": 10,
             "consume_s": 10}  # fmt: skip
    summary = recorder.phase_summary(phase)
    assert [w["start_s"] for w in summary["sink_outages"]] == [30.0]
    assert "phase" not in summary["sink_outages"][0]
    assert summary["sink_outage_s"] == 4.0
    assert [w["phase"] for w in recorder.sink_outages()] == ["warmup", "load"]


class FlakySink(MockSink):
    """Fails the inserts whose number (from 1) is in ``failing``."""

    def __init__(self, failing: set[int]) -> None:
        super().__init__()
        self.failing, self.calls = failing, 0

    def insert(self, table, columns, rows, json_columns):
        self.calls += 1
        if self.calls in self.failing:
            raise ConnectionError("Connection refused")
        return super().insert(table, columns, rows, json_columns)


def test_the_recording_sink_reports_failed_attempts_and_the_first_success_after_them() -> None:
    recorded = SinkEvents()
    sink = RecordingSink(FlakySink({2, 3}), recorded)
    outcomes = []
    for _ in range(5):
        try:
            sink.insert("t", ["x"], [[1]], frozenset())
            outcomes.append("ok")
        except ConnectionError:
            outcomes.append("failed")
    assert outcomes == ["ok", "failed", "failed", "ok", "ok"]
    kinds = [kind for _, kind in recorded.drain()]
    assert kinds == [INSERT_FAILED, INSERT_FAILED, RECOVERED]
    assert recorded.drain() == []


@pytest.mark.parametrize("kind", [INSERT_FAILED, CONNECT_FAILED])
def test_sink_events_keep_the_time_the_failed_attempt_was_sent(kind: str) -> None:
    recorded = SinkEvents()
    recorded.failed(kind, 123.5)
    assert recorded.drain() == [(123.5, kind)]


def test_each_outage_is_one_finding_line() -> None:
    windows = outage_windows(
        events((3.0, CONNECT_FAILED), (4.0, RECOVERED), (40.0, INSERT_FAILED), (41.0, REREAD))
    )
    lines = [finding.message for finding in sink_outages({"sink_outages": windows})]
    assert lines == [
        "ClickHouse failed from 3.0 s until 4.0 s (1.0 s): 0 failed inserts, 1 failed connects.",
        "ClickHouse failed from 40.0 s and was not back when the run ended (0.0 s): "
        "1 failed inserts, 0 failed connects; re-read from the slot 1×.",
    ]
