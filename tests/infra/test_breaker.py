"""Circuit breaker states with a controlled clock."""

from __future__ import annotations

import pytest

from infra.breaker import CircuitBreaker


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr("infra.breaker.time.monotonic", fake)
    return fake


def test_opens_after_threshold_and_fails_fast(clock: Clock) -> None:
    b = CircuitBreaker(threshold=3, reset_after=2.0)
    for _ in range(2):
        b.record_failure()
        assert b.allow()
    b.record_failure()
    assert b.is_open and not b.allow()


def test_half_open_lets_one_trial_through(clock: Clock) -> None:
    b = CircuitBreaker(threshold=1, reset_after=2.0)
    b.record_failure()
    clock.now += 2.5
    assert b.allow()
    assert not b.allow(), "only one trial while half-open"
    b.record_success()
    assert not b.is_open and b.allow()


def test_failed_trial_reopens_for_a_full_period(clock: Clock) -> None:
    b = CircuitBreaker(threshold=1, reset_after=2.0)
    b.record_failure()
    clock.now += 2.5
    assert b.allow()
    b.record_failure()
    clock.now += 1.0
    assert not b.allow()
    clock.now += 1.5
    assert b.allow()


def test_success_resets_the_failure_count(clock: Clock) -> None:
    b = CircuitBreaker(threshold=2)
    b.record_failure()
    b.record_success()
    b.record_failure()
    assert not b.is_open
