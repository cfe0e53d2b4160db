"""Waiting for a dependency at start-up: bounded backoff, and a log line that says what is awaited and why."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import structlog

from infra.backoff import Backoff
from infra.failures import is_permanent

log = structlog.get_logger(__name__)


class DependencyUnavailable(RuntimeError):
    """A dependency did not answer within the start-up budget, or refused in a way waiting will not cure.

    Raised from the last failure, so `infra.failures` can say why.
    """

    def __init__(self, message: str, budget_seconds: float, retried: bool) -> None:
        super().__init__(message)
        self.budget_seconds = budget_seconds
        self.retried = retried


async def wait_for(name: str, where: str, probe: Callable[[], Awaitable[object]], budget_seconds: float) -> None:
    """Call `probe` until it succeeds, backing off up to 5 s between tries, for at most `budget_seconds`.

    An unknown database or refused credentials end the wait at once: they do not fix themselves.
    """
    backoff = Backoff(base=0.2, cap=5.0)
    deadline = time.monotonic() + budget_seconds
    while True:
        try:
            await probe()
        except Exception as exc:
            if is_permanent(exc):
                raise DependencyUnavailable(f"{name} at {where} refused: {exc}", budget_seconds, False) from exc
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DependencyUnavailable(
                    f"{name} at {where} did not answer within {budget_seconds:g}s: {exc}", budget_seconds, True
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


async def broker_answers(bootstrap: str, timeout_seconds: float = 3.0) -> None:
    """Probe a Kafka bootstrap list: a TCP connection to one of its servers (so a refusal is reported as one), then
    the cluster's metadata through an admin client."""
    from aiokafka.admin import AIOKafkaAdminClient

    first_error: OSError | None = None
    for server in bootstrap.split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            async with asyncio.timeout(timeout_seconds):
                _, writer = await asyncio.open_connection(host.strip("[]"), int(port))
        except OSError as exc:  # TimeoutError included
            first_error = first_error or exc
            continue
        writer.close()
        await writer.wait_closed()
        break
    else:
        assert first_error is not None, "a validated bootstrap list names at least one server"
        raise first_error
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout_seconds * 1000))
    await admin.start()
    await admin.close()
