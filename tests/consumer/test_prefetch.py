"""What the consumer holds is bounded (consumer.intake): the client's prefetch across all partitions and each
transaction's record values in bytes, and each table's rows in a transaction, against a real broker."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Sequence

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.consumer.fetcher import Fetcher
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

import consumer.apply
import consumer.intake
import consumer.pure.fetch
import consumer.runner
from consumer.apply import Applied, Positions
from consumer.pure.decode import Record
from consumer.pure.fetch import DecodedFetch, Partition
from consumer.pure.topics import ALL_TOPICS
from consumer.runner import ConsumerLoop
from infra.settings import Settings
from tests.helpers.consumer import apply, as_records, dump, in_event_order, truncate
from tests.helpers.kafka_io import Offsets, wait_for_positions
from tests.helpers.scenario import EPOCH, Message, batch_life

pytestmark = pytest.mark.kafka

PREFETCH = 65_536
BATCH_BYTES = 32_768
BATCH_RECORDS = 100  # steps of 10 records
PRODUCER_BATCH = 4_096  # what a broker may round a partition's share up to
BATCH_ROWS = 60  # a registration makes 25 (one per essay): a few of them fill a table's share
LARGE = 300_000  # one unreadable record, far larger than a partition's share of the prefetch


async def produce_in_small_batches(bootstrap: str, messages: Sequence[Message]) -> Offsets:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_batch_size=PRODUCER_BATCH)
    await producer.start()
    try:
        futures = [await producer.send(m.topic, m.value, key=m.key) for m in messages]
        ends: Offsets = {}
        for meta in await asyncio.gather(*futures):
            ends[(meta.topic, meta.partition)] = max(ends.get((meta.topic, meta.partition), 0), meta.offset + 1)
        return ends
    finally:
        await producer.stop()


def buffered_bytes(fetcher: Fetcher) -> int:
    """Bytes of the record sets the client holds fetched and not yet handed over (each held whole until drained)."""
    held = (getattr(result, "_partition_records", None) for result in fetcher._records.values())
    return sum(records._records.size_in_bytes() for records in held if records is not None)


async def test_prefetch_and_transactions_stay_within_their_bounds(
    engine: AsyncEngine, database_url: str, kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(5)
    messages: list[Message] = []
    for i in range(40):
        messages += batch_life(rng, "gen1" if i % 3 == 0 else "gen2", f"teacher-{i % 4}", 25, 0.1, EPOCH)
    messages.insert(len(messages) // 2, Message(ALL_TOPICS[0], b"large", b"x" * LARGE, EPOCH))
    ends = await produce_in_small_batches(kafka_bootstrap, messages)

    # The client's buffers grow only when a fetch response is taken in: measure right after each one.
    prefetched: list[int] = []
    proc_fetch_request = Fetcher._proc_fetch_request

    async def measured(self: Fetcher, *args: object) -> bool:
        found: bool = await proc_fetch_request(self, *args)
        prefetched.append(buffered_bytes(self))
        return found

    monkeypatch.setattr(Fetcher, "_proc_fetch_request", measured)
    fetches: list[Sequence[Record]] = []
    decode_fetch = consumer.pure.fetch.decode_fetch

    def recorded(records: Sequence[Record], max_bytes: int, traced: bool = False) -> DecodedFetch:
        fetches.append(records)
        return decode_fetch(records, max_bytes, traced)

    monkeypatch.setattr(consumer.intake, "decode_fetch", recorded)
    cuts: list[tuple[int, int]] = []  # records of each fetch decoded, and those kept
    cut_fetch = consumer.intake.Intake._cut

    def measured_cut(self: consumer.intake.Intake, decoded: DecodedFetch) -> DecodedFetch:
        kept = cut_fetch(self, decoded)
        cuts.append((len(decoded.records), len(kept.records)))
        return kept

    monkeypatch.setattr(consumer.intake.Intake, "_cut", measured_cut)
    rows: list[int] = []  # the most rows one table got in each transaction
    apply_fetch = consumer.apply.apply_fetch

    async def counted(
        conn: AsyncConnection, part: DecodedFetch, marks: dict[Partition, int], how: Positions
    ) -> Applied:
        tables = (part.rows.registrations, part.rows.batch_facts, part.rows.essay_slots, part.rows.essay_links)
        rows.append(max(map(len, (*tables, part.rows.phase_results))))
        return await apply_fetch(conn, part, marks, how)

    monkeypatch.setattr(consumer.runner, "apply_fetch", counted)

    settings = Settings(
        database_url=database_url,
        environment="development",
        kafka_bootstrap_servers=kafka_bootstrap,
        kafka_group_id=f"ras-test-{uuid.uuid4().hex[:8]}",
        kafka_session_timeout_ms=6_000,
        kafka_prefetch_bytes=PREFETCH,
        kafka_max_batch_bytes=BATCH_BYTES,
        kafka_max_batch_records=BATCH_RECORDS,
        kafka_max_batch_rows=BATCH_ROWS,
    )
    loop = ConsumerLoop(settings, engine)
    task = asyncio.create_task(loop.run())
    try:
        positions = await wait_for_positions(engine, ends, timeout=120)
    finally:
        loop.stop()
        await asyncio.wait_for(task, 30)

    assert positions == ends, "every record was read, the large one included"
    via_broker = await dump(engine)
    async with engine.connect() as conn:
        assert await conn.scalar(text("SELECT count(*) FROM quarantine")) == 1, "the large record was quarantined"

    partitions = len(ends)
    assert prefetched, "the client's buffers were measured"
    # Each partition's share, rounded up to a whole record batch, and the one record larger than any share.
    assert max(prefetched) <= PREFETCH + partitions * PRODUCER_BATCH + LARGE
    assert max(prefetched) > PREFETCH // 2, "the prefetch was filled: the bound was reached, not just not exceeded"

    sizes = [sum(len(r.value or b"") for r in records) for records in fetches]
    largest = max(len(m.value) for m in messages if len(m.value) < LARGE)
    step = BATCH_RECORDS // 10
    small = [
        size for size, records in zip(sizes, fetches, strict=True) if all(len(r.value or b"") < LARGE for r in records)
    ]
    assert max(small) <= BATCH_BYTES + step * largest, "a fetch ends within one step of the bytes"
    cut = [records for size, records in zip(sizes, fetches, strict=True) if size >= BATCH_BYTES]
    assert any(len(records) < BATCH_RECORDS for records in cut), "some fetches were cut by bytes, not records"

    # Fetches cut for their rows were read on from the first record left out: nothing lost, nothing twice.
    assert max(rows) <= BATCH_ROWS
    assert any(kept < whole for whole, kept in cuts), "some fetch was cut for its rows"
    await truncate(engine)
    await apply(engine, as_records(in_event_order([m for m in messages if len(m.value) < LARGE])))
    assert via_broker == await dump(engine)
