"""Read replicas (RAS_DATABASE_READ_URLS): which one a request's snapshot opens on, which are down, how far behind.

The consumer writes the primary; streaming replicas replay its WAL a little later. A request's snapshot opens on
the next replica in turn that is up (app/reads/session.py), and on the primary when none is: a replica whose
connection or first statement failed is left alone for RETRY_SECONDS, then one snapshot tries it again, so a dead
replica costs one failed connection per period rather than one per request. Reads are never retried elsewhere once
a snapshot has read something: a replica lost mid-request fails that request (retryable), not the primary's breaker.

A background task samples every replica each MONITOR_SECONDS: whether it answers, and how far behind the primary it
is, in bytes of WAL and in seconds of replay (the metrics below; /readyz lists each replica without depending on
it). What makes a replica's answer safe to cache, and what serves read-your-writes, is not this sample but the
replica's own replay position read before each snapshot (app/cache.py, docs/replicas.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Callable, Sequence

import structlog
from prometheus_client import Counter, Gauge
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from db.engine import create_engine
from db.replication import insert_lsn, replica_status
from infra.settings import DATABASE_POOL_OVERFLOW, Settings

log = structlog.get_logger(__name__)

RETRY_SECONDS = 5.0
MONITOR_SECONDS = 2.0
CONNECT_TIMEOUT_SECONDS = 5

UP = Gauge("ras_replica_up", "1 while the read replica answers (its latest connection or sample did).", ["replica"])
SNAPSHOTS = Counter("ras_replica_snapshots_total", "Request snapshots opened on each read replica.", ["replica"])
FALLBACKS = Counter(
    "ras_replica_fallbacks_total",
    "Request snapshots that read the primary although replicas are configured, by why: down (no replica answered), "
    "behind (none had applied a read-your-writes position the request waited for).",
    ["reason"],
)
LAG_BYTES = Gauge(
    "ras_replica_lag_bytes", "WAL the primary had written that the replica had not replayed, sampled.", ["replica"]
)
LAG_SECONDS = Gauge(
    "ras_replica_lag_seconds",
    "How long the replica has had received WAL left to replay (0 when it has replayed all it received), sampled.",
    ["replica"],
)


class Replica:
    def __init__(self, url: str, pool_size: int) -> None:
        parsed = make_url(url)
        self.name = f"{parsed.host}:{parsed.port or 5432}/{parsed.database}"
        self.engine = create_engine(
            url,
            pool_size=pool_size,
            max_overflow=DATABASE_POOL_OVERFLOW,
            pool_pre_ping=True,
            connect_args={"timeout": CONNECT_TIMEOUT_SECONDS},
        )
        self.up = True
        self._retry_at = 0.0
        UP.labels(self.name).set(1)

    def usable(self, now: float) -> bool:
        return self.up or now >= self._retry_at

    def failed(self, exc: BaseException) -> None:
        self._retry_at = time.monotonic() + RETRY_SECONDS
        if self.up:
            self.up = False
            UP.labels(self.name).set(0)
            log.warning("read replica unavailable, reading the primary", replica=self.name, error=repr(exc)[:200])

    def succeeded(self) -> None:
        if not self.up:
            self.up = True
            UP.labels(self.name).set(1)
            log.info("read replica answers again", replica=self.name)


class Replicas:
    def __init__(self, urls: Sequence[str], pool_size: int) -> None:
        self.replicas = [Replica(url, pool_size) for url in urls]
        self._turn = itertools.cycle(range(len(self.replicas)))
        self._monitor: asyncio.Task[None] | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> Replicas | None:
        """The replicas of RAS_DATABASE_READ_URLS, each with a request pool as large as the primary's; None when
        there are none."""
        if not settings.database_read_urls:
            return None
        return cls(settings.database_read_urls, settings.database_pool_size)

    def candidates(self) -> list[Replica]:
        """The replicas a snapshot may try, in this turn's order: those up, and those down whose pause has passed."""
        start = next(self._turn)
        now = time.monotonic()
        ordered = self.replicas[start:] + self.replicas[:start]
        return [replica for replica in ordered if replica.usable(now)]

    def start(self, primary: Callable[[], AsyncEngine]) -> None:
        """Sample the replicas in the background; `primary` is the engine the primary's WAL position is read on."""
        self._monitor = asyncio.create_task(self._sample_forever(primary), name="replica-monitor")

    async def aclose(self) -> None:
        if self._monitor is not None:
            self._monitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._monitor
        for replica in self.replicas:
            await replica.engine.dispose()

    async def _sample_forever(self, primary: Callable[[], AsyncEngine]) -> None:
        while True:
            await self.sample(primary)
            await asyncio.sleep(MONITOR_SECONDS)

    async def sample(self, primary: Callable[[], AsyncEngine]) -> None:
        """One sample of every replica's state and lag."""
        written: int | None = None
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_SECONDS), primary().connect() as conn:
                written = await insert_lsn(conn)
        except Exception:  # the primary's own health is /readyz's business; the lag in bytes waits for it
            written = None
        for replica in self.replicas:
            try:
                async with asyncio.timeout(CONNECT_TIMEOUT_SECONDS), replica.engine.connect() as conn:
                    status = await replica_status(conn)
            except Exception as exc:
                replica.failed(exc)
                continue
            replica.succeeded()
            LAG_SECONDS.labels(replica.name).set(status.behind_seconds)
            if written is not None and status.replayed is not None:
                LAG_BYTES.labels(replica.name).set(max(0, written - status.replayed))
