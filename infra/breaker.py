"""A circuit breaker: after repeated failures, stop calling a dead dependency for a while instead of hammering it.

Closed: calls go through; `threshold` consecutive failures open it. Open: `allow()` is False until `reset_after`
seconds have passed, so callers fail fast. Then one trial call is let through (half-open): success closes the
breaker, failure opens it for another period.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class CircuitBreaker:
    threshold: int = 3
    reset_after: float = 2.0
    failures: int = 0
    opened_at: float | None = None
    _trial_in_flight: bool = field(default=False, repr=False)

    @property
    def is_open(self) -> bool:
        return self.opened_at is not None

    def allow(self) -> bool:
        if self.opened_at is None:
            return True
        if self._trial_in_flight or time.monotonic() - self.opened_at < self.reset_after:
            return False
        self._trial_in_flight = True
        return True

    def record_success(self) -> None:
        self.failures = 0
        self.opened_at = None
        self._trial_in_flight = False

    def record_failure(self) -> None:
        self.failures += 1
        self._trial_in_flight = False
        if self.opened_at is not None or self.failures >= self.threshold:
            self.opened_at = time.monotonic()
