"""`ras rebuild`: project every retained record again into a shadow schema, then swap it in, while the API serves.

Needed whenever a projection rule changes: the tables must become what the new code makes of the whole stream.

1. A fresh shadow schema gets the tables of the current Alembic revision (db/shadow.py).
2. A consumer of its own (no group: partitions assigned by hand, so the live consumer's group is untouched) reads
   all eight topics from the earliest retained offset and applies them with the live consumer's code
   (consumer/apply.py), into the shadow, one transaction per fetch, positions included. A progress bar shows
   records against the brokers' high watermarks, with the rate and an ETA.
3. Once it has read to the end, it tries to swap: one transaction locks the live tables (the live consumer waits),
   checks that the shadow is at or past the live positions on every partition, and moves the tables (db/shadow.py).
   If the live consumer got ahead meanwhile the rebuild reads on and tries again; the API is held up only for the
   moment the swap holds its locks.
4. The positions moved with the tables: the live consumer carries on from wherever it is, re-applying at most the
   records the shadow had read past it (harmless: re-applying changes nothing). The cache epoch changes, so no
   cached answer of the old tables is served again, and subscribers are told to re-read.

Nothing touches the live tables before step 3, and step 3 commits or not as a whole: a rebuild killed at any point
leaves the live projection as it was, and the next run starts over from a fresh shadow.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Never

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from tqdm import tqdm

from consumer.apply import apply_fetch, isolate_refused
from consumer.pure.decode import Record
from consumer.pure.fetch import DecodedFetch, decode_fetch
from consumer.pure.topics import ALL_TOPICS
from db import shadow
from db.errors import is_transient
from db.migrate import head_revision, upgrade_async
from infra.backoff import Backoff
from infra.settings import Settings

log = structlog.get_logger(__name__)
REBUILD_LOCK = 0x7261735F72656275  # "ras_rebu": the advisory lock key held while a rebuild runs
MAX_SWAP_SECONDS = 300.0
FETCH_BYTES = 16 * 1024 * 1024  # the most one fetch of the rebuild's own client brings (beside one large record)
"""Give up (leaving the live projection as it is) if the swap has found no moment to lock the tables for this long."""


@dataclass(frozen=True, slots=True)
class Rebuilt:
    records: int
    seconds: float
    positions: shadow.Positions
    swap_attempts: int


class RebuildError(RuntimeError):
    pass


async def rebuild(
    settings: Settings, *, progress: bool = True, records_per_transaction: int | None = None, keep_old: bool = False
) -> Rebuilt:
    live_engine = create_async_engine(settings.database_url, pool_size=2)
    shadow_engine = shadow.shadow_engine(settings.database_url)
    try:
        async with live_engine.connect() as guard:
            # One rebuild at a time: a second would drop the first's shadow. A session lock, so a killed rebuild
            # releases it with its connection.
            if not await guard.scalar(text("SELECT pg_try_advisory_lock(:key)"), {"key": REBUILD_LOCK}):
                raise RebuildError("another rebuild is running on this database")
            return await _rebuild(settings, live_engine, shadow_engine, progress, records_per_transaction, keep_old)
    finally:
        await shadow_engine.dispose()
        await live_engine.dispose()


async def _rebuild(
    settings: Settings,
    live_engine: AsyncEngine,
    shadow_engine: AsyncEngine,
    progress: bool,
    records_per_transaction: int | None,
    keep_old: bool,
) -> Rebuilt:
    started = time.monotonic()
    live = await _prepare(settings, live_engine)
    replay = _Replay(settings, shadow_engine, records_per_transaction or settings.kafka_max_batch_records)
    records, attempts = await replay.run(live_engine, live, progress)
    async with live_engine.begin() as conn:
        moved = await shadow.positions(conn, live)
        await shadow.drop(conn, shadow.SHADOW_SCHEMA)  # only its alembic_version is left
        if not keep_old:
            await shadow.drop(conn, shadow.OLD_SCHEMA)
    await _announce(settings, live_engine)
    return Rebuilt(records, time.monotonic() - started, moved, attempts)


async def _prepare(settings: Settings, engine: AsyncEngine) -> str:
    async with engine.begin() as conn:
        live = await shadow.live_schema(conn)
        current, head = await shadow.revision(conn, live), head_revision()
        if current != head:
            # The shadow gets the head revision; swapping it under an older alembic_version would confuse the next
            # `ras migrate`.
            raise RebuildError(f"the database is at revision {current}, the code at {head}: run `ras migrate` first")
        await shadow.reset(conn)
    await upgrade_async(settings.database_url, schema=shadow.SHADOW_SCHEMA)
    log.info("shadow schema ready", schema=shadow.SHADOW_SCHEMA, live=live, revision=head)
    return live


async def _announce(settings: Settings, engine: AsyncEngine) -> None:
    """Every cached answer was computed from the old tables, and subscribers hold values read from them."""
    if settings.cache_enabled:
        from consumer.eviction import Evictor

        evictor = Evictor.from_settings(settings)
        try:
            await evictor.bump_epoch()
        finally:
            await evictor.aclose()
    if settings.live_updates_enabled:
        from consumer.notify import Publisher

        publisher = Publisher.from_settings(settings, engine)
        try:
            await publisher.resync()
        finally:
            await publisher.aclose()


class _Replay:
    def __init__(self, settings: Settings, engine: AsyncEngine, per_transaction: int) -> None:
        self._settings = settings
        self._engine = engine
        self._per_transaction = per_transaction
        self._kafka = AIOKafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap_servers,
            group_id=None,
            client_id=f"{settings.kafka_client_id}-rebuild",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=settings.max_message_bytes,
            fetch_max_bytes=max(FETCH_BYTES, settings.max_message_bytes * 2),
        )

    async def run(self, live_engine: AsyncEngine, live: str, progress: bool) -> tuple[int, int]:
        await self._kafka.start()
        try:
            partitions = await self._assign()
            bar: tqdm[Never] = tqdm(
                desc="rebuild", unit="rec", disable=not progress, dynamic_ncols=True, mininterval=0.5
            )
            try:
                return await self._loop(partitions, live_engine, live, bar)
            finally:
                bar.close()
        finally:
            await self._kafka.stop()

    async def _assign(self) -> list[TopicPartition]:
        await self._kafka.topics()  # loads the cluster's metadata
        partitions = []
        for topic in ALL_TOPICS:
            found = self._kafka.partitions_for_topic(topic)
            if not found:
                log.warning("topic not found on the broker; nothing to replay from it", topic=topic)
                continue
            partitions += [TopicPartition(topic, p) for p in sorted(found)]
        self._kafka.assign(partitions)
        await self._kafka.seek_to_beginning(*partitions)
        return partitions

    async def _loop(
        self, partitions: Sequence[TopicPartition], live_engine: AsyncEngine, live: str, bar: tqdm[Never]
    ) -> tuple[int, int]:
        applied, attempts, first_attempt = 0, 0, None
        while True:
            batches = await self._kafka.getmany(
                timeout_ms=self._settings.kafka_fetch_timeout_ms, max_records=self._per_transaction
            )
            records = [
                Record(m.topic, m.partition, m.offset, m.key, m.value, m.timestamp)
                for messages in batches.values()
                for m in messages
            ]
            if records:
                await self._apply(records, self._marks(records))
                applied += len(records)
                bar.update(len(records))
            # Tansu under-reports end offsets, so the bar's total is what fetches say: each partition's high
            # watermark, learnt from its first fetch.
            known = [self._kafka.highwater(tp) for tp in partitions]
            total = sum(mark for mark in known if mark is not None)
            if total and total != bar.total:
                bar.total = max(total, bar.n)
                bar.refresh()
            if records and not await self._at_end(partitions):
                continue
            attempts += 1
            first_attempt = first_attempt or time.monotonic()
            lacking = await shadow.swap(live_engine, live)
            if lacking is None:
                log.info("projection swapped in", records=applied, attempts=attempts)
                return applied, attempts
            if time.monotonic() - first_attempt > MAX_SWAP_SECONDS:
                raise RebuildError(f"could not swap within {MAX_SWAP_SECONDS:.0f} s; the live projection is unchanged")
            if lacking:
                log.info("live consumer ahead of the shadow, reading on", partitions=len(lacking))
            else:
                log.info("live tables busy, retrying the swap")
                await asyncio.sleep(0.05)

    async def _at_end(self, partitions: Sequence[TopicPartition]) -> bool:
        """Whether every partition has been read up to its high watermark as of its latest fetch. A partition that
        has not answered a fetch yet is not known to be at its end, but then the next fetch comes back empty, and
        the caller tries to swap after an empty fetch anyway."""
        for tp in partitions:
            mark = self._kafka.highwater(tp)
            if mark is None or mark > await self._kafka.position(tp):
                return False
        return True

    def _marks(self, records: Sequence[Record]) -> dict[tuple[str, int], int]:
        marks = {}
        for topic, partition in {(r.topic, r.partition) for r in records}:
            mark = self._kafka.highwater(TopicPartition(topic, partition))
            if mark is not None:
                marks[(topic, partition)] = mark
        return marks

    async def _apply(self, records: Sequence[Record], marks: dict[tuple[str, int], int]) -> None:
        """Apply like the live consumer does: a value the database refuses is narrowed down by splitting the fetch
        and quarantined alone, so the shadow's quarantine matches the live one's."""

        async def write(fetch: DecodedFetch) -> None:
            backoff = Backoff(base=0.2, cap=5.0)
            while True:
                try:
                    async with self._engine.begin() as conn:
                        await apply_fetch(conn, fetch, marks)
                    return
                except DBAPIError as exc:
                    if not is_transient(exc) or backoff.attempt >= 8:
                        raise
                    await asyncio.sleep(backoff.next_delay())

        await isolate_refused(decode_fetch(records, self._settings.max_message_bytes), write)
