"""The query cache's shared contract: Redis key layout, tags, the Redis client and the cache metrics.

The API stores results (app/cache.py) and the consumer evicts them (consumer/eviction.py); both build every key here,
so the two sides cannot drift apart. With P = `settings.cache_prefix` (several deployments can share one Redis):

    {P}:epoch                random token; entries stored under any other epoch are never read again, and none
                             while it is missing (deleted when Redis refuses evictions: consumer/eviction.py)
    {P}:gen                  global invalidation counter, INCRed by every eviction
    {P}:e:{epoch}:{digest}   one cached result: b"{stored_at_ms} {body_digest}\\n" + body
    {P}:t:{tag}              set of the entry keys indexed under a tag
    {P}:s:{tag}              value of {P}:gen at the tag's latest eviction
    P:d:{sha256}             a persisted GraphQL document: b"t" (trusted) or b"a" (APQ registration) + its text
                             (app/graphql/persisted.py; PostgreSQL holds every one, db/documents.py)

The braces are a Redis Cluster hash tag: every key the cache's scripts touch hashes to the one slot of `{P}`, so
each script runs on one node, atomically, on a cluster exactly as on a single Redis (docs/cache.md, "Redis Cluster").
A persisted document is read and written alone, so its key has no hash tag and the documents spread over the cluster.

Tags name what a result read: `b:{batch_id}` for a batch looked up by id (found or not) and `u:{user_id}` for a view
of a user's batch list, `u:*` for the list over every user. The Lua scripts that use these keys live beside their
callers; they take the keys built here as arguments (the lookup script appends `{epoch}:{digest}` to `entry_prefix`).

Live updates (consumer/notify.py publishes, app/live.py listens) use Redis pub/sub channels under the same prefix
(classic pub/sub: a cluster forwards every PUBLISH to every node, so a listener on any node hears all of them):

    {P}:events:batch:{batch_id}    a committed transaction changed this batch
    {P}:events:user:{user_id}      … changed a batch of this user (their batch list)
    {P}:events:positions             the committed positions after a transaction (read-your-writes waits), or a resync

Redis must run without persistence and with `maxmemory-policy noeviction` (see docs/cache.md): the argument in
app/cache.py assumes keys disappear only by TTL or by a restart that empties Redis.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import orjson
from prometheus_client import Counter, Gauge
from redis.asyncio import Redis, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisClusterException, RedisError

from infra.settings import Settings

BATCH_TAG = "b:"
USER_TAG = "u:"
ALL_USERS = "*"
"""The user-list id of a list view over every user's batches (the loaders' `ALL_USERS`)."""

SEQ_TTL_SECONDS = 3_600
"""How long a tag remembers its latest eviction. Must exceed STORE_DEADLINE_SECONDS by a wide margin."""
STORE_DEADLINE_SECONDS = 600.0
"""A miss whose execution took longer never stores: the tag sequences it would be checked against may have expired."""
LSN_WINDOW_SECONDS = 600
"""The WAL watermark's window (docs/replicas.md): its floor covers every eviction older than this, so the tags' own
WAL positions (kept SEQ_TTL_SECONDS) need only cover the evictions younger."""
NO_FLOOR = "1e300"
"""The watermark's floor while it is unknown (a watermark begun by an eviction): no replica reaches it."""
MAX_CONNECTIONS = 100
"""Redis connections per process; past it a call fails at once (and the cache is bypassed) instead of queueing."""

TagKind = Literal["batch", "user"]

Client = Redis | RedisCluster
"""A single Redis or a Redis Cluster (`settings.redis_cluster`); the cache's code is the same for both."""


def batch_tag(batch_id: str) -> str:
    return BATCH_TAG + batch_id


def user_tag(user_id: str) -> str:
    return USER_TAG + user_id


def tag_kind(tag: str) -> TagKind:
    return "batch" if tag.startswith(BATCH_TAG) else "user"


def read_tags(batch_ids: Iterable[str], user_lists: Iterable[str]) -> frozenset[str]:
    """The tags of a result that looked up `batch_ids` and read the batch lists of `user_lists` (ALL_USERS included)."""
    return frozenset(batch_tag(b) for b in batch_ids) | frozenset(user_tag(u) for u in user_lists)


def changed_tags(batch_ids: Iterable[str], user_ids: Iterable[str]) -> frozenset[str]:
    """The tags a transaction that changed `batch_ids` (owned by `user_ids`) must evict.

    Any change of a batch also changes the list over every user, so `u:*` goes with any change at all.
    """
    tags = read_tags(batch_ids, user_ids)
    return tags | {user_tag(ALL_USERS)} if tags else tags


def digest(parts: Sequence[object]) -> str:
    """sha256 of the parts as canonical JSON (sorted keys at every level); parts must be JSON values."""
    return hashlib.sha256(orjson.dumps(list(parts), option=orjson.OPT_SORT_KEYS)).hexdigest()


def new_epoch() -> str:
    """A fresh epoch token. Random, never a counter: a Redis restart forgets the old value, and a reused one would
    let a reader that started before the restart store under the new life's epoch."""
    return secrets.token_hex(8)


@dataclass(frozen=True, slots=True)
class CacheLayout:
    prefix: str

    @property
    def slot(self) -> str:
        """The hash-tagged prefix of every key a cache script touches: one Redis Cluster slot for all of them."""
        return f"{{{self.prefix}}}"

    @property
    def epoch(self) -> str:
        return f"{self.slot}:epoch"

    @property
    def counter(self) -> str:
        return f"{self.slot}:gen"

    @property
    def entry_prefix(self) -> str:
        return f"{self.slot}:e:"

    def entry(self, epoch: str, key_digest: str) -> str:
        return f"{self.entry_prefix}{epoch}:{key_digest}"

    def index(self, tag: str) -> str:
        return f"{self.slot}:t:{tag}"

    def seq(self, tag: str) -> str:
        return f"{self.slot}:s:{tag}"

    def lsn(self, tag: str) -> str:
        return f"{self.slot}:l:{tag}"

    @property
    def watermark(self) -> str:
        return f"{self.slot}:lsn"

    def document(self, sha256: str) -> str:
        return f"{self.prefix}:d:{sha256}"

    @property
    def events_prefix(self) -> str:
        # In the cache's slot too: on a cluster, the listener (subscribed on the node of its pattern's slot) and the
        # cache then live on one node and fail together, and sharded pub/sub could carry them unchanged.
        return f"{self.slot}:events:"

    @property
    def events_pattern(self) -> str:
        """The PSUBSCRIBE pattern matching every live-update channel of this deployment."""
        return f"{self.events_prefix}*"

    def batch_channel(self, batch_id: str) -> str:
        return f"{self.events_prefix}batch:{batch_id}"

    def user_channel(self, user_id: str) -> str:
        return f"{self.events_prefix}user:{user_id}"

    @property
    def positions_channel(self) -> str:
        return f"{self.events_prefix}positions"

    def tag_keys(self, tags: Iterable[str]) -> list[str]:
        """(index, seq) key pairs of `tags`, flattened in a stable order: the scripts walk them two at a time."""
        return [key for tag in sorted(tags) for key in (self.index(tag), self.seq(tag))]

    def lsn_keys(self, tags: Iterable[str]) -> list[str]:
        """The WAL-position keys of `tags`, in `tag_keys`' order."""
        return [self.lsn(tag) for tag in sorted(tags)]


def connect(settings: Settings, *, timeout: float | None = None) -> Client:
    """A Redis client that fails fast: short socket timeouts (`timeout`, by default `redis_timeout_seconds`) and no
    retries, so an outage costs one timeout. A cluster client when `redis_cluster` is set: `redis_url` then names
    any one node, from which the client learns the others."""
    timeout = settings.redis_timeout_seconds if timeout is None else timeout
    if settings.redis_cluster:
        return RedisCluster.from_url(
            settings.redis_url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
            max_connections=MAX_CONNECTIONS,
        )
    return Redis.from_url(
        settings.redis_url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
        max_connections=MAX_CONNECTIONS,
    )


FAILURES = (RedisError, RedisClusterException, OSError, TimeoutError)
"""What a Redis call raises when Redis is unavailable. A cluster client that cannot reach any node to learn the
cluster from raises RedisClusterException, which is not a RedisError."""


async def discovered(redis: Client) -> None:
    """Let a cluster client learn the cluster's nodes before calls run concurrently on it (a no-op once it has, and
    for a single Redis): redis-py's RedisCluster (8.1) loses calls that race its own discovery, closing connections
    under them, which the cache would count as a Redis outage. `initialize` is public and serialises discovery."""
    if isinstance(redis, RedisCluster):
        await redis.initialize()


# --- metrics (default registry; registered once here because both sides report some of them) ----------------------

REQUESTS = Counter(
    "ras_cache_requests_total",
    "Cacheable requests by result: hit, miss (executed here), coalesced (shared another request's execution), "
    "bypass (cache disabled or Redis unavailable).",
    ["result"],
)
STORES = Counter(
    "ras_cache_stores_total",
    "What happened to executed results: stored, skipped_stale (an eviction or epoch change raced the execution), "
    "skipped_uncacheable (errors or untaggable reads), skipped_too_large (an id or a tag count over its cap), "
    "skipped_error (Redis unavailable).",
    ["outcome"],
)
EVICTIONS = Counter("ras_cache_evictions_total", "Tags evicted by the consumer, by tag kind.", ["tag_kind"])
ENTRIES_EVICTED = Counter("ras_cache_entries_evicted_total", "Cached results deleted by evictions.")
ERRORS = Counter("ras_cache_errors_total", "Failed Redis calls, by side (api, consumer) and operation.", ["side", "op"])
LOCAL_TIMEOUTS = Counter(
    "ras_cache_local_timeouts_total",
    "Redis calls the API abandoned because its own event loop was too late to read the answer in time (also in "
    "ras_cache_errors_total; they open no breaker and change no epoch), by operation.",
    ["op"],
)
EPOCH_BUMPS = Counter("ras_cache_epoch_bumps_total", "Cache epoch changes made by the consumer.")
REDIS_UP = Gauge("ras_cache_redis_up", "1 while this process's last Redis call succeeded.", ["side"])
WRITES_REFUSED = Gauge(
    "ras_cache_writes_refused",
    "1 while Redis refuses the consumer's evictions (maxmemory reached under noeviction, a read-only replica): the "
    "epoch key is deleted instead and readers go without the cache.",
)
BUMP_PENDING = Gauge(
    "ras_cache_epoch_bump_pending",
    "1 while an eviction could not be delivered and the epoch change that makes up for it has not happened yet.",
)
