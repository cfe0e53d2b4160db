"""A uvicorn server run as one task among others in a process that handles its own signals."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import uvicorn


class TaskServer(uvicorn.Server):
    """uvicorn without its signal capture: the host process (consumer, `ras dev`) decides when to stop it, by
    setting `should_exit` after finishing its own work."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield
