"""Pacing math of the producer, driven by a fake clock."""

import pytest

from rrlab.producer.pacing import MAX_BATCH_SPAN_S, Pacer


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def test_a_prompt_writer_stays_within_half_a_batch_of_the_schedule():
    clock = FakeClock()
    pacer = Pacer(2_000, 500, clock)
    for _ in range(200):
        clock.advance(pacer.wait_s())
        pacer.written(pacer.batch_size)
        expected = 2_000 * pacer.elapsed_s()
        assert abs(pacer.records - expected) <= 250 + 1e-6


def test_slow_batches_and_late_wakeups_do_not_accumulate_drift():
    clock = FakeClock()
    pacer = Pacer(1_000, 100, clock)
    for i in range(1_000):
        # every wake-up is 7 ms late and every write takes 3–9 ms: a sleep-per-batch loop
        # would fall further behind on each batch
        clock.advance(pacer.wait_s() + 0.007)
        pacer.written(pacer.batch_size)
        clock.advance(0.003 + (i % 4) * 0.002)
    assert pacer.records == 100_000
    assert pacer.achieved_rate() == pytest.approx(1_000, rel=0.001)


def test_a_late_writer_is_due_at_once_until_it_has_caught_up():
    clock = FakeClock()
    pacer = Pacer(1_000, 100, clock)
    clock.advance(2.0)
    catch_up_batches = 0
    while pacer.wait_s() == 0:
        pacer.written(pacer.batch_size)
        catch_up_batches += 1
    assert catch_up_batches == 20
    # the next batch (records 2000..2099) is due when record 2050 is, 50 ms from now
    assert pacer.wait_s() == pytest.approx(0.05)


def test_wait_is_measured_from_the_phase_start():
    clock = FakeClock()
    pacer = Pacer(100, 10, clock)
    assert pacer.wait_s() == pytest.approx(0.05)
    pacer.written(10)
    clock.advance(0.02)
    assert pacer.wait_s() == pytest.approx(0.15 - 0.02)


def test_a_slow_rate_caps_the_batch_to_a_quarter_second_of_records():
    assert Pacer(400, 500, FakeClock()).batch_size == round(400 * MAX_BATCH_SPAN_S)
    assert Pacer(2, 500, FakeClock()).batch_size == 1
    assert Pacer(20_000, 500, FakeClock()).batch_size == 500


def test_achieved_rate_counts_records_over_elapsed_time():
    clock = FakeClock()
    pacer = Pacer(1_000, 100, clock)
    assert pacer.achieved_rate() == 0.0
    pacer.written(300)
    clock.advance(0.5)
    assert pacer.achieved_rate() == pytest.approx(600)


@pytest.mark.parametrize("rate", [0, -5, float("inf"), float("nan")])
def test_a_rate_that_is_not_positive_is_refused(rate):
    with pytest.raises(ValueError, match="rate"):
        Pacer(rate, 100, FakeClock())
