"""Deadlines that count only the time this process sat waiting, free to notice an answer.

A plain asyncio timeout also runs down while the loop is busy with other work (large answers being read and written,
a burst of executions) or while the process is not scheduled at all. A reply that reached the socket in time then
looks late, because nothing ran the code that would have read it. Blaming the other side for that (app/cache.py opens
its breaker on a Redis timeout) turns a busy process into an outage of its dependency, and the outage's fallback
makes the process busier still.

A `Deadline` counts towards its budget only the time the loop was neither held up nor busy:

- held up: `LoopLag` runs a heartbeat while a deadline is open. A callback due every `interval` seconds that runs
  d seconds late shows the loop (or the whole process) was held up for d: one long turn, a stall, a process that
  the machine did not schedule. Up to TIMER_SLACK_SECONDS late counts as on time (timers always run a little late).
- busy: the CPU time the loop's thread spent meanwhile (`time.thread_time`). Many short turns (32 large answers read
  a chunk at a time) keep every heartbeat on time and the loop fully busy.

`LoopLag.deadline(budget, limit)` is an async context manager like `asyncio.timeout`. It raises TimeoutError once
`budget` seconds of the wait were neither: the process sat waiting that long and the other side did not answer
(`other_side_slow`). A call awaited through `Deadline.watched` starts the budget again each time it is resumed
(bytes arrived): the budget then bounds the other side's silence, not the length of a large answer. Or it raises
TimeoutError once `limit` seconds have passed in all: the wait was cut short for our own sake, and the other side is
not to blame. When the other side really stops answering, the work waiting on it stops too, the loop
falls idle, and the budget runs out.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine, Generator
from types import TracebackType
from typing import Any, Generic, TypeVar, cast

T = TypeVar("T")

TIMER_SLACK_SECONDS = 0.002
"""How late a heartbeat may run and still count as on time: epoll rounds its timeout up to the millisecond, and a
woken process takes a moment to run."""


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
        # Timers always run a little late (the poll's granularity, waking up); that much is not lag.
        return max(0.0, now - self._due - min(self._interval / 2, TIMER_SLACK_SECONDS))

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

    __slots__ = (
        "_budget",
        "_check",
        "_cpu",
        "_lag",
        "_limit",
        "_mark",
        "_since",
        "_started",
        "_window",
        "other_side_slow",
    )

    def __init__(self, lag: LoopLag, budget: float, limit: float) -> None:
        self._lag = lag
        self._budget = budget
        self._limit = limit
        self._window = asyncio.timeout(None)
        self._check: asyncio.TimerHandle | None = None
        self._started = 0.0
        self._since = 0.0
        self._mark = 0.0
        self._cpu = 0.0
        self.other_side_slow = False

    def watched(self, call: Coroutine[Any, Any, T]) -> _Watched[T]:
        """`call`, each resumption of which is a sign of life that starts the budget again. Inside a Redis call the
        loop resumes it when the connection is made, the command written and bytes of the answer arrive: the budget
        then bounds the other side's silence, not the time a large answer takes to come in."""
        return _Watched(call, self._progressed)

    def _progressed(self) -> None:
        self._since = asyncio.get_running_loop().time()
        self._mark = self._lag.lateness()
        self._cpu = time.thread_time()

    def idle(self) -> float:
        """Seconds since the wait began or last made progress during which the loop was neither held up nor busy
        (the two overlap when one turn is long; counting both makes the deadline more patient, never quicker to
        blame)."""
        waited = asyncio.get_running_loop().time() - self._since
        return waited - (self._lag.lateness() - self._mark) - (time.thread_time() - self._cpu)

    async def __aenter__(self) -> Deadline:
        loop = asyncio.get_running_loop()
        await self._window.__aenter__()
        self._started = self._since = loop.time()
        self._mark = self._lag.hold()
        self._cpu = time.thread_time()
        self._check = loop.call_at(self._started + self._budget, self._expire_when_due)
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> bool | None:
        if self._check is not None:
            self._check.cancel()
        if error is not None and not self.other_side_slow:
            # Any other timeout on the way (the client's own socket timeouts) is judged by the same rule.
            self.other_side_slow = self.idle() >= self._budget
        self._lag.release()
        await self._window.__aexit__(kind, error, trace)
        return None

    def _expire_when_due(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        idle = self.idle()
        if idle >= self._budget:
            self.other_side_slow = True
        elif now - self._started < self._limit:
            remaining = min(self._budget - idle, self._started + self._limit - now)
            self._check = loop.call_at(now + remaining, self._expire_when_due)
            return
        self._check = None
        self._window.reschedule(now)  # cancels the waiting task on the loop's next turn, as asyncio.timeout does


class _Watched(Generic[T]):
    """Awaits a coroutine as `await` would, calling `resumed()` each time the loop resumes it with a result."""

    __slots__ = ("_call", "_resumed")

    def __init__(self, call: Coroutine[Any, Any, T], resumed: Callable[[], None]) -> None:
        self._call = call
        self._resumed = resumed

    def __await__(self) -> Generator[Any, Any, T]:
        call = self._call
        sent: Any = None
        thrown: BaseException | None = None
        while True:
            try:
                waiting = call.send(sent) if thrown is None else call.throw(thrown)
            except StopIteration as finished:
                return cast(T, finished.value)
            try:
                sent, thrown = (yield waiting), None
            except GeneratorExit:
                call.close()
                raise
            except BaseException as error:  # cancellation and the like go to the awaited call, as with `await`
                sent, thrown = None, error
            else:
                self._resumed()
