"""The consumer loop: take a decoded fetch, apply it in one transaction, commit, then tell the cache what changed.

What is in hand and when it may be applied is the intake's (consumer.intake, which states the loop's invariant);
each partition's position is stored with the rows it covers (consumer.apply). A transient database failure is
retried with backoff while every partition is paused, so the broker sees a live group member but nothing new is
fetched; positions do not move until the transaction that holds them commits. A fetch the database refuses for the
data in it is split until the offending record is found and quarantined, so one bad record never blocks a partition.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from opentelemetry.trace import Tracer
from sqlalchemy.ext.asyncio import AsyncEngine

from consumer import metrics
from consumer.apply import Applied, OnApplied, Positions, apply_fetch, isolate_refused
from consumer.intake import Fetched, Intake, Stopping
from consumer.pure.fetch import DecodedFetch, Partition
from consumer.pure.topics import ALL_TOPICS
from consumer.tracing import transaction_span
from infra.settings import Settings

log = structlog.get_logger(__name__)


class ConsumerLoop:
    """One member of the consumer group: takes each current fetch from its intake and applies it, then tells
    `on_applied` what every committed transaction did. `on_gained` runs before the next transaction whenever an
    assignment brought partitions this member did not hold (their last owner's final evictions may be lost). With a
    `tracer`, each fetch applied is a span (consumer/tracing.py)."""

    def __init__(
        self,
        settings: Settings,
        engine: AsyncEngine,
        on_applied: OnApplied | None = None,
        topics: Sequence[str] = ALL_TOPICS,
        tracer: Tracer | None = None,
        on_gained: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._settings = settings
        self._on_gained = on_gained
        self._tracer = tracer
        self._engine = engine
        self._on_applied = on_applied
        self._topics = list(topics)
        self._stop = asyncio.Event()
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
            # What the client fetches ahead is bounded whatever the backlog: the intake shares this among the
            # partitions once they are assigned (consumer.intake). Brokers return a record larger than either
            # anyway, so it can still be fetched and quarantined.
            max_partition_fetch_bytes=settings.kafka_prefetch_bytes,
            fetch_max_bytes=settings.kafka_prefetch_bytes,
        )
        self.intake = Intake(self._kafka, engine, settings, self._stop, traced=tracer is not None)
        self._uncommitted: dict[TopicPartition, int] = {}  # Kafka offsets to commit (see `_commit_to_kafka`)
        self._committing: asyncio.Task[None] | None = None
        self.assigned = self.intake.assigned

    def stop(self) -> None:
        """Ask the loop to finish the transaction in hand, leave the group and return."""
        self._stop.set()

    async def close(self) -> None:
        """Release the Kafka client; for a consumer whose `run` never started (its process gave up waiting for a
        dependency), which aiokafka would otherwise report as unclosed. After `run`, it does nothing."""
        await self._kafka.stop()

    async def run(self) -> None:
        self._kafka.subscribe(self._topics, listener=self.intake)
        await self._kafka.start()
        log.info("consumer started", topics=len(self._topics), group=self._settings.kafka_group_id)
        try:
            while not self._stop.is_set():
                fetched = await self.intake.take()
                if self.intake.take_gained() and self._on_gained is not None:
                    await self._on_gained()
                if fetched is not None:
                    await self._apply(fetched)
                # Let go of it before the next take: that one's records and rows would otherwise join it and the
                # fetch decoding beside it, a third fetch in memory.
                del fetched
        except Stopping:
            log.info("shutdown requested while waiting for the database; uncommitted work will be re-read")
        finally:
            await self.intake.close()
            if self._committing is not None:
                await asyncio.gather(self._committing, return_exceptions=True)
            await self._kafka.stop()
            log.info("consumer stopped")

    async def _apply(self, fetched: Fetched) -> None:
        if self._tracer is None:
            await self._apply_fetch(fetched)
            return
        with transaction_span(self._tracer, fetched):
            await self._apply_fetch(fetched)

    async def _apply_fetch(self, fetched: Fetched) -> None:
        fetch = fetched.decoded
        marks = self._high_watermarks(fetch.next_offsets)
        started = time.perf_counter()

        async def write(part: DecodedFetch) -> Applied | None:
            return await self.intake.retrying("apply records", lambda: self._transaction(fetched, part, marks))

        results = await isolate_refused(fetch, write)
        applied = [result for result in results if result is not None]
        if len(applied) < len(results):
            self.intake.let_go(fetched)
        if not applied:
            return
        metrics.TRANSACTION_SECONDS.observe(time.perf_counter() - started)
        metrics.TRANSACTION_RECORDS.observe(len(fetch.records))
        ages = _Ages(fetched)
        ages.observe("committed")
        for result in applied:
            self._count(result)
            if self._on_applied is not None:  # every commit: it moved positions even if it changed no row
                await self._on_applied(result)
        ages.observe("announced")
        self._commit_to_kafka(applied)

    async def _transaction(self, fetched: Fetched, part: DecodedFetch, marks: dict[Partition, int]) -> Applied | None:
        """Apply `part` of `fetched` in one transaction if `fetched` is still current; None if it is not."""
        async with self.intake.lock:
            if not self.intake.current(fetched):
                return None
            async with self._engine.begin() as conn:
                return await apply_fetch(conn, part, marks, Positions.LEAVE_OUT_APPLIED)

    def _high_watermarks(self, offsets: dict[Partition, int]) -> dict[Partition, int]:
        """Each partition's high watermark as of its latest fetch, and its lag after `offsets`; the client knows
        them for its assigned partitions only."""
        marks = {}
        assigned = self._kafka.assignment()
        for (topic, partition), consumed in offsets.items():
            tp = TopicPartition(topic, partition)
            mark = self._kafka.highwater(tp) if tp in assigned else None
            if mark is not None:
                marks[(topic, partition)] = mark
                metrics.LAG.labels(topic, str(partition)).set(max(0, mark - consumed))
        return marks

    def _commit_to_kafka(self, applied: Sequence[Applied]) -> None:
        """Commit the group's Kafka offsets in the background, off the path to the next transaction: they are only a
        convenience for tools that read group offsets; the database holds the positions that count. One commit is
        in flight at a time; offsets that come meanwhile go with the next."""
        for topic, partition, offset in (position for result in applied for position in result.positions):
            tp = TopicPartition(topic, partition)
            self._uncommitted[tp] = max(offset, self._uncommitted.get(tp, 0))
        if self._uncommitted and (self._committing is None or self._committing.done()):
            self._committing = asyncio.create_task(self._send_commits())

    async def _send_commits(self) -> None:
        while self._uncommitted:
            assigned = self._kafka.assignment()
            offsets = {tp: offset for tp, offset in self._uncommitted.items() if tp in assigned}
            self._uncommitted = {}
            if not offsets:
                continue
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


class _Ages:
    """Observes the age of a fetch's oldest record at each stage of its transaction (metrics.RECORD_AGE)."""

    def __init__(self, fetched: Fetched) -> None:
        stamps = [r.timestamp_ms for r in fetched.decoded.records if r.timestamp_ms is not None and r.timestamp_ms > 0]
        self._oldest = min(stamps) / 1000 if stamps else None
        if self._oldest is not None:
            metrics.RECORD_AGE.labels("fetched").observe(max(0.0, fetched.fetched_at - self._oldest))

    def observe(self, stage: str) -> None:
        if self._oldest is not None:
            metrics.RECORD_AGE.labels(stage).observe(max(0.0, time.time() - self._oldest))
