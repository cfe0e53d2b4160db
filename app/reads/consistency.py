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
  in time, false otherwise; a probe, for callers that then query (or poll a REST route) themselves. The other fields
  of *that* request may have been read before the wait ended.

The wait itself (app/live.py) reads the positions table once, then sleeps until the consumer's position message
for the partition arrives (Redis pub/sub, published after each commit) or the timeout passes, with one last read at
the deadline in case a message was lost. There is no polling loop against the database.

An event id cannot be awaited: the consumer does not record event ids (duplicates are recognised by content, and
the outbox relay renews ids on every re-send), so there is nothing to look an id up in.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from app.errors import BadUserInput, LimitExceeded
from app.live import EventHub
from db.positions import load_positions

DEFAULT_TIMEOUT_MS = 5_000


@dataclass(frozen=True)
class Consistency:
    """Waits for stored positions. Without a hub (live updates disabled) it can only look once."""

    hub: EventHub | None
    engine: Callable[[], AsyncEngine]
    max_wait_ms: int

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
        """Whether the record at `offset` of `topic`/`partition` is applied, waiting up to `timeout_ms`."""
        if offset < 0 or partition < 0:
            raise BadUserInput("partition and offset must not be negative.")
        timeout = self.timeout_seconds(timeout_ms)

        async def stored() -> int | None:
            # Its own short connection, outside the request's snapshot: that must open only after the wait.
            async with self.engine().connect() as conn:
                return (await load_positions(conn, [(topic, partition)])).get((topic, partition))

        if self.hub is None:
            position = await stored()
            return position is not None and position > offset
        return await self.hub.wait_for_position((topic, partition), offset + 1, timeout, stored)
