"""Exponential backoff with full jitter, for waiting on a dependency that is down."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass
class Backoff:
    """Delays of `base * 2**attempt`, capped, each drawn uniformly below that bound so restarting clients spread out."""

    base: float = 0.1
    cap: float = 10.0
    attempt: int = 0

    def next_delay(self) -> float:
        bound = min(self.cap, self.base * (2**self.attempt))
        self.attempt += 1
        return random.uniform(bound / 2, bound)

    def reset(self) -> None:
        self.attempt = 0
