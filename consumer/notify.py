"""Telling the API processes, after each commit, what the transaction changed: the source of live updates.

The consumer publishes on Redis pub/sub (channel names in infra/cache_keys.py), once per committed transaction and
in one round trip: a message per changed batch (`{P}:events:batch:{id}`), per owner of a changed batch
(`{P}:events:user:{id}`), and the committed positions (`{P}:events:positions`). Every API process listens
(app/live.py) and wakes the subscriptions and read-your-writes waits concerned, which then re-read the database:
a message says only *that* something changed, never what, so a lost or duplicated message cannot make an answer
wrong, only late or repeated.

Runs after the eviction (see `chain`): a client that is pushed an update and then queries must not be answered
from a cache entry the eviction has not deleted yet.

Fail-open like the evictor: if Redis is down the consumer logs it once and keeps projecting; for a second after a
failure nothing is sent at all, so an outage costs one timeout per second, not one per transaction. Messages lost
meanwhile are made up for by a *resync* message once Redis answers again: every subscription re-reads. The same
happens at start-up, because a crash between a commit and its publication loses that publication.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import orjson
import structlog
from prometheus_client import Counter
from redis.asyncio import RedisCluster
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from consumer.apply import Applied, OnApplied
from infra import cache_keys as ck
from infra.settings import Settings

log = structlog.get_logger(__name__)

PUBLISHED = Counter(
    "ras_live_published_total",
    "Live-update messages the consumer published, by kind: batch, user, positions.",
    ["kind"],
)
PUBLISH_ERRORS = Counter("ras_live_publish_errors_total", "Publications lost because Redis was unavailable.")


_PUBLISH_ALL = """
for i = 1, #ARGV, 2 do redis.call('PUBLISH', ARGV[i], ARGV[i + 1]) end
"""
"""KEYS: a key of the cache's slot (routing only). ARGV: channel, body, channel, body, …"""


def chain(*steps: OnApplied | None) -> OnApplied | None:
    """One `on_applied` running `steps` in order (None steps left out); None when there is nothing to run."""
    present = [step for step in steps if step is not None]
    if not present:
        return None
    if len(present) == 1:
        return present[0]

    async def run(applied: Applied) -> None:
        for step in present:
            await step(applied)

    return run


def positions_message(positions: Sequence[tuple[str, int, int]], resync: bool = False) -> bytes:
    """The body on the positions channel: committed (topic, partition, next offset) triples, and `resync` when
    subscribers must re-read because messages may have been lost."""
    body: dict[str, object] = {"at": _now_ms(), "positions": [list(p) for p in positions]}
    if resync:
        body["resync"] = True
    return orjson.dumps(body)


def _now_ms() -> int:
    return int(time.time() * 1000)


class Publisher:
    def __init__(
        self, redis: ck.Client, settings: Settings, engine: AsyncEngine, *, retry_interval: float = 1.0
    ) -> None:
        self._redis = redis
        self._engine = engine
        self._layout = ck.CacheLayout(settings.cache_prefix)
        # One pipeline holds a message per changed batch and user: allow it more than a single command's timeout.
        self._deadline = settings.redis_timeout_seconds * 4 + 0.05
        self._retry_interval = retry_interval
        self._retry_at = 0.0
        self._missed = False
        self._healthy = True
        self._cluster_publish = redis.register_script(_PUBLISH_ALL)

    @classmethod
    def from_settings(cls, settings: Settings, engine: AsyncEngine) -> Publisher:
        return cls(ck.connect(settings), settings, engine)

    async def publish(self, applied: Applied) -> None:
        """Announce one committed transaction; never raises (the projection goes on regardless)."""
        if not (applied.batch_ids or applied.user_ids or applied.positions):
            return
        if self._missed and time.monotonic() < self._retry_at:
            return  # Redis failed a moment ago: don't wait on it again; the resync after recovery covers this
        resync = self._missed
        positions = applied.positions
        at = orjson.dumps({"at": _now_ms()})
        messages = [(self._layout.batch_channel(b), at) for b in sorted(applied.batch_ids)]
        messages += [(self._layout.user_channel(u), at) for u in sorted(applied.user_ids)]
        messages.append((self._layout.positions_channel, positions_message(positions, resync)))
        if await self._send(messages):
            PUBLISHED.labels("batch").inc(len(applied.batch_ids))
            PUBLISHED.labels("user").inc(len(applied.user_ids))
            PUBLISHED.labels("positions").inc()

    async def resync(self) -> None:
        """Ask every subscription to re-read: at start-up (a crash may have lost publications) and after a rebuild."""
        await self._send([(self._layout.positions_channel, positions_message(await self._positions(), True))])

    async def aclose(self) -> None:
        await self._redis.aclose()

    async def _positions(self) -> list[tuple[str, int, int]]:
        # Every position committed so far, by any consumer: a resync tells the whole state.
        try:
            async with self._engine.connect() as conn:
                rows = await conn.execute(text("SELECT topic, partition, next_offset FROM consumer_positions"))
                return [(r.topic, r.partition, r.next_offset) for r in rows]
        except Exception as exc:  # the message is still worth sending without them
            log.warning("could not read positions for the live-update message", error=repr(exc)[:200])
            return []

    async def _publish(self, messages: Sequence[tuple[str, bytes]]) -> None:
        """Every message in one round trip, in order. A cluster refuses PUBLISH in a pipeline (redis-py), so there a
        script publishes them; its one key (never touched) routes it to the node of the cache's slot, and the
        cluster forwards each message to every node."""
        if isinstance(self._redis, RedisCluster):
            await ck.discovered(self._redis)
            await self._cluster_publish(keys=[self._layout.events_prefix], args=[v for m in messages for v in m])
            return
        pipe = self._redis.pipeline(transaction=False)
        for channel, body in messages:
            pipe.publish(channel, body)
        await pipe.execute()

    async def _send(self, messages: Sequence[tuple[str, bytes]]) -> bool:
        try:
            async with asyncio.timeout(self._deadline):
                await self._publish(messages)
        except ck.FAILURES as exc:
            PUBLISH_ERRORS.inc()
            self._missed = True
            self._retry_at = time.monotonic() + self._retry_interval
            if self._healthy:
                self._healthy = False
                log.warning(
                    "redis unavailable, live updates not published; subscribers resync once it is back",
                    error=repr(exc)[:200],
                )
            return False
        if not self._healthy:
            self._healthy = True
            log.info("redis reachable again, live updates resumed")
        # Whenever messages were missed, the next call sent carries `resync` (see `publish`), so this success made
        # up for them.
        self._missed = False
        return True
