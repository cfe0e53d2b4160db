"""The consumer loop: fetch a batch of records, apply it in one transaction, then tell the cache what changed.

Offsets live in the database (consumer.offsets). A transient database failure is retried with backoff while
every partition is paused, so the broker sees a live group member but nothing new is fetched; positions do not
move until the transaction that holds them commits. A batch the database refuses for the data in it is split
until the offending record is found and quarantined, so one bad record never blocks a partition.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TypeVar

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from consumer import metrics
from consumer.apply import Applied, Projection, apply_delivered, project, quarantine_records
from consumer.offsets import PositionListener
from consumer.pure.decode import Record
from consumer.pure.topics import ALL_TOPICS
from db.errors import is_data_error, is_transient
from db.positions import load_positions
from infra.backoff import Backoff
from infra.settings import Settings

log = structlog.get_logger(__name__)
T = TypeVar("T")
PREFETCH_BYTES = 16 * 1024 * 1024
OnApplied = Callable[[Applied], Awaitable[None]]


class Stopping(Exception):
    """Raised inside a retry wait when shutdown was requested: the pending work stays uncommitted."""


class ProjectionConsumer:
    def __init__(
        self,
        settings: Settings,
        engine: AsyncEngine,
        on_applied: OnApplied | None = None,
        topics: Sequence[str] = ALL_TOPICS,
    ) -> None:
        self._settings = settings
        self._engine = engine
        self._on_applied = on_applied
        self._topics = list(topics)
        self._in_flight = asyncio.Lock()
        self._stop = asyncio.Event()
        self._held: list[ConsumerRecord] = []
        self._assignments = 0  # completed assignments: records fetched before the latest one may come again
        self._kafka = AIOKafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap_servers,
            group_id=settings.kafka_group_id,
            client_id=settings.kafka_client_id,
            enable_auto_commit=False,
            auto_offset_reset=settings.kafka_auto_offset_reset,
            session_timeout_ms=settings.kafka_session_timeout_ms,
            heartbeat_interval_ms=max(100, settings.kafka_session_timeout_ms // 4),
            # How long the broker holds a fetch open when there is nothing new: the floor of freshness when idle.
            fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
            # The prefetch buffer is most of the consumer's memory, so it is bounded whatever the backlog: up to
            # one record of the largest accepted size per partition (brokers return a larger first record anyway,
            # so it can still be fetched and quarantined) and 16 MiB per fetch. Larger buffers gained nothing in W1
            # (bench/), but peak RSS then grew with the backlog.
            max_partition_fetch_bytes=settings.max_message_bytes,
            fetch_max_bytes=max(PREFETCH_BYTES, settings.max_message_bytes * 2),
        )
        self.assigned = asyncio.Event()

    def stop(self) -> None:
        """Ask the loop to finish the transaction in hand, leave the group and return."""
        self._stop.set()

    async def close(self) -> None:
        """Release the Kafka client; for a consumer whose `run` never started (its process gave up waiting for a
        dependency), which aiokafka would otherwise report as unclosed. After `run`, it does nothing."""
        await self._kafka.stop()

    async def run(self) -> None:
        listener = PositionListener(
            self._kafka,
            self._settings.kafka_bootstrap_servers,
            self._engine,
            self._in_flight,
            start_from_end=self._settings.kafka_auto_offset_reset == "latest",
            retry=self._retrying_in_callback,
            on_assigned=self._assigned_anew,
        )
        self._kafka.subscribe(self._topics, listener=listener)
        await self._kafka.start()
        log.info("consumer started", topics=len(self._topics), group=self._settings.kafka_group_id)
        try:
            await self._loop()
        except Stopping:
            log.info("shutdown requested while waiting for the database; uncommitted work will be re-read")
        finally:
            await self._kafka.stop()
            log.info("consumer stopped")

    async def _loop(self) -> None:
        """Apply fetched batches in order, one transaction each, decoding batch N+1 while N is in the database.

        Decoding is pure Python and the transaction mostly waits for PostgreSQL, so on two cores they overlap. The
        next batch is only fetched from what the client already holds (no wait) and is applied strictly after the
        current one, so each partition's records still commit in order, positions with the rows they cover.
        """
        pending: Projection | None = None
        pending_since = 0
        while not self._stop.is_set():
            wait_ms = 0 if pending is not None else self._settings.kafka_fetch_timeout_ms
            fetched, self._held = self._held + await self._fetch(wait_ms), []
            fetched_since = self._assignments
            if pending is None:
                pending, pending_since = (self._project(fetched) if fetched else None), fetched_since
                continue
            if pending_since != self._assignments:
                # Partitions were assigned anew since `pending` was fetched. The assignment sought them back to the
                # stored positions, but `fetched` may come from before or after that seek: drop everything in hand
                # and seek to the stored positions again, so that every record after them is read exactly once.
                pending = None
                await self._seek_to_stored()
                continue
            decoding = asyncio.ensure_future(asyncio.to_thread(self._project, fetched)) if fetched else None
            try:
                current = self._owned(pending)
                if current is not None:
                    await self._apply(current)
            finally:
                # A thread cannot be cancelled: let it finish before leaving, whatever happened to the transaction.
                pending = await decoding if decoding is not None else None
            pending_since = fetched_since

    async def _seek_to_stored(self) -> None:
        """Seek every assigned partition to its stored position (or its start, when it has none)."""
        assignments = self._assignments
        partitions = [(tp.topic, tp.partition) for tp in self._kafka.assignment()]

        async def load() -> dict[tuple[str, int], int]:
            async with self._engine.connect() as conn:
                return await load_positions(conn, partitions)

        stored = await self._retrying("load stored positions", load)
        if assignments != self._assignments:
            return  # assigned anew meanwhile: that assignment sought every partition to its stored position itself
        fresh = []
        for topic, partition in partitions:
            tp = TopicPartition(topic, partition)
            if (topic, partition) in stored:
                self._kafka.seek(tp, stored[(topic, partition)])
            else:
                fresh.append(tp)
        if fresh:
            reset = self._settings.kafka_auto_offset_reset == "latest"
            await (self._kafka.seek_to_end if reset else self._kafka.seek_to_beginning)(*fresh)
        log.info("in-hand records dropped after a new assignment; partitions sought to their stored positions")

    def _assigned_anew(self) -> None:
        self._assignments += 1
        self.assigned.set()

    def _project(self, fetched: Sequence[ConsumerRecord]) -> Projection:
        records = [Record(m.topic, m.partition, m.offset, m.key, m.value, m.timestamp) for m in fetched]
        return project(records, self._settings.max_message_bytes)

    def _owned(self, projection: Projection) -> Projection | None:
        """What of `projection` is still this consumer's to apply: all but the records of partitions revoked
        meanwhile, which their new owner reads again from the stored positions (the revocation waited for the
        transaction in hand to store them)."""
        assigned = {(tp.topic, tp.partition) for tp in self._kafka.assignment()}
        if projection.next_offsets.keys() <= assigned:
            return projection
        kept = [r for r in projection.records if (r.topic, r.partition) in assigned]
        return project(kept, self._settings.max_message_bytes) if kept else None

    async def _fetch(self, timeout_ms: int) -> list[ConsumerRecord]:
        """Records as the client returns them; they become `Record`s in `_project`, off the event loop's thread."""
        batches = await self._kafka.getmany(timeout_ms=timeout_ms, max_records=self._settings.kafka_max_batch_records)
        return [m for messages in batches.values() for m in messages]

    def _high_watermarks(self, partitions: Iterable[tuple[str, int]]) -> dict[tuple[str, int], int]:
        marks = {}
        for tp in partitions:
            mark = self._kafka.highwater(TopicPartition(*tp))
            if mark is not None:
                marks[tp] = mark
        return marks

    async def _apply(self, projection: Projection) -> None:
        records = projection.records
        started = time.perf_counter()
        results = await self._apply_isolating(projection)
        metrics.TRANSACTION_SECONDS.observe(time.perf_counter() - started)
        metrics.TRANSACTION_RECORDS.observe(len(records))
        await self._commit_to_kafka(projection.next_offsets)
        for applied in results:
            self._count(applied)
            if self._on_applied is not None:  # every commit: it moved positions even if it changed no row
                await self._on_applied(applied)

    async def _apply_isolating(self, projection: Projection) -> list[Applied]:
        records = projection.records
        marks = self._high_watermarks(projection.next_offsets)
        for (topic, partition), mark in marks.items():
            consumed = projection.next_offsets[(topic, partition)]
            metrics.LAG.labels(topic, str(partition)).set(max(0, mark - consumed))

        async def write() -> Applied:
            async with self._in_flight, self._engine.begin() as conn:
                return await apply_delivered(conn, projection, marks)

        try:
            return [await self._retrying("apply records", write)]
        except DBAPIError as exc:
            if not is_data_error(exc):
                raise
            if len(records) > 1:
                middle, max_bytes = len(records) // 2, self._settings.max_message_bytes
                first = await self._apply_isolating(project(records[:middle], max_bytes))
                return first + await self._apply_isolating(project(records[middle:], max_bytes))
            reason = f"database rejected the record: {exc.orig}"
            log.warning("record refused by the database", topic=records[0].topic, offset=records[0].offset)

            async def refuse() -> Applied:
                async with self._in_flight, self._engine.begin() as conn:
                    return await quarantine_records(conn, records, reason, marks)

            return [await self._retrying("quarantine record", refuse)]

    async def _retrying(self, what: str, attempt: Callable[[], Awaitable[T]]) -> T:
        return await self._retry(what, attempt, self._wait_paused)

    async def _retrying_in_callback(self, what: str, attempt: Callable[[], Awaitable[T]]) -> T:
        # Inside a rebalance callback the consumer must not be polled: the rebalance waits for the callback.
        return await self._retry(what, attempt, self._sleep)

    async def _retry(
        self, what: str, attempt: Callable[[], Awaitable[T]], wait: Callable[[float], Awaitable[None]]
    ) -> T:
        backoff = Backoff(base=0.2, cap=10.0)
        while True:
            try:
                result = await attempt()
            except Exception as exc:
                if not is_transient(exc):
                    raise
                delay = backoff.next_delay()
                metrics.RETRIES.inc()
                log.warning("database unavailable, retrying", action=what, error=str(exc)[:200], delay=round(delay, 2))
                await wait(delay)
                continue
            if backoff.attempt:
                self._resume()
            return result

    async def _sleep(self, delay: float) -> None:
        if self._stop.is_set():
            raise Stopping
        await asyncio.sleep(delay)

    async def _wait_paused(self, delay: float) -> None:
        """Sleep `delay` while polling with every partition paused, so the group keeps this member."""
        if self._stop.is_set():
            raise Stopping
        assigned = self._kafka.assignment()
        if assigned:
            self._kafka.pause(*assigned)
            metrics.PAUSED.set(1)
            # A rebalance during the wait may hand over partitions that are not paused; keep what they return.
            self._held += await self._fetch(int(delay * 1000))
        else:
            await asyncio.sleep(delay)

    def _resume(self) -> None:
        paused = self._kafka.paused()
        if paused:
            self._kafka.resume(*paused)
        metrics.PAUSED.set(0)
        log.info("database reachable again, partitions resumed")

    async def _commit_to_kafka(self, next_offsets: dict[tuple[str, int], int]) -> None:
        # Only a convenience for tools that read group offsets; the database holds the positions that count.
        assigned = self._kafka.assignment()
        offsets = {TopicPartition(*tp): offset for tp, offset in next_offsets.items()}
        offsets = {tp: offset for tp, offset in offsets.items() if tp in assigned}
        if not offsets:
            return
        try:
            await self._kafka.commit(offsets)
        except KafkaError as exc:
            log.debug("kafka offset commit skipped", error=str(exc))

    def _count(self, applied: Applied) -> None:
        metrics.TRANSACTIONS.inc()
        for outcome, counts in (
            ("applied", applied.applied),
            ("ignored", applied.ignored),
            ("quarantined", applied.quarantined),
        ):
            for topic, n in counts.items():
                metrics.EVENTS.labels(topic, outcome).inc(n)
