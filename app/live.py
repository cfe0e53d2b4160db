"""The API's end of live updates: one Redis pub/sub listener per process, fanned out to in-process subscribers.

The consumer publishes after every commit (consumer/notify.py): a message per changed batch and per owner, and the
committed positions. `EventHub` holds one PSUBSCRIBE on every channel of this deployment and

* wakes the `Subscription`s registered for a channel (GraphQL subscriptions, app/graphql/subscriptions.py), each through
  a bounded queue: a subscriber whose queue is full is *dropped*, its stream ends with a "subscriber too slow" error,
  so a client that stops reading costs a fixed amount of memory, never a growing one;
* keeps the latest reported committed position of every partition, and wakes read-your-writes waits
  (`wait_for_position`) when a position moves.

Messages only say that something changed; subscribers re-read the database. So a lost message delays an update and a
repeated one repeats it, but neither makes an answer wrong. Messages can be lost while this process is not
subscribed (Redis down, reconnecting) or while the consumer could not publish; in both cases every subscription is
told to *resync* (re-read) once messages flow again, and read-your-writes waits re-check the positions table once.

A subscriber registers before it reads its initial state, so a change committed in between is not missed: its
message is already queued when the subscriber starts waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson
import structlog
from prometheus_client import Counter, Gauge, Histogram
from redis.asyncio import Redis, RedisCluster
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from infra import cache_keys as ck
from infra.backoff import Backoff
from infra.settings import Settings

log = structlog.get_logger(__name__)

Notice = Literal["change", "resync", "dropped", "closed"]
Partition = tuple[str, int]
PositionCheck = Callable[[], Awaitable[int | None]]

PING_INTERVAL_SECONDS = 5.0
"""How often the listener pings Redis; a connection that answers nothing for three intervals is replaced."""

SUBSCRIBERS = Gauge("ras_live_subscribers", "Live-update subscribers registered in this API process.")
DROPPED = Counter("ras_live_subscribers_dropped_total", "Subscribers dropped for falling behind (queue full).")
RECEIVED = Counter("ras_live_messages_total", "Live-update messages received, by kind.", ["kind"])
LISTENING = Gauge("ras_live_listener_up", "1 while this process is subscribed to the live-update channels.")
DELIVERY_SECONDS = Histogram(
    "ras_live_delivery_seconds",
    "From the consumer's publication (after its commit) to this process receiving the message.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)


class SubscriberTooSlow(Exception):
    """The subscriber's queue overflowed: it was dropped."""


class Subscription:
    """One subscriber's inbox. Use `EventHub.subscribe` (a context manager), then `await next()` per update."""

    def __init__(self, hub: EventHub, channels: frozenset[str], size: int) -> None:
        self.channels = channels
        self._hub = hub
        self._queue: asyncio.Queue[Notice] = asyncio.Queue(maxsize=size)
        self.dropped = False

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    async def next(self) -> bool:
        """Wait for the next change. Every notice already queued is taken too (one re-read serves them all).

        Returns False when the hub closed (the process is stopping); raises SubscriberTooSlow when dropped.
        """
        notices = [await self._queue.get()]
        while not self._queue.empty():
            notices.append(self._queue.get_nowait())
        if "dropped" in notices:
            raise SubscriberTooSlow
        return "closed" not in notices

    def _offer(self, notice: Notice) -> None:
        if self.dropped:
            return
        try:
            self._queue.put_nowait(notice)
        except asyncio.QueueFull:
            self._drop()

    def _drop(self) -> None:
        self.dropped = True
        DROPPED.inc()
        self._hub._remove(self)
        while not self._queue.empty():  # free what it holds now, not when the client finally reads
            self._queue.get_nowait()
        self._queue.put_nowait("dropped")

    def _close(self) -> None:
        if self._queue.full():  # the pending notices no longer matter: the stream ends
            self._queue.get_nowait()
        self._queue.put_nowait("closed")


@dataclass(eq=False)
class _Waiter:
    partition: Partition
    target: int
    woken: asyncio.Event = field(default_factory=asyncio.Event)
    recheck: bool = False


class EventHub:
    def __init__(self, redis: ck.Client, settings: Settings, *, ping_interval: float = PING_INTERVAL_SECONDS) -> None:
        self._redis = redis
        self._ping_interval = ping_interval
        self._layout = ck.CacheLayout(settings.cache_prefix)
        self.queue_size = settings.live_queue_size
        self.max_wait_seconds = settings.consistency_max_wait_ms / 1000
        self._channels: dict[str, set[Subscription]] = {}
        self._positions: dict[Partition, int] = {}
        self._waiters: set[_Waiter] = set()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.listening = asyncio.Event()
        LISTENING.set(0)

    @classmethod
    def from_settings(cls, settings: Settings, *, ping_interval: float = PING_INTERVAL_SECONDS) -> EventHub:
        # A client of its own: the listener waits on reads, so no socket timeout (its pings tell whether Redis is
        # there), and no client-side retries: a lost connection surfaces here, and `_listen` reconnects with
        # backoff and makes every subscriber resync.
        timeout = max(1.0, settings.redis_timeout_seconds)
        # On a cluster, the pub/sub connection goes to the node serving the pattern's slot, the cache's own
        # (infra/cache_keys.py); PUBLISH is forwarded to every node, so that node hears every message.
        kind = RedisCluster if settings.redis_cluster else Redis
        redis = kind.from_url(settings.redis_url, socket_connect_timeout=timeout, retry=Retry(NoBackoff(), 0))
        return cls(redis, settings, ping_interval=ping_interval)

    @property
    def layout(self) -> ck.CacheLayout:
        return self._layout

    # --- lifecycle ---------------------------------------------------------------------------------------------

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._listen(), name="live-updates-listener")

    async def aclose(self) -> None:
        """Stop listening and end every subscription (their streams complete)."""
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for subscriber in {s for subs in self._channels.values() for s in subs}:
            subscriber._close()
        self._channels.clear()
        SUBSCRIBERS.set(0)
        for waiter in self._waiters:
            waiter.woken.set()
        await self._redis.aclose()
        LISTENING.set(0)

    # --- subscribers -------------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def subscribe(self, channels: Iterable[str]) -> Iterator[Subscription]:
        """Register for `channels` (names from `layout`) for the duration of the `with` block."""
        subscriber = Subscription(self, frozenset(channels), self.queue_size)
        if self._closed:
            subscriber._close()
        else:
            for channel in subscriber.channels:
                self._channels.setdefault(channel, set()).add(subscriber)
            SUBSCRIBERS.inc()
        try:
            yield subscriber
        finally:
            self._remove(subscriber)

    def subscriber_count(self) -> int:
        return len({s for subs in self._channels.values() for s in subs})

    def _remove(self, subscriber: Subscription) -> None:
        removed = False
        for channel in subscriber.channels:
            subs = self._channels.get(channel)
            if subs is not None and subscriber in subs:
                subs.discard(subscriber)
                removed = True
                if not subs:
                    del self._channels[channel]
        if removed:
            SUBSCRIBERS.dec()

    def _resync_all(self) -> None:
        for subscriber in {s for subs in self._channels.values() for s in subs}:
            subscriber._offer("resync")
        for waiter in self._waiters:
            waiter.recheck = True
            waiter.woken.set()

    # --- read-your-writes ----------------------------------------------------------------------------------------

    def known_position(self, partition: Partition) -> int | None:
        """The committed next offset of `partition` as last reported (by a message or a read of the table)."""
        return self._positions.get(partition)

    def _learn(self, partition: Partition, next_offset: int) -> None:
        # The latest report wins, even a lower one: positions are rewound when a broker lost its log and began
        # anew (consumer/offsets.py), and remembering the old high value would answer waits for the new log's
        # offsets at once. A report is always a committed value, so it never claims more than was applied.
        if next_offset != self._positions.get(partition):
            self._positions[partition] = next_offset
            for waiter in self._waiters:
                if waiter.partition == partition and next_offset >= waiter.target:
                    waiter.woken.set()

    async def wait_for_position(
        self, partition: Partition, next_offset: int, within: float, check: PositionCheck
    ) -> bool:
        """Whether the projection's stored position of `partition` reached `next_offset` within `within` seconds.

        `check` reads the positions table once; it runs at the start (after registering, so a message arriving
        meanwhile is not missed), after a resync and once more at the deadline, never in a loop. Between those the
        wait is woken by the consumer's position messages.
        """
        if self._reached(partition, next_offset):
            return True
        waiter = _Waiter(partition, next_offset)
        self._waiters.add(waiter)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, within)
        try:
            await self._check(partition, check)
            while not self._reached(partition, next_offset) and not self._closed:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                waiter.woken.clear()
                try:
                    async with asyncio.timeout(remaining):
                        await waiter.woken.wait()
                except TimeoutError:
                    break
                if waiter.recheck:
                    waiter.recheck = False
                    await self._check(partition, check)
            if not self._reached(partition, next_offset):
                # Messages can be lost (Redis restarted, the consumer could not publish): one last look.
                await self._check(partition, check)
            return self._reached(partition, next_offset)
        finally:
            self._waiters.discard(waiter)

    def _reached(self, partition: Partition, next_offset: int) -> bool:
        return self._positions.get(partition, -1) >= next_offset

    async def _check(self, partition: Partition, check: PositionCheck) -> None:
        stored = await check()
        if stored is not None:
            self._learn(partition, stored)

    # --- the listener --------------------------------------------------------------------------------------------

    async def _listen(self) -> None:
        backoff = Backoff(base=0.2, cap=5.0)
        while not self._closed:
            pubsub = self._redis.pubsub()
            try:
                await ck.discovered(self._redis)  # a cluster's pub/sub picks its node from the slots it learnt
                await pubsub.psubscribe(self._layout.events_pattern)
                await self._pump(pubsub, backoff)
            except asyncio.CancelledError:
                raise
            except ck.FAILURES as exc:
                if self.listening.is_set():  # one line per outage, not one per attempt
                    log.warning("live updates: redis unavailable, reconnecting", error=repr(exc)[:200])
            except Exception:  # a bug must not end live updates for good: log it and start over
                log.exception("live updates: listener failed, restarting it")
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
            LISTENING.set(0)
            self.listening.clear()
            await asyncio.sleep(backoff.next_delay())

    async def _pump(self, pubsub: PubSub, backoff: Backoff) -> None:
        interval = self._ping_interval
        last_heard = time.monotonic()
        last_ping = last_heard
        while True:
            # Bounded as a whole: a connection that is accepted but never answers must not hang the listener.
            async with asyncio.timeout(interval * 2):
                message = await pubsub.get_message(timeout=min(1.0, interval))
            now = time.monotonic()
            if message is not None:
                last_heard = now
                self._handle(message, backoff)
            elif now - last_heard > 3 * interval:  # not even the pongs come back
                raise TimeoutError("no answer from redis on the live-update connection")
            if now - last_ping >= interval:
                last_ping = now
                async with asyncio.timeout(interval):
                    await pubsub.ping()

    def _handle(self, message: dict[str, Any], backoff: Backoff) -> None:
        kind = message.get("type")
        if kind == "psubscribe":
            backoff.reset()
            LISTENING.set(1)
            self.listening.set()
            log.info("live updates: listening")
            # Whatever was published while this process was not subscribed is lost: everyone re-reads.
            self._resync_all()
            return
        if kind != "pmessage":
            return  # pong
        channel = message["channel"].decode()
        try:
            body = orjson.loads(message["data"])
        except orjson.JSONDecodeError:
            log.warning("live updates: unreadable message", channel=channel)
            return
        if isinstance(body, dict) and isinstance(body.get("at"), int):
            DELIVERY_SECONDS.observe(max(0.0, time.time() - body["at"] / 1000))
        if channel == self._layout.positions_channel:
            RECEIVED.labels("positions").inc()
            self._on_positions(body)
            return
        RECEIVED.labels("batch" if channel.startswith(self._layout.batch_channel("")) else "user").inc()
        for subscriber in list(self._channels.get(channel, ())):
            subscriber._offer("change")

    def _on_positions(self, body: Any) -> None:
        if not isinstance(body, dict):
            return
        for entry in body.get("positions") or ():
            if isinstance(entry, list) and len(entry) == 3:
                topic, partition, next_offset = entry
                if isinstance(topic, str) and isinstance(partition, int) and isinstance(next_offset, int):
                    self._learn((topic, partition), next_offset)
        if body.get("resync"):
            self._resync_all()
