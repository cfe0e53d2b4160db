"""One database snapshot per request: every loader of a request reads the same committed state.

The consumer commits while requests run. Reading a batch page, its total and its essays on separate connections
could mix two states (a total that disagrees with the edges); one REPEATABLE READ, read-only transaction makes the
whole response consistent. Its connection is taken from the pool only when the first loader needs it, and loaders
take turns on it (a connection runs one statement at a time).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

T = TypeVar("T")


class ReadSession:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._conn: AsyncConnection | None = None
        self._lock = asyncio.Lock()

    async def run(self, read: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        """Run `read` on the request's connection, opening it (and its snapshot) on first use."""
        async with self._lock:
            if self._conn is None:
                conn = await self._engine.connect()
                try:
                    await conn.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
                    await conn.begin()
                except BaseException:
                    await conn.close()
                    raise
                self._conn = conn
            return await read(self._conn)

    async def close(self) -> None:
        """End the snapshot and return the connection to the pool. Safe to call when nothing was read."""
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                await conn.rollback()
            finally:
                await conn.close()
