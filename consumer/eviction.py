"""Evicting cached results after each committed transaction: the consumer's half of the argument in app/cache.py.

One script per transaction: INCR the global counter to n, and for every changed tag set seq[tag] = n, delete the
entries indexed under it and the index. `Evictor.evict` is the runner's `on_applied`, so it runs after the commit.

An eviction that could not be delivered (Redis down or slow) leaves entries that may be stale and cannot be found
later (the index may be gone too, the tags are not remembered). Instead the cache epoch changes as soon as Redis
answers again: every entry stored before that is never read again, and a reader that took its snapshot before it
cannot store. Until then a "bump pending" flag is kept; a background task retries every `retry_interval` seconds and
the next eviction carries the bump in its own script. The epoch also changes at start-up, because a crash between a
commit and its eviction loses that eviction the same way, and whenever a rebalance brings this member partitions
it did not hold (`ConsumerLoop`'s `on_gained`): their last owner may have died in that same gap.

Redis may also answer and refuse: with `maxmemory` and `noeviction` a full Redis refuses the script's first write
(INCR, SET) with an OOM error, so neither the eviction nor a bump can run, while readers' MGETs still find the entries
it should have deleted. Then the epoch key is deleted instead: DEL never needs memory, so a full Redis accepts it. A
missing epoch is what every reader's hit checks (the MGET fetches it beside the entry), so from then on no entry
stored before is served; a reader's lookup script must create a fresh epoch, which is refused too while Redis is full,
so readers go without the cache until it has room again. A deleted epoch is an epoch change like any other.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Set

import structlog
from redis.exceptions import ResponseError

from consumer.apply import Applied
from infra import cache_keys as ck
from infra.settings import Settings

log = structlog.get_logger(__name__)

_EVICT = """
local bumped = 0
if ARGV[2] == '1' or not redis.call('GET', KEYS[1]) or not redis.call('GET', KEYS[2]) then
  redis.call('SET', KEYS[1], ARGV[1])
  bumped = 1
end
local n = redis.call('INCR', KEYS[2])
local ntags = tonumber(ARGV[5])
local lsn = tonumber(ARGV[4])
if lsn then
  local now = tonumber(redis.call('TIME')[1])
  local w = redis.call('HMGET', KEYS[3], 'cur', 'at', 'floor')
  local cur, at, floor = tonumber(w[1]), tonumber(w[2]), w[3]
  if not cur then
    cur, at, floor = lsn, now, (bumped == 1) and lsn or tonumber(ARGV[7])
  elseif now - at >= tonumber(ARGV[6]) then
    floor, at = cur, now
  end
  floor = tonumber(floor)
  if bumped == 1 then floor = math.max(floor, lsn) end
  redis.call('HSET', KEYS[3], 'cur', string.format('%.0f', math.max(cur, lsn)), 'at', at,
    'floor', string.format('%.0f', floor))
  for i = 1, ntags do
    local key = KEYS[3 + 2 * ntags + i]
    local old = tonumber(redis.call('GET', key))
    redis.call('SET', key, string.format('%.0f', math.max(old or 0, lsn)), 'EX', ARGV[3])
  end
else
  redis.call('DEL', KEYS[3])
end
local deleted = 0
for i = 4, 3 + 2 * ntags, 2 do
  local members = redis.call('SMEMBERS', KEYS[i])
  for j = 1, #members, 1000 do
    deleted = deleted + redis.call('DEL', unpack(members, j, math.min(j + 999, #members)))
  end
  redis.call('DEL', KEYS[i])
  redis.call('SET', KEYS[i + 1], n, 'EX', ARGV[3])
end
return {n, deleted, bumped}
"""
"""KEYS: epoch, counter, WAL watermark, (index, seq) per tag, then the tags' WAL positions when a position is given.
ARGV: fresh epoch, '1' to change the epoch, seq TTL, the primary's WAL position after the commit ('' when unknown),
number of tags, the watermark's window, the floor of a new watermark.

A missing epoch or counter means Redis lost its state (restart): the epoch changes then too, see app/cache.py.
The WAL position feeds the replica guard (docs/replicas.md): each tag keeps the highest position it was evicted at,
the watermark the highest of all (`cur`) and a `floor` every eviction older than the window is at or below; an epoch
change raises the floor to its position at once (it stands for evictions whose tags are unknown). Without a
position the watermark is deleted, and no replica's answer is stored until one is recorded again.
Returns the new counter, the number of entries deleted and whether the epoch changed."""


class Evictor:
    """`wal_position`, when the API reads replicas (RAS_DATABASE_READ_URLS): the primary's current WAL position,
    read after each commit for the replica guard; an eviction that cannot read it deletes the watermark instead."""

    def __init__(
        self,
        redis: ck.Client,
        settings: Settings,
        *,
        retry_interval: float = 1.0,
        wal_position: Callable[[], Awaitable[int]] | None = None,
    ) -> None:
        self._redis = redis
        self._wal_position = wal_position
        self._layout = ck.CacheLayout(settings.cache_prefix)
        self._deadline = settings.redis_timeout_seconds * 2 + 0.05
        self._retry_interval = retry_interval
        self._script = redis.register_script(_EVICT)
        self._pending = False
        # Evictions not delivered so far. A bump clears `pending` only if none was missed after the bump was sent.
        self._missed = 0
        self._retry_at = 0.0
        self._last_counter = 0
        self._healthy = True
        self._refusing = False
        self._retrier: asyncio.Task[None] | None = None
        ck.REDIS_UP.labels("consumer").set(1)
        ck.BUMP_PENDING.set(0)
        ck.WRITES_REFUSED.set(0)

    @classmethod
    def from_settings(cls, settings: Settings, wal_position: Callable[[], Awaitable[int]] | None = None) -> Evictor:
        return cls(ck.connect(settings), settings, wal_position=wal_position)

    @property
    def bump_pending(self) -> bool:
        return self._pending

    async def evict(self, applied: Applied) -> None:
        """Evict every tag `applied` changed, in one round trip; never raises (the projection goes on regardless)."""
        tags = ck.changed_tags(applied.batch_ids, applied.user_ids)
        if not tags:
            return
        if self._pending and time.monotonic() < self._retry_at:
            # Redis failed a moment ago: don't wait for it again. The pending epoch change covers this eviction.
            self._missed += 1
            return
        await self._call(tags, bump=self._pending, op="evict")

    async def bump_epoch(self) -> None:
        """Change the cache epoch so no entry stored so far is read again (start-up, missed evictions)."""
        await self._call(frozenset(), bump=True, op="bump")

    async def aclose(self) -> None:
        if self._retrier is not None:
            self._retrier.cancel()
            await asyncio.gather(self._retrier, return_exceptions=True)
        await self._redis.aclose()

    async def _call(self, tags: Set[str], *, bump: bool, op: str) -> None:
        missed = self._missed
        position = await self._position()
        keys = [self._layout.epoch, self._layout.counter, self._layout.watermark, *self._layout.tag_keys(tags)]
        if position:
            keys += self._layout.lsn_keys(tags)
        args = [ck.new_epoch(), "1" if bump else "0", ck.SEQ_TTL_SECONDS, position, len(tags)]
        try:
            async with asyncio.timeout(self._deadline):
                counter, deleted, bumped = await self._script(
                    keys=keys, args=[*args, ck.LSN_WINDOW_SECONDS, ck.NO_FLOOR]
                )
        except ResponseError as exc:
            # Redis answered but refused the script (a full Redis under noeviction, a read-only replica).
            await self._drop_epoch(op, exc, missed)
            return
        except ck.FAILURES as exc:
            self._failed(op, exc)
            return
        self._succeeded()
        if self._refusing:
            self._refusing = False
            ck.WRITES_REFUSED.set(0)
            log.info("redis accepts the cache's writes again")
        _count(tags, int(deleted))
        went_back = int(counter) <= self._last_counter
        self._last_counter = int(counter)
        if bumped:
            self._bumped(missed)
        elif went_back:
            # Only a Redis restored from disk makes the counter go back; its entries may predate evictions.
            log.warning("cache counter went backwards, changing the epoch", counter=int(counter))
            await self.bump_epoch()

    async def _position(self) -> str:
        """The primary's WAL position now (past this member's latest commit) as the script's argument; '' when
        replicas are not read or it could not be read (the script then deletes the watermark)."""
        if self._wal_position is None:
            return ""
        try:
            async with asyncio.timeout(self._deadline):
                return str(await self._wal_position())
        except Exception as exc:  # the database, not Redis: the eviction itself still runs
            log.warning("WAL position unreadable; replica answers are not cached until one is", error=repr(exc)[:200])
            return ""

    async def _drop_epoch(self, op: str, refusal: ResponseError, missed_before: int) -> None:
        """Delete the epoch key, which needs no memory, when Redis refused the eviction or bump script; and the WAL
        watermark with it, which the refused script could not raise (no replica answer is stored until it is)."""
        try:
            async with asyncio.timeout(self._deadline):
                await self._redis.delete(self._layout.epoch, self._layout.watermark)
        except ck.FAILURES:
            self._failed(op, refusal)
            return
        ck.ERRORS.labels("consumer", op).inc()
        self._succeeded()
        if not self._refusing:
            self._refusing = True
            ck.WRITES_REFUSED.set(1)
            log.warning(
                "redis refuses the cache's writes; epoch deleted, readers go without the cache until it accepts them",
                op=op,
                error=repr(refusal)[:200],
            )
        self._bumped(missed_before)

    def _bumped(self, missed_before: int) -> None:
        ck.EPOCH_BUMPS.inc()
        if self._pending and self._missed == missed_before:
            self._pending = False
            ck.BUMP_PENDING.set(0)
            log.info("cache epoch changed, missed evictions made up for")

    def _failed(self, op: str, exc: BaseException) -> None:
        ck.ERRORS.labels("consumer", op).inc()
        self._missed += 1
        self._pending = True
        self._retry_at = time.monotonic() + self._retry_interval
        ck.BUMP_PENDING.set(1)
        if self._healthy:
            self._healthy = False
            ck.REDIS_UP.labels("consumer").set(0)
            log.warning(
                "redis unavailable, evictions not delivered; the cache epoch changes once it is back",
                op=op,
                error=repr(exc)[:200],
            )
        if self._retrier is None or self._retrier.done():
            self._retrier = asyncio.create_task(self._retry())

    def _succeeded(self) -> None:
        if not self._healthy:
            self._healthy = True
            ck.REDIS_UP.labels("consumer").set(1)
            log.info("redis reachable again")

    async def _retry(self) -> None:
        while self._pending:
            await asyncio.sleep(max(0.0, self._retry_at - time.monotonic()))
            if self._pending:
                await self.bump_epoch()


def _count(tags: Set[str], deleted: int) -> None:
    for tag in tags:
        ck.EVICTIONS.labels(ck.tag_kind(tag)).inc()
    ck.ENTRIES_EVICTED.inc(deleted)
