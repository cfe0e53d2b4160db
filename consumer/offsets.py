"""Where each assigned partition resumes: the position stored with the projection, never Kafka's own commit.

The projection's transaction stores the next offset of every partition it consumed, so the database alone knows
which records its rows reflect. On assignment the consumer seeks there; a partition with no stored position
starts from the beginning (or the end, if so configured), even when Kafka holds a committed offset for the
group — that offset may belong to a different database.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from sqlalchemy.ext.asyncio import AsyncEngine

from db.positions import load_positions

log = structlog.get_logger(__name__)
Positions = dict[tuple[str, int], int]


class PositionListener(ConsumerRebalanceListener):  # type: ignore[misc]
    """Seeks newly assigned partitions to their stored positions.

    `in_flight` is held while a transaction is being applied: revocation waits for it, so a partition is handed
    to another consumer only after the records already taken from it are committed.
    """

    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        engine: AsyncEngine,
        in_flight: asyncio.Lock,
        start_from_end: bool,
        retry: Callable[[str, Callable[[], Awaitable[Positions]]], Awaitable[Positions]],
        on_assigned: Callable[[], None],
    ) -> None:
        self._consumer = consumer
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
        fresh = []
        for tp in assigned:
            offset = stored.get((tp.topic, tp.partition))
            if offset is None:
                fresh.append(tp)
            else:
                self._consumer.seek(tp, offset)
        if fresh:
            seek = self._consumer.seek_to_end if self._start_from_end else self._consumer.seek_to_beginning
            await seek(*fresh)
        log.info("partitions assigned", stored=len(stored), fresh=len(fresh))
        self._on_assigned()
