"""Per-test databases, made ready one test ahead.

Every test that touches PostgreSQL gets a fresh copy of the migrated template. Creating it (`CREATE DATABASE …
TEMPLATE`) and dropping it afterwards are PostgreSQL's work, for which a test used to wait: over the suite, most of
the setup time. Here a worker thread creates the next test's database while the current test runs, and drops the
finished one in the background, so on two cores that work overlaps with the tests instead of adding to them.

One worker thread, so creations and drops reach the server one at a time (as before), and a test never gets a
database another test had: every name is new. A failure to create is raised in the test that takes the database;
a failed drop is raised when the session closes the pool.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor

from tests.helpers import servers


class DatabasePool:
    def __init__(self, server_url: str, template: str, ahead: int = 3) -> None:
        self._server_url = server_url
        self._template = template
        self._ahead = ahead
        self._worker = ThreadPoolExecutor(max_workers=ahead, thread_name_prefix="test-databases")
        self._ready: deque[Future[str]] = deque()
        self._drops: list[Future[None]] = []

    def take(self) -> str:
        """The URL of a fresh copy of the template, for one test; give it back with `release`."""
        while len(self._ready) <= self._ahead:
            self._ready.append(self._worker.submit(self._create))
        return self._ready.popleft().result()

    def release(self, url: str) -> None:
        name = url.rpartition("/")[2]
        self._drops.append(self._worker.submit(asyncio.run, servers.drop_database(self._server_url, name)))

    def close(self) -> None:
        """Drop what is prepared and wait for every drop; the first drop that failed is raised."""
        for ready in self._ready:
            self.release(ready.result())
        self._ready.clear()
        self._worker.shutdown(wait=True)
        for drop in self._drops:
            drop.result()

    def _create(self) -> str:
        name = f"ras_t_{uuid.uuid4().hex[:12]}"
        return asyncio.run(servers.create_database(self._server_url, name, template=self._template))
