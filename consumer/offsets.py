"""Where each assigned partition resumes: the position stored with the projection, never Kafka's own commit.

The projection's transaction stores the next offset of every partition it consumed, so the database alone knows
which records its rows reflect. On assignment the consumer seeks there; a partition with no stored position
starts from the beginning (or the end, if so configured), even when Kafka holds a committed offset for the
group — that offset may belong to a different database.

A stored position is checked against the partition's log first. Beyond its end, the broker lost the log (a topic
recreated, a broker restarted without its storage): the partition is read again from its beginning and its stored
position rewound, because every write is idempotent while skipping would lose whatever the new log holds. Before
its start, retention deleted records that were never applied: that loss cannot be undone, so it is logged and the
partition resumes at its first record. Both are warnings an operator must see (docs/runbook.md, "Broker data loss").

"Beyond the end" is confirmed before anything is rewound: a broker's ListOffsets answer may fall short of the log's
real end (Tansu, the embedded broker, answers the base offset of the last record batch plus one), and taking it at
its word re-read whole partitions after every restart. A group-less client fetches at the reported end, and the
high watermark of that fetch response is the end that counts.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError
from sqlalchemy.ext.asyncio import AsyncEngine

from db.positions import load_positions, rewind_positions

log = structlog.get_logger(__name__)
Positions = dict[tuple[str, int], int]
# Asking the broker for the partitions' bounds must not hold up an assignment for the client's 40 s request timeout.
BOUNDS_TIMEOUT_SECONDS = 10.0
# How long the probe's fetch at an empty partition waits for records before the broker answers.
PROBE_WAIT_MS = 100


class PositionListener(ConsumerRebalanceListener):  # type: ignore[misc]
    """Seeks newly assigned partitions to their stored positions.

    `in_flight` is held while a transaction is being applied: revocation waits for it, so a partition is handed
    to another consumer only after the records already taken from it are committed.
    """

    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        bootstrap_servers: str,
        engine: AsyncEngine,
        in_flight: asyncio.Lock,
        start_from_end: bool,
        retry: Callable[[str, Callable[[], Awaitable[Positions]]], Awaitable[Positions]],
        on_assigned: Callable[[], None],
    ) -> None:
        self._consumer = consumer
        self._bootstrap_servers = bootstrap_servers
        self._engine = engine
        self._in_flight = in_flight
        self._start_from_end = start_from_end
        self._retry = retry
        self._on_assigned = on_assigned

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        async with self._in_flight:
            log.info("partitions revoked", partitions=sorted(f"{tp.topic}:{tp.partition}" for tp in revoked))

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        async def load() -> Positions:
            async with self._engine.connect() as conn:
                return await load_positions(conn, [(tp.topic, tp.partition) for tp in assigned])

        stored = await self._retry("load stored positions", load)
        bounds = await self._log_bounds(
            {tp: stored[(tp.topic, tp.partition)] for tp in assigned if (tp.topic, tp.partition) in stored}
        )
        fresh = []
        rewound: dict[TopicPartition, tuple[int, int]] = {}
        for tp in assigned:
            offset = stored.get((tp.topic, tp.partition))
            if offset is None:
                fresh.append(tp)
                continue
            first, end = bounds.get(tp, (offset, offset))
            name = f"{tp.topic}:{tp.partition}"
            if offset > end:
                log.warning(
                    "stored position beyond the end of the partition: the broker lost its log; reading the partition "
                    "again from its beginning",
                    partition=name,
                    stored=offset,
                    end=end,
                    beginning=first,
                )
                rewound[tp] = (first, end)
                offset = first
            elif offset < first:
                log.warning(
                    "records deleted by retention before they were applied; resuming at the partition's first record",
                    partition=name,
                    stored=offset,
                    beginning=first,
                    lost=first - offset,
                )
                offset = first
            self._consumer.seek(tp, offset)
        if rewound:
            await self._rewind(rewound)
        if fresh:
            seek = self._consumer.seek_to_end if self._start_from_end else self._consumer.seek_to_beginning
            await seek(*fresh)
        log.info(
            "partitions assigned", partitions=len(assigned), stored=len(stored), fresh=len(fresh), rewound=len(rewound)
        )
        self._on_assigned()

    async def _log_bounds(self, stored: dict[TopicPartition, int]) -> dict[TopicPartition, tuple[int, int]]:
        """First and end offset of each partition; empty (nothing checked) when the broker cannot say."""
        partitions = list(stored)
        if not partitions:
            return {}
        try:
            async with asyncio.timeout(BOUNDS_TIMEOUT_SECONDS):
                first = await self._consumer.beginning_offsets(partitions)
                end = await self._consumer.end_offsets(partitions)
                short = {tp: end[tp] for tp in partitions if tp in end and stored[tp] > end[tp]}
                if short:
                    end.update(await fetched_ends(self._bootstrap_servers, short))
        except (KafkaError, TimeoutError) as exc:
            log.warning("could not read the partitions' bounds; resuming at the stored positions", error=str(exc)[:200])
            return {}
        return {tp: (first[tp], end[tp]) for tp in partitions if tp in first and tp in end}

    async def _rewind(self, rewound: dict[TopicPartition, tuple[int, int]]) -> None:
        """Store the rewound positions at once: stored positions otherwise only move forward, so the old ones would
        stay ahead of the new log, and a restart after it grew past them would skip the records in between."""

        async def write() -> Positions:
            # After any transaction in hand: it may still carry a position from the lost log.
            async with self._in_flight, self._engine.begin() as conn:
                await rewind_positions(conn, {(tp.topic, tp.partition): bounds for tp, bounds in rewound.items()})
            return {}

        await self._retry("rewind stored positions", write)


async def fetched_ends(bootstrap_servers: str, reported: dict[TopicPartition, int]) -> dict[TopicPartition, int]:
    """Each partition's end as a fetch response states it (its high watermark), fetching at the `reported` end.

    A record exists just before any end a broker reports, so a fetch there answers at once, with the high
    watermark; at an empty partition's 0 the broker answers when `fetch_max_wait_ms` is up. A partition the fetch
    does not answer for keeps its reported end.
    """
    probe = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=PROBE_WAIT_MS,
    )
    await probe.start()
    try:
        probe.assign(list(reported))
        for tp, end in reported.items():
            probe.seek(tp, max(end - 1, 0))
        ends = dict(reported)
        deadline = asyncio.get_running_loop().time() + BOUNDS_TIMEOUT_SECONDS
        while any(probe.highwater(tp) is None for tp in reported) and asyncio.get_running_loop().time() < deadline:
            await probe.getmany(timeout_ms=PROBE_WAIT_MS * 2, max_records=len(reported))
        for tp in reported:
            mark = probe.highwater(tp)
            if mark is not None:
                ends[tp] = max(mark, reported[tp])
        return ends
    finally:
        await probe.stop()
