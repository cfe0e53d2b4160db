"""Read-your-writes: a caller that has just produced an event can ask a query to wait until the projection applied it.

The caller knows where its event landed (topic, partition and offset, from the producer's acknowledgement). The
projection has applied it once the consumer's stored position of that partition is past the offset: positions are
committed in the same transaction as the rows (consumer/apply.py), so "position > offset" means "the rows reflect
the event" (or that it was quarantined, or ignored as a duplicate: in every case nothing more will come of it).

Two ways to ask, both bounded by RAS_CONSISTENCY_MAX_WAIT_MS:

* `query Q @consistent(topic: …, partition: …, offset: …, timeoutMs: …) { … }` — the operation's fields are read
  only once the position is reached, from a snapshot taken after it (`ConsistencyGate` waits in `on_execute`, before
  any resolver runs; the request's snapshot opens at its first read). If the position is not reached in time,
  nothing is read and the answer is a CONSISTENCY_TIMEOUT error: never an answer older than the awaited event.
* `projection { waitFor(topic: …, partition: …, offset: …, timeoutMs: …) }` — true when the position was reached
  in time, false otherwise; a probe, for callers that then query (or poll a REST route) themselves. Its waits run
  before execution too (the gate collects every `waitFor` of the operation), so the request's snapshot opens after
  them and its other fields are read after them.

Waiting holds no database connection: a wait that held the request's snapshot (as `waitFor` used to, being a field
resolved after `projection` had read) while reading positions from the same pool let 21 concurrent waits take all
20 request connections, stalling every client. The wait itself (app/live.py) reads the positions table once, then
sleeps until the consumer's position message for the partition arrives (Redis pub/sub, published after each commit)
or the timeout passes, with one last read at the deadline in case a message was lost; those reads go through a small
pool of their own (app/side_pool.py), shared by the waits that read at the same moment (app/reads/positions.py).
There is no polling loop against the database. At most RAS_CONSISTENCY_MAX_WAITERS waits are pending in a process;
one more is refused with LIMIT_EXCEEDED at once.

An event id cannot be awaited: the consumer does not record event ids (duplicates are recognised by content, and
the outbox relay renews ids on every re-send), so there is nothing to look an id up in.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import Gauge
from sqlalchemy.ext.asyncio import AsyncEngine

from app.errors import ApiError, BadUserInput, LimitExceeded
from app.live import EventHub
from app.reads.positions import PositionReads

DEFAULT_TIMEOUT_MS = 5_000

WAITING = Gauge("ras_consistency_waits", "Read-your-writes waits pending in this API process.")

WaitKey = tuple[str, int, int, int | None]
"""A wait's arguments as the caller gave them: topic, partition, offset, timeoutMs (None: the default)."""
Waited = dict[WaitKey, bool | ApiError]
"""What each `Projection.waitFor` of an operation found, waited for before execution: reached or not, or why the
wait was refused."""


class Consistency:
    """Waits for stored positions, at most `max_waiters` at a time in this process. Without a hub (live updates
    disabled) it can only look once. `positions` is the small pool the positions are read through
    (app/side_pool.py), not the request pool."""

    def __init__(
        self, hub: EventHub | None, positions: Callable[[], AsyncEngine], max_wait_ms: int, max_waiters: int
    ) -> None:
        self.hub = hub
        self.max_wait_ms = max_wait_ms
        self.max_waiters = max_waiters
        self._reads = PositionReads(positions)
        self.pending = 0

    def timeout_seconds(self, timeout_ms: int | None) -> float:
        ms = DEFAULT_TIMEOUT_MS if timeout_ms is None else timeout_ms
        if ms < 0:
            raise BadUserInput("timeoutMs must not be negative.")
        if ms > self.max_wait_ms:
            raise LimitExceeded(
                f"timeoutMs {ms} exceeds the limit of {self.max_wait_ms} ms (RAS_CONSISTENCY_MAX_WAIT_MS).",
                limit=self.max_wait_ms,
            )
        return min(ms, self.max_wait_ms) / 1000

    async def reached(self, topic: str, partition: int, offset: int, timeout_ms: int | None) -> bool:
        """Whether the record at `offset` of `topic`/`partition` is applied, waiting up to `timeout_ms`.

        Call it before the request's snapshot opens: it holds no request connection, and the caller's reads must
        come after it. A wait beyond the process's `max_waiters` is refused (LIMIT_EXCEEDED) rather than queued."""
        if offset < 0 or partition < 0:
            raise BadUserInput("partition and offset must not be negative.")
        timeout = self.timeout_seconds(timeout_ms)
        key = (topic, partition)
        known = self.hub.known_position(key) if self.hub is not None else None
        if known is not None and known > offset:
            return True  # already known applied: no wait, no read
        if self.pending >= self.max_waiters:
            raise LimitExceeded(
                f"This server already has {self.max_waiters} read-your-writes waits pending, its limit "
                "(RAS_CONSISTENCY_MAX_WAITERS); retry shortly.",
                limit=self.max_waiters,
            )
        self.pending += 1
        WAITING.inc()
        try:
            if self.hub is None:
                position = await self._reads.position(key)
                return position is not None and position > offset
            return await self.hub.wait_for_position(key, offset + 1, timeout, lambda: self._reads.position(key))
        finally:
            self.pending -= 1
            WAITING.dec()
