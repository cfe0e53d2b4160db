"""Where each assigned partition resumes: the position stored with the projection, never Kafka's own commit.

The projection's transaction stores the next offset of every partition it consumed, so the database alone knows
which records its rows reflect. After every assignment the consumer seeks there (consumer.intake); a partition
with no stored position starts from the beginning (or the end, if so configured), even when Kafka holds a
committed offset for the group — that offset may belong to a different database.

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
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Protocol, TypeVar

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from sqlalchemy.ext.asyncio import AsyncEngine

from db.positions import load_positions, rewind_positions

log = structlog.get_logger(__name__)
T = TypeVar("T")
# Asking the broker for the partitions' bounds must not hold up an assignment for the client's 40 s request timeout.
BOUNDS_TIMEOUT_SECONDS = 10.0
# How long the probe's fetch at an empty partition waits for records before the broker answers.
PROBE_WAIT_MS = 100


class Retry(Protocol):
    """Runs a database step until the database answers (consumer.intake.Intake.retrying)."""

    def __call__(self, what: str, attempt: Callable[[], Awaitable[T]]) -> Awaitable[T]: ...


@dataclass(frozen=True, slots=True)
class Resumption:
    """Where each partition of an assignment resumes."""

    offsets: dict[TopicPartition, int]  # its stored position, checked against its log
    fresh: list[TopicPartition]  # no stored position: the beginning of its log (or the end, if so configured)
    rewound: int  # how many partitions had lost their log and are read again from its beginning


async def resumption(
    consumer: AIOKafkaConsumer,
    bootstrap_servers: str,
    engine: AsyncEngine,
    partitions: Iterable[TopicPartition],
    retry: Retry,
) -> Resumption:
    """Where `partitions` resume: their stored positions, checked against their logs. A lost log's stored
    position is rewound in the database at once."""
    assigned = list(partitions)

    async def load() -> dict[tuple[str, int], int]:
        async with engine.connect() as conn:
            return await load_positions(conn, [(tp.topic, tp.partition) for tp in assigned])

    stored = await retry("load stored positions", load)
    at = {tp: stored[(tp.topic, tp.partition)] for tp in assigned if (tp.topic, tp.partition) in stored}
    bounds = await _log_bounds(consumer, bootstrap_servers, at)
    rewound: dict[TopicPartition, tuple[int, int]] = {}
    for tp, offset in at.items():
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
            at[tp] = first
        elif offset < first:
            log.warning(
                "records deleted by retention before they were applied; resuming at the partition's first record",
                partition=name,
                stored=offset,
                beginning=first,
                lost=first - offset,
            )
            at[tp] = first
    if rewound:
        await _rewind(engine, rewound, retry)
    return Resumption(at, [tp for tp in assigned if tp not in at], len(rewound))


async def _log_bounds(
    consumer: AIOKafkaConsumer, bootstrap_servers: str, stored: dict[TopicPartition, int]
) -> dict[TopicPartition, tuple[int, int]]:
    """First and end offset of each partition; empty (nothing checked) when the broker cannot say."""
    partitions = list(stored)
    if not partitions:
        return {}
    try:
        async with asyncio.timeout(BOUNDS_TIMEOUT_SECONDS):
            first = await consumer.beginning_offsets(partitions)
            end = await consumer.end_offsets(partitions)
            short = {tp: end[tp] for tp in partitions if tp in end and stored[tp] > end[tp]}
            if short:
                end.update(await fetched_ends(bootstrap_servers, short))
    except (KafkaError, TimeoutError) as exc:
        log.warning("could not read the partitions' bounds; resuming at the stored positions", error=str(exc)[:200])
        return {}
    return {tp: (first[tp], end[tp]) for tp in partitions if tp in first and tp in end}


async def _rewind(engine: AsyncEngine, rewound: dict[TopicPartition, tuple[int, int]], retry: Retry) -> None:
    """Store the rewound positions at once: stored positions otherwise only move forward, so the old ones would
    stay ahead of the new log, and a restart after it grew past them would skip the records in between."""

    async def write() -> None:
        async with engine.begin() as conn:
            await rewind_positions(conn, {(tp.topic, tp.partition): bounds for tp, bounds in rewound.items()})

    await retry("rewind stored positions", write)


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
