"""Deadlines that count only the time this process's event loop was free to notice an answer.

A plain asyncio timeout also runs down while the loop is busy with other work (large answers being written, a burst
of executions) or while the process is not scheduled at all. A reply that reached the socket in time then looks late,
because nothing ran the code that would have read it. Blaming the other side for that (app/cache.py opens its breaker
on a Redis timeout) turns a busy process into an outage of its dependency, and the outage's fallback makes the
process busier still.

`LoopLag` measures the loop's lateness with a heartbeat: a callback due every `interval` seconds that runs d seconds
late shows the loop (or the whole process) was held up for d. The heartbeat runs only while a deadline is open.
`LoopLag.deadline(budget, limit)` is an async context manager like `asyncio.timeout`. It raises TimeoutError once
the loop has been on time for `budget` seconds of the wait: the other side had its whole budget and did not answer
(`other_side_slow`). Or once `limit` seconds have passed in all, however late the loop was: the wait was cut
short for our own sake, and the other side is not to blame.

A heartbeat up to `interval / 2` late counts as on time (timers always run a little late), and a later one still
counts `interval` and a half as time on time. So under a loop whose every turn takes longer than that, a deadline
lasts `budget / (1.5 * interval)` turns. An answer that needs several turns to be read (a large one
comes in chunks) is then not cut off by the loop's own slowness.
"""

from __future__ import annotations

import asyncio
from types import TracebackType


class LoopLag:
    """The running loop's lateness, summed over the heartbeats since the first deadline opened."""

    def __init__(self, interval: float) -> None:
        self._interval = interval
        self._late = 0.0
        self._due = 0.0
        self._open = 0
        self._heartbeat: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def deadline(self, budget: float, limit: float) -> Deadline:
        return Deadline(self, budget, limit)

    def lateness(self) -> float:
        """Seconds the loop has been late so far, including a heartbeat overdue now (compare two readings)."""
        if self._heartbeat is None:
            return self._late
        return self._late + self._beyond_slack(asyncio.get_running_loop().time())

    def _beyond_slack(self, now: float) -> float:
        # Timers always run a little late (the poll's granularity, a busy machine); that much is not lag.
        return max(0.0, now - self._due - self._interval / 2)

    def hold(self) -> float:
        """Keep the heartbeat going until `release()`; returns `lateness()`."""
        self._open += 1
        loop = asyncio.get_running_loop()
        if self._heartbeat is None or self._loop is not loop:  # not beating, or on a loop that has ended
            self._loop = loop
            self._due = loop.time() + self._interval
            self._heartbeat = loop.call_at(self._due, self._beat)
        return self.lateness()

    def release(self) -> None:
        self._open -= 1

    def _beat(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        self._late += self._beyond_slack(now)
        if self._open:
            self._due = now + self._interval
            self._heartbeat = loop.call_at(self._due, self._beat)
        else:
            self._heartbeat = None


class Deadline:
    """`async with lag.deadline(budget, limit) as d:` see the module's docstring. After a TimeoutError,
    `d.other_side_slow` says which of the two bounds ended the wait."""

    __slots__ = ("_budget", "_check", "_lag", "_limit", "_mark", "_started", "_window", "other_side_slow")

    def __init__(self, lag: LoopLag, budget: float, limit: float) -> None:
        self._lag = lag
        self._budget = budget
        self._limit = limit
        self._window = asyncio.timeout(None)
        self._check: asyncio.TimerHandle | None = None
        self._started = 0.0
        self._mark = 0.0
        self.other_side_slow = False

    def on_time(self) -> float:
        """Seconds of the wait so far during which the loop was on time."""
        waited = asyncio.get_running_loop().time() - self._started
        return waited - (self._lag.lateness() - self._mark)

    async def __aenter__(self) -> Deadline:
        loop = asyncio.get_running_loop()
        await self._window.__aenter__()
        self._started = loop.time()
        self._mark = self._lag.hold()
        self._check = loop.call_at(self._started + self._budget, self._expire_when_due)
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> bool | None:
        if self._check is not None:
            self._check.cancel()
        if error is not None and not self.other_side_slow:
            # Any other timeout on the way (the client's own socket timeouts) is judged by the same rule.
            self.other_side_slow = self.on_time() >= self._budget
        self._lag.release()
        await self._window.__aexit__(kind, error, trace)
        return None

    def _expire_when_due(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        on_time = self.on_time()
        if on_time >= self._budget:
            self.other_side_slow = True
        elif now - self._started < self._limit:
            remaining = min(self._budget - on_time, self._started + self._limit - now)
            self._check = loop.call_at(now + remaining, self._expire_when_due)
            return
        self._check = None
        self._window.reschedule(now)  # cancels the waiting task on the loop's next turn, as asyncio.timeout does
