"""A small database pool beside the request pool, for the API's own reads: readiness probes and read-your-writes
position reads.

Those reads used to take connections from the request pool, so they competed with the requests they serve: 200
clients looping on /readyz kept the pool busy until readiness itself timed out (a load balancer would have ejected a
healthy instance), and 21 `projection { waitFor }` calls held all 20 request connections. A pool of their own, with
no overflow, bounds what they can take from the database and leaves the request pool to requests.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy.ext.asyncio import AsyncEngine

from db.engine import create_engine

# A connection that cannot be made in this time counts as a failed read (readiness reports the database down).
CONNECT_TIMEOUT_SECONDS = 5


class SidePool:
    """An engine of `size` connections to the database the request engine reads, made on first use (the request
    engine may only exist once the app's lifespan has started); `dispose` closes it."""

    def __init__(self, requests: Callable[[], AsyncEngine], size: int) -> None:
        self._requests = requests
        self._size = size
        self._engine: AsyncEngine | None = None

    def __call__(self) -> AsyncEngine:
        if self._engine is None:
            self._engine = create_engine(
                self._requests().url.render_as_string(hide_password=False),
                pool_size=self._size,
                max_overflow=0,
                pool_pre_ping=True,  # a connection the database dropped (a restart) is replaced, not reported as down
                connect_args={"timeout": CONNECT_TIMEOUT_SECONDS},
            )
        return self._engine

    async def dispose(self) -> None:
        engine, self._engine = self._engine, None
        if engine is not None:
            await engine.dispose()
