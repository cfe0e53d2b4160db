"""Waiting for a dependency at start-up: bounded backoff, and a log line that says what is awaited and why."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import structlog

from ras.backoff import Backoff

log = structlog.get_logger(__name__)


class DependencyUnavailable(RuntimeError):
    """A dependency did not answer within the start-up budget."""


async def wait_for(name: str, where: str, probe: Callable[[], Awaitable[object]], budget_seconds: float) -> None:
    """Call `probe` until it succeeds, backing off up to 5 s between tries, for at most `budget_seconds`."""
    backoff = Backoff(base=0.2, cap=5.0)
    deadline = time.monotonic() + budget_seconds
    while True:
        try:
            await probe()
        except Exception as exc:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DependencyUnavailable(
                    f"{name} at {where} did not answer within {budget_seconds:.0f}s: {exc}"
                ) from exc
            delay = min(backoff.next_delay(), remaining)
            log.warning(
                "waiting for dependency", dependency=name, at=where, error=str(exc)[:200], retry_in=round(delay, 2)
            )
            await asyncio.sleep(delay)
            continue
        if backoff.attempt:
            log.info("dependency available", dependency=name, at=where)
        return
