"""An app served by uvicorn in the test's loop, on a real local port: for what only a real HTTP server shows
(connections kept alive or dropped, what a client outside this process sees)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator

import uvicorn
from starlette.types import ASGIApp

from devstack.process import free_port

# Guards against a hang only: a server that never starts fails the test instead of stalling the suite.
_START_GUARD_SECONDS = 30


class _Server(uvicorn.Server):
    """uvicorn as a task of the test's loop; signals stay pytest's."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@contextlib.asynccontextmanager
async def served(app: ASGIApp) -> AsyncIterator[str]:
    """`app` on a free local port until the block ends; yields its base URL."""
    port = free_port()
    server = _Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(_START_GUARD_SECONDS):
            while not server.started:
                assert not task.done(), "the server did not start"
                await asyncio.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, _START_GUARD_SECONDS)
