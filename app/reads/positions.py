"""Reads of the consumer's stored positions for read-your-writes waits, shared between the waits that ask together.

A wait reads the positions table when it starts, after a resync and at its deadline (app/live.py). A hundred waits
starting at once must not mean a hundred statements queued on the small pool they read through
(app/side_pool.py): every wait that asks while no read has started joins the next one, which reads all of their
partitions in one statement. A wait that asks while a read is running joins the read after it, since the running
one may have looked before the wait's record was applied. So reads run one at a time, each answering every wait
that was queued before it started.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncEngine

from db.positions import load_positions

Partition = tuple[str, int]


@dataclass(eq=False)
class _Read:
    partitions: set[Partition] = field(default_factory=set)
    result: asyncio.Future[dict[Partition, int]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class PositionReads:
    def __init__(self, engine: Callable[[], AsyncEngine]) -> None:
        self._engine = engine
        self._next: _Read | None = None  # the read that waits asking now will get
        self._one_at_a_time = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()

    async def position(self, partition: Partition) -> int | None:
        """The stored next offset of `partition` (None: the consumer has stored none), read after this call began."""
        read = self._next
        if read is None:
            read = self._next = _Read()
            task = asyncio.create_task(self._run(read), name="position-read")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        read.partitions.add(partition)
        # Shielded: a wait that is cancelled (its client left) does not cancel the read the others share.
        positions = await asyncio.shield(read.result)
        return positions.get(partition)

    async def _run(self, read: _Read) -> None:
        try:
            async with self._one_at_a_time:
                if self._next is read:
                    self._next = None  # from here on, callers join the next read: this one may look too early for them
                async with self._engine().connect() as conn:
                    read.result.set_result(await load_positions(conn, read.partitions))
        except Exception as exc:
            read.result.set_exception(exc)
            read.result.exception()  # retrieved here: every waiter may have left, and asyncio would complain
        finally:
            if not read.result.done():  # cancelled (the app is stopping): its waiters end too
                read.result.cancel()
                if self._next is read:
                    self._next = None
