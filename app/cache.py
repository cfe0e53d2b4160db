"""Whole-result cache in Redis: a result is stored under a key of the request and indexed under the tags it read.

The consumer evicts tags after each commit (consumer/eviction.py); this module looks results up, runs the query on a
miss and stores what it got, unless a concurrent eviction may have made it stale. Layout: infra/cache_keys.py. An entry
holds the time it was stored, its body's digest (`body_digest`: REST's ETag, and the key of the memo of compressed
answers, app/compression.py) and the body.

Why no stale result is ever stored
----------------------------------
Every eviction INCRs a global counter G and, in the same script, sets seq[t] = the new value for each tag t it
evicts, deletes the entries indexed under t and the index itself. A miss takes a snapshot (epoch E, G0 = G) in the
same round trip as its lookup, before `execute` reads anything; the store script then refuses if the epoch changed or
any tag t of the result has seq[t] > G0, and otherwise writes the entry and indexes it under its tags, atomically.

Take a commit C that changed something the result read (so C's tags include one of the result's tags t) but that
the result's reads did not see. Then C committed after the reads began, hence after the snapshot, and C's eviction
runs after C, so its INCR returns n > G0. If the store runs after that eviction, it sees seq[t] >= n > G0 and skips;
if it runs before, the entry is already indexed under t (same atomic script) and the eviction deletes it. Either way
no entry missing C survives C's eviction.

The argument needs: reads happen after the snapshot (the request's database snapshot is opened lazily by the first
loader, inside `execute`); seq[t] outlives every execution that could be checked against it (SEQ_TTL_SECONDS vs
STORE_DEADLINE_SECONDS); and Redis loses keys only by TTL or by a restart that empties it. A restart loses G and the
epoch together; any script that finds either missing starts a fresh random epoch, so snapshots from before the
restart never store. Evictions the consumer could not deliver are made up for by an epoch change (consumer side);
when Redis answers but refuses the eviction's writes (full under noeviction), the consumer deletes the epoch key,
which needs no memory: a hit needs the epoch (below), and a lookup that finds none must write a new one, which the
full Redis refuses too, so readers execute without the cache until Redis has room again.

Answers read on a read replica (app/replicas.py) need one more step: a replica may not have replayed a commit whose
eviction ran before the lookup, so G0 alone would let its old answer be stored for good. Each eviction also records
the primary's WAL position L after the commit (per tag, `lsn[t] = max(lsn[t], L)`, and in a watermark whose floor
covers every eviction older than ck.LSN_WINDOW_SECONDS; an epoch change raises the floor to its own L), and a request
on a replica reads the replica's replay position R before its snapshot opens (`Executed.replayed`). The store
refuses unless R reaches the floor and every `lsn[t]` of the answer's tags. A commit the snapshot missed ended after
R (a standby's snapshot sees every commit replayed before it began), hence R < L, which one of those holds. The
whole argument and its assumptions: docs/cache.md, "Answers read on a replica".

Lookups: the script above reads the epoch and G and GETs the entry under that epoch, atomically. Returning the body
from Lua copies it twice inside Redis, so once a process knows the epoch it first tries one MGET of the entry under
that epoch and the epoch itself. MGET is one command, as atomic as the script: when the epoch it returns is the one
in the entry's key, the entry was read under the current epoch, exactly as the script would have read it. Anything
else (no entry, another epoch or none) runs the script, whose answer is used: a miss takes its snapshot there.
Ages are measured on Redis's clock, which the script reads (TIME); an MGET hit carries the script's latest reading
forward on the local monotonic clock, and the script runs again at least every CLOCK_REFRESH_SECONDS.

A result that read an id longer than `cache_max_id_chars`, or more than `cache_max_tags` batches and lists, is not
stored: every tag becomes (part of) a Redis key, and made-up ids would otherwise let a caller fill Redis cheaply.

Concurrent identical misses in one process share one execution, but only when the leader's store succeeded: that
check ran after every follower joined, so the shared result is as fresh as each follower's own execution would be.
Otherwise (stale, uncacheable, Redis error) each follower executes for itself.

Fail-open: a Redis failure makes the request execute normally without the cache, and a circuit breaker then skips
Redis for `pause_after_error` seconds (one trial call after that), so a dead Redis costs nothing per request. The
first call that reaches Redis again changes the epoch: the consumer may have lost evictions in the same outage, and
its own epoch change can come later. A Redis failure is an error reply, a broken connection, or Redis silent for
`redis_timeout_seconds`, counted only while this process's loop sat waiting, neither held up nor busy, and from the
call's latest sign of life (the command written, a chunk of the answer: infra/loop_lag.py). A busy loop is no
evidence about Redis or about the consumer's evictions (another process, its own connections), so a call this process
could not finish for its own reasons (every connection busy, the loop so late that the call was given up after
GIVE_UP_FACTOR timeouts in all) goes without the cache alone: no breaker, no epoch change. Otherwise a busy API would
switch its cache off and empty it, and the executions that follow would make it busier still. State changes are
logged once, not per request.

Traced (a tracer given), each lookup is a span, `cache lookup`, with whether it hit.

One module, on purpose (about 520 lines, a quarter of them this argument): the two scripts, the snapshot a miss takes,
the single flight and the breaker are the parts the argument above speaks of together, and a change to any of them
must be checked against it here. The request keys and `extensions.cache` helpers beside them are small.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Set
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar, cast

import orjson
import structlog
from graphql import GraphQLError, parse, print_ast
from opentelemetry.trace import Tracer
from redis.asyncio import RedisCluster
from redis.exceptions import MaxConnectionsError
from redis.exceptions import TimeoutError as RedisTimeoutError

from infra import cache_keys as ck
from infra.breaker import CircuitBreaker
from infra.loop_lag import LoopLag
from infra.settings import Settings

log = structlog.get_logger(__name__)
T = TypeVar("T")

Status = Literal["hit", "miss", "coalesced", "bypass"]

CLOCK_REFRESH_SECONDS = 5.0
"""How long a reading of Redis's clock is carried forward on the local monotonic clock before a lookup reads it again.
Ages are informational: the error is half a round trip plus the clocks' drift over this time."""

GIVE_UP_FACTOR = 100
"""A Redis call is abandoned after this many times `redis_timeout_seconds` in all, however late the loop was."""
LAG_SAMPLES_PER_TIMEOUT = 10
"""Heartbeats of the loop-lag measure per `redis_timeout_seconds` (infra/loop_lag.py) while a call waits."""

_TIMEOUTS = (TimeoutError, RedisTimeoutError)


def give_up_after(settings: Settings) -> float:
    return settings.redis_timeout_seconds * GIVE_UP_FACTOR


def client(settings: Settings) -> ck.Client:
    """The cache's Redis client: its own socket timeouts never end a call before the cache's deadline does."""
    return ck.connect(settings, timeout=give_up_after(settings) + settings.redis_timeout_seconds)


_LOOKUP = """
local epoch = redis.call('GET', KEYS[1])
local counter = redis.call('GET', KEYS[2])
if not epoch or not counter then
  epoch = ARGV[3]
  redis.call('SET', KEYS[1], epoch)
  redis.call('SETNX', KEYS[2], 0)
  counter = redis.call('GET', KEYS[2])
end
local entry = redis.call('GET', ARGV[1] .. epoch .. ':' .. ARGV[2])
local now = redis.call('TIME')
return {epoch, counter, entry, now[1] * 1000 + math.floor(now[2] / 1000)}
"""
"""KEYS: epoch, counter. ARGV: entry prefix, digest, fresh epoch. Returns the snapshot, the entry, Redis time (ms)."""

_STORE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 'epoch' end
local since = tonumber(ARGV[2])
local last = 2 + 2 * tonumber(ARGV[6])
for i = 3, last, 2 do
  local seq = redis.call('GET', KEYS[i + 1])
  if seq and tonumber(seq) > since then return 'stale' end
end
if ARGV[7] then
  local replayed = tonumber(ARGV[7])
  local w = redis.call('HMGET', KEYS[last + 1], 'cur', 'at', 'floor')
  if not w[1] then return 'behind' end
  local floor = tonumber(w[3])
  if tonumber(redis.call('TIME')[1]) - tonumber(w[2]) >= tonumber(ARGV[8]) then floor = tonumber(w[1]) end
  if replayed < floor then return 'behind' end
  for i = last + 2, #KEYS do
    local lsn = redis.call('GET', KEYS[i])
    if lsn and tonumber(lsn) > replayed then return 'behind' end
  end
end
local ttl = tonumber(ARGV[3])
local now = redis.call('TIME')
local stamp = string.format('%d', now[1] * 1000 + math.floor(now[2] / 1000))
redis.call('SET', KEYS[2], stamp .. ' ' .. ARGV[5] .. '\\n' .. ARGV[4], 'EX', ttl)
for i = 3, last, 2 do
  redis.call('SADD', KEYS[i], KEYS[2])
  if redis.call('TTL', KEYS[i]) < ttl then redis.call('EXPIRE', KEYS[i], ttl) end
end
return 'stored'
"""
"""KEYS: epoch, entry, (index, seq) per tag, then for an answer read on a replica the WAL watermark and each tag's
WAL position. ARGV: snapshot epoch, snapshot counter, ttl, body, body digest, number of tags, then for a replica's
answer the position it had replayed before its snapshot opened and the watermark's window.

An index never expires before an entry it lists (its TTL only grows), or an eviction could miss that entry. A
replica's answer is refused ('behind') unless the replica had replayed every eviction of its tags (docs/replicas.md)."""


@dataclass(frozen=True, slots=True)
class Executed:
    """What `execute` produced: the response body, the tags it read, and whether it may be stored at all.

    `cacheable` is False for results with errors and for reads no tag covers (e.g. projection positions).
    `replayed` must be given for every result read on a replica: without it the store could not be checked.
    """

    body: bytes
    tags: Set[str] = frozenset()
    cacheable: bool = True
    # How far the read replica it was read from had replayed before its snapshot opened (db/replication.py);
    # None: read from the primary.
    replayed: int | None = None


@dataclass(frozen=True, slots=True)
class Served:
    """An answer: its body, how it was served, its age (hits), and `digest`, the body's `body_digest`, when it is a
    stored entry's (a hit, a stored miss, a coalesced follower of one): what compressed forms are memoized by."""

    body: bytes
    status: Status
    age_seconds: float | None = None
    digest: str | None = None


@dataclass(frozen=True, slots=True)
class _Snapshot:
    epoch: str
    counter: int
    started: float


@dataclass(frozen=True, slots=True)
class _Known:
    """What the latest lookup script said: the epoch, and Redis's clock as an offset from the local monotonic one
    (milliseconds), trusted until `until` (local monotonic seconds)."""

    epoch: str
    offset_ms: float
    until: float
    epoch_bytes: bytes = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "epoch_bytes", self.epoch.encode())


@dataclass(frozen=True, slots=True)
class _Hit:
    body: bytes
    age_seconds: float
    digest: str


@dataclass(frozen=True, slots=True)
class _Stored:
    body: bytes
    digest: str


_DIGEST_CHARS = 32

_OUTCOMES = {b"stored": "stored", b"behind": "skipped_replica_behind"}
"""The store script's answers by their metric outcome; any other answer ('stale', 'epoch') is skipped_stale."""

_counted = functools.cache(ck.REQUESTS.labels)
"""The request counter's child for a result: `labels()` locks and builds a tuple on every call, and hits are hot."""

Flight = asyncio.Future[_Stored | None]
"""A leader's execution: resolves to what it stored if followers may use it, else None."""


class _Unavailable(Exception):
    """A Redis call failed or was skipped because the breaker is open: go on without the cache."""


# --- keys -------------------------------------------------------------------------------------------------------


def graphql_cache_key(
    query: str,
    operation_name: str | None,
    variables: Mapping[str, Any] | None,
    user_id: str | None,
    version: str = "",
) -> str | None:
    """The key of a GraphQL request, or None when it cannot be cached (unparsable document, odd variables).

    The document is parsed and printed again, so whitespace and comments do not matter; variables are compared as
    canonical JSON. The scope is the caller's X-User-ID (None: the service itself, which sees every batch); it is a
    JSON string or null, so no user id can collide with the unscoped view. X-Service-ID is not part of the key:
    every allowed service sees the same data. `version` should change whenever the same query could answer
    differently (schema or resolver changes), so instances of two releases never share entries.
    """
    try:
        document = _normalized(query) if len(query) <= _NORMALIZED_MAX_CHARS else print_ast(parse(query))
        return ck.digest(["graphql", version, document, operation_name or None, dict(variables or {}), user_id])
    except (GraphQLError, TypeError, ValueError):  # orjson.JSONEncodeError is a TypeError
        return None


# Callers send the same few documents over and over, and parsing and printing one cost three times as much as all
# the rest of a cache hit (bench R1: ~1,000 against ~5,000 hits/s for the batch screen). Bounded: at most 256
# documents of at most 20,000 characters (the default query length limit) are kept, a few MB at worst.
_NORMALIZED_MAX_CHARS = 20_000


@functools.lru_cache(maxsize=256)
def _normalized(query: str) -> str:
    return print_ast(parse(query))


def rest_cache_key(path: str, params: Iterable[tuple[str, str]], user_id: str | None, version: str = "") -> str:
    """The key of a REST GET: path, query parameters in sorted order (repeats kept), scope as for GraphQL."""
    return ck.digest(["rest", version, path, sorted(params), user_id])


def body_digest(body: bytes) -> str:
    """A body's content digest: 128 bits of its sha256, hex. Stored with each entry (computed once, at the store);
    REST's ETags and the memo of compressed answers (app/compression.py) use it."""
    return hashlib.sha256(body).hexdigest()[:32]


def cache_extension(served: Served) -> dict[str, object]:
    """The value of a GraphQL response's `extensions.cache`: `{"status": ..., "ageSeconds": ... or None}`."""
    age = None if served.age_seconds is None else round(served.age_seconds, 3)
    return {"status": served.status, "ageSeconds": age}


def with_cache_extension(body: bytes, served: Served) -> bytes:
    """A GraphQL JSON response body with `extensions.cache` added (bodies are stored without it)."""
    document = orjson.loads(body)
    if not isinstance(document, dict):
        return body
    document.setdefault("extensions", {})["cache"] = cache_extension(served)
    return orjson.dumps(document)


# --- the cache --------------------------------------------------------------------------------------------------


class QueryCache:
    """Look up, execute on a miss, store: `fetch(key, execute)`. One per process, shared by all requests."""

    def __init__(
        self, redis: ck.Client, settings: Settings, *, pause_after_error: float = 1.0, tracer: Tracer | None = None
    ) -> None:
        self._redis = redis
        self._tracer = tracer
        self._enabled = settings.cache_enabled
        self._layout = ck.CacheLayout(settings.cache_prefix)
        self._ttl = settings.cache_ttl_seconds
        # A tag is its kind's two-character prefix and an id (infra/cache_keys.py).
        self._max_tag_chars = settings.cache_max_id_chars + len(ck.BATCH_TAG)
        self._max_tags = settings.cache_max_tags
        # A call (connect and command) fails Redis once the loop sat waiting this long without an answer, and is
        # abandoned, failing nobody, after `_give_up_after` in all: a busy loop is not a slow Redis.
        self._timeout = settings.redis_timeout_seconds
        self._give_up_after = give_up_after(settings)
        self._lag = LoopLag(interval=self._timeout / LAG_SAMPLES_PER_TIMEOUT)
        # One failure opens it: a dead Redis then costs nothing per request, and one trial call per period probes it.
        self._breaker = CircuitBreaker(threshold=1, reset_after=pause_after_error)
        self._lookup_script = redis.register_script(_LOOKUP)
        self._store_script = redis.register_script(_STORE)
        self._flights: dict[str, Flight] = {}
        self._known: _Known | None = None
        self._healthy = True
        ck.REDIS_UP.labels("api").set(1)

    @classmethod
    def from_settings(cls, settings: Settings, tracer: Tracer | None = None) -> QueryCache:
        return cls(client(settings), settings, tracer=tracer)

    async def aclose(self) -> None:
        await self._redis.aclose()

    async def fetch(self, key: str, execute: Callable[[], Awaitable[Executed]]) -> Served:
        """The response for `key`: from Redis, from a concurrent identical request, or from `execute`.

        `execute` must do all of its reads when called (not before): the snapshot that guards the store precedes it.
        """
        if not self._enabled:
            return await self._bypass(execute)
        try:
            found = await (self._lookup(key) if self._tracer is None else self._traced_lookup(self._tracer, key))
        except _Unavailable:
            return await self._bypass(execute)
        if isinstance(found, _Hit):
            _counted("hit").inc()
            return Served(found.body, "hit", found.age_seconds, found.digest)
        snapshot = found
        flight = self._flights.get(key)
        if flight is not None:
            shared = await asyncio.shield(flight)
            if shared is not None:
                _counted("coalesced").inc()
                return Served(shared.body, "coalesced", 0.0, shared.digest)
            # The leader's result could not be vouched for: execute on our own snapshot.
            return await self._miss(key, snapshot, execute)
        return await self._lead(key, snapshot, execute)

    async def _bypass(self, execute: Callable[[], Awaitable[Executed]]) -> Served:
        _counted("bypass").inc()
        executed = await execute()
        return Served(executed.body, "bypass")

    async def _lead(self, key: str, snapshot: _Snapshot, execute: Callable[[], Awaitable[Executed]]) -> Served:
        flight: Flight = asyncio.get_running_loop().create_future()
        self._flights[key] = flight
        shared: _Stored | None = None
        try:
            served = await self._run(key, snapshot, execute)
            shared = None if served.digest is None else _Stored(served.body, served.digest)
            return served
        finally:
            self._flights.pop(key, None)
            flight.set_result(shared)

    async def _miss(self, key: str, snapshot: _Snapshot, execute: Callable[[], Awaitable[Executed]]) -> Served:
        return await self._run(key, snapshot, execute)

    async def _run(self, key: str, snapshot: _Snapshot, execute: Callable[[], Awaitable[Executed]]) -> Served:
        """Execute and store; the answer carries the body's digest only when it was stored."""
        _counted("miss").inc()
        executed = await execute()
        outcome, digest = await self._store(key, snapshot, executed)
        ck.STORES.labels(outcome).inc()
        return Served(executed.body, "miss", digest=digest if outcome == "stored" else None)

    async def _traced_lookup(self, tracer: Tracer, key: str) -> _Hit | _Snapshot:
        with tracer.start_as_current_span("cache lookup") as span:
            found = await self._lookup(key)
            span.set_attribute("ras.cache.hit", isinstance(found, _Hit))
            return found

    async def _lookup(self, key: str) -> _Hit | _Snapshot:
        """The entry of `key`, or on a miss the snapshot its store will be checked against."""
        known = self._known
        started = time.monotonic()
        if known is not None and started < known.until:
            entry, epoch = await self._guarded("lookup", lambda: self._mget(self._layout.entry(known.epoch, key)))
            hit = _parse_entry(entry, time.monotonic() * 1000 + known.offset_ms)
            if hit is not None and epoch == known.epoch_bytes:
                return hit
            started = time.monotonic()
        return await self._scripted_lookup(key, started)

    async def _mget(self, entry: str) -> list[bytes | None]:
        """MGET of `entry` and the epoch on a pooled connection, without `Redis.execute_command`: its retry,
        observability and command-parsing layers cost as much again as the command itself (in Python), and a hit is
        just this command. The connection disconnects itself on any error or cancellation, as it does under
        `execute_command`. On a cluster the client's own MGET routes it: both keys are in the cache's one slot."""
        if isinstance(self._redis, RedisCluster):
            return cast(list[bytes | None], await self._redis.execute_command("MGET", entry, self._layout.epoch))
        pool = self._redis.connection_pool
        connection = await pool.get_connection()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
        try:
            await connection.send_command("MGET", entry, self._layout.epoch)
            reply = await connection.read_response()
        finally:
            await pool.release(connection)
        return cast(list[bytes | None], reply)

    async def _scripted_lookup(self, key: str, started: float) -> _Hit | _Snapshot:
        """The lookup script: also starts an epoch where none is, and reads Redis's clock for `_known`."""
        epoch, counter, entry, now_ms = await self._guarded(
            "lookup",
            lambda: self._lookup_script(
                keys=[self._layout.epoch, self._layout.counter],
                args=[self._layout.entry_prefix, key, ck.new_epoch()],
            ),
        )
        finished = time.monotonic()
        # Redis read its clock somewhere within the round trip: its middle is off by at most half of it.
        self._known = _Known(epoch.decode(), int(now_ms) - (started + finished) * 500, finished + CLOCK_REFRESH_SECONDS)
        return _parse_entry(entry, int(now_ms)) or _Snapshot(self._known.epoch, int(counter), started)

    async def _store(self, key: str, snapshot: _Snapshot, executed: Executed) -> tuple[str, str | None]:
        """The store's outcome, and the digest of the body it stored or tried to."""
        if not executed.cacheable:
            return "skipped_uncacheable", None
        tags = executed.tags
        if len(tags) > self._max_tags or any(len(tag) > self._max_tag_chars for tag in tags):
            return "skipped_too_large", None
        if time.monotonic() - snapshot.started > ck.STORE_DEADLINE_SECONDS:
            return "skipped_stale", None
        entry = self._layout.entry(snapshot.epoch, key)
        digest = body_digest(executed.body)
        keys = [self._layout.epoch, entry, *self._layout.tag_keys(tags)]
        args: list[str | int | bytes] = [snapshot.epoch, snapshot.counter, self._ttl, executed.body, digest, len(tags)]
        if executed.replayed is not None:
            keys += [self._layout.watermark, *self._layout.lsn_keys(tags)]
            args += [executed.replayed, ck.LSN_WINDOW_SECONDS]
        try:
            result = await self._guarded("store", lambda: self._store_script(keys=keys, args=args))
        except _Unavailable:
            return "skipped_error", digest
        return _OUTCOMES.get(result, "skipped_stale"), digest

    async def _guarded(self, op: str, call: Callable[[], Awaitable[T]]) -> T:
        """One Redis call under the breaker and the deadline; raises _Unavailable if skipped or failed."""
        if not self._breaker.allow():
            raise _Unavailable
        deadline = self._lag.deadline(self._timeout, self._give_up_after)
        try:
            async with deadline:
                result = await deadline.watched(self._attempt(call))
        except MaxConnectionsError as exc:
            # Every connection of this process is busy (ck.MAX_CONNECTIONS): a local limit, not a sign that Redis is
            # down. Only this call goes without the cache; opening the circuit would switch the cache off for every
            # request under exactly the load it is for, and change the epoch after it.
            self._gave_up(op, exc)
            raise _Unavailable from exc
        except ck.FAILURES as exc:
            if isinstance(exc, _TIMEOUTS) and not deadline.other_side_slow:
                # Our own loop was too late to read the answer: the same local matter as above.
                ck.LOCAL_TIMEOUTS.labels(op).inc()
                self._gave_up(op, exc)
            else:
                self._failed(op, exc)
            raise _Unavailable from exc
        except BaseException:
            if self._breaker.is_open:
                # A cancelled trial call must still end the trial, or the breaker would stay open for good.
                self._breaker.record_failure()
            raise
        self._succeeded()
        return result

    async def _attempt(self, call: Callable[[], Awaitable[T]]) -> T:
        await ck.discovered(self._redis)
        if not self._healthy:
            await self._forget_entries_from_before_the_outage()
        return await call()

    def _gave_up(self, op: str, exc: BaseException) -> None:
        """A call that failed for this process's own reasons: only it goes without the cache."""
        ck.ERRORS.labels("api", op).inc()
        if self._breaker.is_open:
            self._breaker.record_failure()  # a trial call must still end its trial

    async def _forget_entries_from_before_the_outage(self) -> None:
        """Change the epoch before the first call that follows a Redis failure (`_failed`; a local one is no sign
        that evictions were lost).

        Evictions the consumer sent while this process could not reach Redis may have been lost too, and when Redis
        kept its data (a partition, a hung server) the entries they should have deleted are still there. The
        consumer changes the epoch once it reaches Redis again, but this process may get there first: without this,
        it would serve those entries until then. After the change nothing stored before the outage is read, and a
        request whose snapshot predates it cannot store (its epoch is gone). The cost is a cold cache after an
        outage this process saw, as after the consumer's own change."""
        await self._redis.set(self._layout.epoch, ck.new_epoch())
        self._known = None

    def _failed(self, op: str, exc: BaseException) -> None:
        ck.ERRORS.labels("api", op).inc()
        self._breaker.record_failure()
        if self._healthy:
            self._healthy = False
            ck.REDIS_UP.labels("api").set(0)
            log.warning("redis unavailable, serving without the cache", op=op, error=repr(exc)[:200])

    def _succeeded(self) -> None:
        self._breaker.record_success()
        if not self._healthy:
            self._healthy = True
            ck.REDIS_UP.labels("api").set(1)
            log.info("redis reachable again, cache in use; epoch changed, entries from before the outage unused")


def _parse_entry(entry: object, now_ms: float) -> _Hit | None:
    """An entry is b"{stored_at_ms} {body_digest}\\n{body}"; anything else (an entry of a release before the digest,
    say) is treated as a miss, and overwritten by the store."""
    if not isinstance(entry, bytes):
        return None
    head, sep, body = entry.partition(b"\n")
    stamp, _, digest = head.partition(b" ")
    if not sep or not stamp.isdigit() or len(digest) != _DIGEST_CHARS:
        return None
    return _Hit(body, max(0.0, (now_ms - int(stamp)) / 1000), digest.decode())
