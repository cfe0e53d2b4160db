"""The execution limit of an API process: at most `limit` uncached requests execute at once; the next ones wait
their turn for a short while, then are refused with a retryable 503.

Why: one process has one event loop and one pool of database connections. Past a handful of executions at once,
more of them add no throughput, only latency for everyone; and without a limit an overloaded process let requests
queue for a pooled connection for the pool's whole timeout (30 s) before refusing them with "every database
connection is busy", having parsed and begun each one. With the gate, an execution beyond the limit waits at most
`wait_seconds` (first come, first served) and is then refused before it has read anything, with a message that
says the process is busy rather than the database.

Where: a request takes its slot when its database snapshot opens, i.e. at its first read (app/reads/session.py),
and gives it back when the snapshot closes, after its answer is built. So the gate sits after the cache lookup:
a cache hit never executes and never waits here, nor does a request answered by a concurrent identical one
(app/cache.py). And a read-your-writes wait, which happens before the first read, holds no slot.

The request pool is sized against the limit (RAS_DATABASE_POOL_SIZE, checked by infra/settings.py), so an admitted
execution normally finds a connection at once.

Metrics: `ras_api_admissions_total{outcome}` (admitted at once, admitted after queueing, refused),
`ras_api_executions` (slots taken) and `ras_api_executions_queued` (requests waiting for one).
"""

from __future__ import annotations

import asyncio

from prometheus_client import Counter, Gauge

from app.errors import Overloaded

ADMISSIONS = Counter(
    "ras_api_admissions_total",
    "Uncached executions by admission outcome: admitted (a slot was free), queued (admitted after waiting), refused "
    "(no slot came free within RAS_ADMISSION_WAIT_SECONDS; answered 503).",
    ["outcome"],
)
EXECUTING = Gauge("ras_api_executions", "Execution slots taken (RAS_MAX_CONCURRENT_EXECUTIONS is the limit).")
QUEUED = Gauge("ras_api_executions_queued", "Requests waiting for an execution slot.")

_admitted = ADMISSIONS.labels("admitted")
_queued = ADMISSIONS.labels("queued")
_refused = ADMISSIONS.labels("refused")


class AdmissionGate:
    """`limit` slots; `acquire` takes one (waiting at most `wait_seconds`, else raising `Overloaded`), `release` gives
    it back. One per process, shared by GraphQL and REST."""

    def __init__(self, limit: int, wait_seconds: float) -> None:
        self.limit = limit
        self.wait_seconds = wait_seconds
        self._slots = asyncio.Semaphore(limit)
        self.taken = 0  # slots acquired and not yet released

    async def acquire(self) -> None:
        if not self._slots.locked():
            await self._slots.acquire()  # returns without suspending: a slot is free
            _admitted.inc()
        else:
            await self._queue()
        self.taken += 1
        EXECUTING.inc()

    async def _queue(self) -> None:
        QUEUED.inc()
        try:
            # A timeout or a cancellation while waiting takes no slot: asyncio.Semaphore hands back one it granted
            # at the same moment.
            async with asyncio.timeout(self.wait_seconds):
                await self._slots.acquire()
        except TimeoutError:
            _refused.inc()
            raise Overloaded(
                f"This server is executing its limit of {self.limit} requests at once and no slot came free within "
                f"{self.wait_seconds:g} s; retry shortly."
            ) from None
        finally:
            QUEUED.dec()
        _queued.inc()

    def release(self) -> None:
        self.taken -= 1
        EXECUTING.dec()
        self._slots.release()
