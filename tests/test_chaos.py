"""The chaos schedule: kills land inside load time only, once each."""

import pytest

from rrlab.api import parse_chaos
from rrlab.exceptions import ConfigError
from rrlab.runner.orchestrator import ChaosSchedule


def test_kills_are_due_on_load_time_only() -> None:
    schedule = ChaosSchedule(count=3, load_s=10.0, seed=1)
    schedule.start(0.0)
    kills = [t for t in [x * 0.1 for x in range(1, 51)] if schedule.due(t)]
    schedule.start(1000.0)  # a catch-up and a pause: not load time
    kills += [t for t in [1000 + x * 0.1 for x in range(1, 51)] if schedule.due(t)]
    assert len(kills) == 3
    assert all(0.5 <= (t if t < 1000 else t - 1000 + 5) <= 9.6 for t in kills)


def test_no_kill_is_planned_by_default() -> None:
    schedule = ChaosSchedule(count=0, load_s=10.0, seed=None)
    schedule.start(0.0)
    assert not any(schedule.due(t) for t in range(20)) and schedule.planned == 0


def test_chaos_spec_parsing() -> None:
    assert parse_chaos("kill-consumer=3,seed=5") == {
        "chaos.kill_consumer": "3",
        "chaos.seed": "5",
    }
    with pytest.raises(ConfigError, match="kill-consumer=N"):
        parse_chaos("kill-producer=1")
