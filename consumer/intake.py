"""What the consumer has taken from the broker and not yet committed, and when it must let go of it.

*In hand* are the records the Kafka client has handed over (`getmany` returned them) whose transaction has not
committed: the decoded fetch being applied and, while the consumer is behind, the next fetch decoding in a worker
thread. Beyond them the client keeps, per assigned partition, its position: the offset of the next record it will
hand over.

The invariant: while the intake is *sought* (no rebalance under way, and every assigned partition sought to its
stored position since the latest assignment), each assigned partition's records in hand, in the order fetched and
followed by the client's position, continue its stored position exactly, with no record left out and none twice.
So applying the fetches in order, each storing its partitions' positions in the transaction that writes its rows,
reads every record after a stored position exactly once.

A rebalance breaks it: aiokafka sets the new assignment before it tells the listener, and meanwhile fetches from the
group's Kafka offsets, which are not the stored positions; records fetched before, during or just after an
assignment may be in hand, from positions that no longer hold. Hence:

- The *generation* counts assignments, and every fetch is tagged with the generation it began under. A fetch is
  *current* while its generation is the intake's and no rebalance is under way; only a current fetch is applied,
  which the runner checks under `lock` as its transaction begins.
- A revocation (every rebalance begins with one) marks the rebalance under way at once, then takes `lock`: the
  transaction in hand commits first, so a partition is handed over with its position stored, and no transaction
  begins until the assignment is done.
- After an assignment, one path (`_drop_and_seek`) drops everything in hand and seeks every assigned partition to
  its stored position (consumer.offsets): nothing in hand, the client at the stored positions, so the invariant holds
  again. A rebalance that overtakes it makes it run again once that one is done. A fetch found not current before
  (by `take`, or as its transaction begins) is just dropped: that seek follows and reads its records again.

While a transaction waits for the database, the client is polled with every partition paused, only so that the group
keeps this member. A paused partition returns nothing, so whatever such a poll returns comes from partitions
assigned during it: not current; it is let go, and the seek after that assignment reads it again.

An assignment that brings partitions this member did not hold in the one before is *gained* (`take_gained`): their
last owner may have died between a commit and its eviction, so the runner lets the cache know (the epoch changes).

The intake also bounds what the consumer holds, which is most of its memory (docs/performance.md, "The consumer's
memory"): a fetch takes at most RAS_KAFKA_MAX_BATCH_RECORDS records and about RAS_KAFKA_MAX_BATCH_BYTES of values
(a transaction's rows and statements grow with its bytes, not its record count) and, once decoded, at most
RAS_KAFKA_MAX_BATCH_ROWS rows for one table: an event may make many (a registration, one per essay), so a fetch
over that keeps only its first records and the client is sought back to the first one left out (`_cut`), which keeps
the invariant. What the client fetches ahead is RAS_KAFKA_PREFETCH_BYTES, shared among the assigned partitions
(`_share_prefetch`).

tests/consumer/test_rebalance.py places a rebalance while a fetch is outstanding, while it decodes and while its
transaction is open.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from sqlalchemy.ext.asyncio import AsyncEngine

from consumer import metrics
from consumer.offsets import resumption
from consumer.pure.decode import Record
from consumer.pure.fetch import DecodedFetch, Partition, decode_fetch
from consumer.pure.mapping import Rows
from db.errors import is_transient
from infra.backoff import Backoff
from infra.settings import Settings

log = structlog.get_logger(__name__)
T = TypeVar("T")
# At least this share of the most records a transaction may hold, still on the broker after a fetch, means the
# consumer is behind: the next fetch is then decoded while this one is applied (see `take`).
BACKLOG_SHARE = 0.1


class Stopping(Exception):
    """Raised inside a retry wait when shutdown was requested: the pending work stays uncommitted."""


@dataclass(frozen=True, slots=True)
class Fetched:
    """A decoded fetch, the generation it was fetched under, when the client handed it over (wall clock, to compare
    with the records' Kafka timestamps), and when its decoding began and ended (`time.time_ns`, for its span when
    traced: it ran in a worker thread, before the transaction's span began)."""

    decoded: DecodedFetch
    generation: int
    fetched_at: float
    decode_started_ns: int = 0
    decode_ended_ns: int = 0
    # Per partition, the first record fetched but left out for too many rows (`Intake._cut`): the client reads on there.
    left_out: dict[Partition, int] = field(default_factory=dict)


class Intake(ConsumerRebalanceListener):  # type: ignore[misc]
    """The consumer's records in hand and the assignment they were fetched under; the client's rebalance listener."""

    def __init__(
        self,
        kafka: AIOKafkaConsumer,
        engine: AsyncEngine,
        settings: Settings,
        stop: asyncio.Event,
        traced: bool = False,
    ) -> None:
        self._kafka = kafka
        self._traced = traced  # decode keeping each event's trace context (consumer.pure.trace_context)
        self._engine = engine
        self._settings = settings
        self._stop = stop
        self.lock = asyncio.Lock()  # held by the transaction in hand; a revocation waits for it
        self.assigned = asyncio.Event()  # set once partitions were first assigned (readiness)
        self._settled = asyncio.Event()  # clear while a rebalance is under way (and before the first assignment)
        self._generation = 0
        self._sought = 0  # the generation whose assignment `_drop_and_seek` last sought to the stored positions
        self._decoding: asyncio.Future[Fetched] | None = None
        self._held: frozenset[TopicPartition] = frozenset()  # the latest assignment
        self._gained = False  # it brought a partition the one before did not hold; not yet taken
        self._can_share: bool | None = None  # checked at the first assignment: the client has a fetcher by then

    @property
    def generation(self) -> int:
        return self._generation

    @property
    def settled(self) -> bool:
        """No rebalance is under way."""
        return self._settled.is_set()

    def current(self, fetched: Fetched) -> bool:
        """Whether `fetched` may still be applied: no rebalance began since it was fetched."""
        return fetched.generation == self._generation and self.settled

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        self._settled.clear()
        async with self.lock:
            log.info("partitions revoked", partitions=sorted(f"{tp.topic}:{tp.partition}" for tp in revoked))

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        self._share_prefetch(len(assigned))
        self._generation += 1
        now = frozenset(assigned)
        self._gained = self._gained or not now <= self._held
        self._held = now
        self._settled.set()
        self.assigned.set()

    async def take(self) -> Fetched | None:
        """The next fetch to apply, decoded and current; None when there is none yet (the caller asks again). When
        the consumer is behind, the fetch after it is taken from what the client already holds and decoded in a
        worker thread meanwhile."""
        if not self.settled or self._sought != self._generation:
            await self._drop_and_seek()
            return None
        if self._decoding is None:
            self._decoding = await self._fetch(self._settings.kafka_fetch_timeout_ms, fresh=True)
            if self._decoding is None:
                return None
        taken = await self._decoding
        if taken.left_out and self.current(taken):
            for (topic, partition), offset in taken.left_out.items():
                self._kafka.seek(TopicPartition(topic, partition), offset)
        # Behind, the next fetch is taken from what the client holds and decoded in a worker thread while this one is
        # applied. Caught up, that would make every record wait for a whole extra transaction (the one it was
        # decoded beside); so the client keeps its records, and the next take hands them over after this commit,
        # with all that arrived meanwhile.
        self._decoding = await self._fetch(0) if self._behind(taken) else None
        if not self.current(taken):
            self.let_go(taken)
            return None  # the next call lets go of the fetch after it too, and seeks
        return taken

    def take_gained(self) -> bool:
        """Whether an assignment gained partitions since the last call (see the module's docstring)."""
        gained, self._gained = self._gained, False
        return gained

    def _behind(self, fetched: Fetched) -> bool:
        """Whether records after `fetched` wait: some it left out, or, as far as the client knows (each partition's
        high watermark as of its latest fetch), a share of RAS_KAFKA_MAX_BATCH_RECORDS or more on the broker. A large
        fetch that took all there was is caught up: decoding the next one beside it would only bring the few records
        that came in meanwhile, a whole transaction later."""
        if fetched.left_out:
            return True
        waiting, assigned = 0, self._kafka.assignment()
        for (topic, partition), consumed in fetched.decoded.next_offsets.items():
            tp = TopicPartition(topic, partition)
            mark = self._kafka.highwater(tp) if tp in assigned else None  # known for assigned partitions only
            waiting += max(0, mark - consumed) if mark is not None else 0
        return waiting >= max(1, int(self._settings.kafka_max_batch_records * BACKLOG_SHARE))

    def _share_prefetch(self, partitions: int) -> None:
        """Give each of `partitions` assigned partitions an equal share of RAS_KAFKA_PREFETCH_BYTES to fetch ahead.

        aiokafka fetches every assigned partition whose buffer is empty, each up to its per-partition size, so what
        it holds ahead is that size times the partitions assigned, however small each response is: with one size
        for all (the largest record, 1 MiB) a member holding W1's 32 partitions held ~30 MiB. The client takes the
        size only at construction, hence the private attribute; tests/consumer/test_prefetch.py holds it to the
        bound against a real broker. A record larger than its partition's share is still fetched whole (brokers
        return a partition's first record batch whatever the size, KIP-74)."""
        if self._can_share is None:
            self._can_share = can_share_prefetch(self._kafka)
            if not self._can_share:
                log.warning(
                    "aiokafka's fetcher has no per-partition fetch size to share; the prefetch is bounded per fetch "
                    "response only",
                    hint="run the aiokafka versions pyproject.toml fences",
                )
        if not self._can_share:
            return
        share = max(1, self._settings.kafka_prefetch_bytes // max(1, partitions))
        self._kafka._fetcher._max_partition_fetch_bytes = share

    def let_go(self, fetched: Fetched) -> None:
        """Drop `fetched` (no longer current, or at shutdown): its records are read again from the stored positions."""
        log.info("fetch let go, to be read again from the stored positions", records=len(fetched.decoded.records))

    async def close(self) -> None:
        """Let go of the fetch decoding, if any, once its thread is done: a thread cannot be cancelled."""
        if self._decoding is not None:
            await asyncio.wait([self._decoding])
            if not self._decoding.cancelled() and self._decoding.exception() is None:
                self.let_go(self._decoding.result())
            self._decoding = None

    async def retrying(self, what: str, attempt: Callable[[], Awaitable[T]]) -> T:
        """`attempt()` until it does not fail for want of the database; between tries, with exponential backoff,
        every partition is paused and the client polled (see the module's docstring)."""
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
                await self._wait_paused(delay)
                continue
            if backoff.attempt:
                self._resume()
            return result

    async def _fetch(self, wait_ms: int, *, fresh: bool = False) -> asyncio.Future[Fetched] | None:
        """What the client hands over within `wait_ms`, being decoded in a worker thread; None if nothing.

        `fresh`: with the records that reached the broker since the client last fetched, too. The client fetches no
        partition of a broker while records it fetched from there wait in its buffer, so what it holds after a
        transaction arrived in that transaction's first moments; what arrived later is still on the broker and would
        wait a whole further transaction. So when records were waiting, taking them lets the client fetch again, and
        that fetch is waited for as well, at most RAS_KAFKA_FETCH_MAX_WAIT_MS (the broker answers at once when it has
        records): both go into one fetch, in the order fetched, within the same limits."""
        generation = self._generation  # a rebalance between the steps below makes the whole fetch not current
        fetched = await self._take_records(0 if fresh else wait_ms)
        if fresh:
            fetched = await self._take_records(self._settings.kafka_fetch_max_wait_ms if fetched else wait_ms, fetched)
        if not fetched:
            return None
        return asyncio.ensure_future(asyncio.to_thread(self._decode, fetched, generation, time.time()))

    async def _take_records(self, wait_ms: int, after: Sequence[ConsumerRecord] = ()) -> list[ConsumerRecord]:
        """`after` and the records the client hands over within `wait_ms`: up to RAS_KAFKA_MAX_BATCH_RECORDS, and
        until their values reach RAS_KAFKA_MAX_BATCH_BYTES. The client cannot stop at a byte count, so they are taken
        in steps of a tenth of the records; a fetch ends at most one step past the bytes."""
        most, budget = self._settings.kafka_max_batch_records, self._settings.kafka_max_batch_bytes
        step = max(1, int(most * BACKLOG_SHARE))
        taken = list(after)
        size = _value_bytes(taken)
        wait = wait_ms
        while len(taken) < most and size < budget:
            batches = await self._kafka.getmany(timeout_ms=wait, max_records=min(step, most - len(taken)))
            records = [m for messages in batches.values() for m in messages]
            if not records:
                break
            taken += records
            size += _value_bytes(records)
            wait = 0
        return taken

    def _decode(self, fetched: Sequence[ConsumerRecord], generation: int, fetched_at: float) -> Fetched:
        started = time.time_ns()
        records = [Record(m.topic, m.partition, m.offset, m.key, m.value, m.timestamp, m.headers) for m in fetched]
        decoded = decode_fetch(records, self._settings.max_message_bytes, self._traced)
        kept = self._cut(decoded)
        left_out: dict[Partition, int] = {}
        for r in records[len(kept.records) :]:  # each partition's records in order: its first is its lowest
            left_out.setdefault((r.topic, r.partition), r.offset)
        return Fetched(kept, generation, fetched_at, started, time.time_ns(), left_out)

    def _cut(self, decoded: DecodedFetch) -> DecodedFetch:
        """`decoded`, or the first half of its records, again, until no table gets more than RAS_KAFKA_MAX_BATCH_ROWS
        rows (or one record is left): each table's rows are one statement, whose parameters are the transaction's
        largest allocations. Decoding again costs only the rare fetch so cut."""
        most = self._settings.kafka_max_batch_rows
        while len(decoded.records) > 1 and _largest_table(decoded.rows) > most:
            decoded = decoded.part(decoded.records[: len(decoded.records) // 2])
        return decoded

    async def _drop_and_seek(self) -> None:
        """Let go of everything in hand and seek every assigned partition to its stored position."""
        await self.close()
        if not self.settled:
            # The assignment under way is followed by a seek anyway; wait for it, but not past a shutdown's notice.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._settings.kafka_fetch_timeout_ms / 1000):
                    await self._settled.wait()
            return
        generation, partitions = self._generation, self._kafka.assignment()
        resume = await resumption(
            self._kafka, self._settings.kafka_bootstrap_servers, self._engine, partitions, self.retrying
        )
        if generation != self._generation or not self.settled:
            return  # overtaken by a rebalance: sought again after it
        for tp, offset in resume.offsets.items():
            self._kafka.seek(tp, offset)
        if resume.fresh:
            reset = self._settings.kafka_auto_offset_reset == "latest"
            await (self._kafka.seek_to_end if reset else self._kafka.seek_to_beginning)(*resume.fresh)
        self._sought = generation
        log.info(
            "partitions assigned",
            partitions=len(partitions),
            stored=len(resume.offsets),
            fresh=len(resume.fresh),
            rewound=resume.rewound,
            generation=generation,
        )

    async def _wait_paused(self, delay: float) -> None:
        """Sleep `delay` while polling with every partition paused, so the group keeps this member."""
        if self._stop.is_set():
            raise Stopping
        assigned = self._kafka.assignment()
        if not assigned:
            await asyncio.sleep(delay)
            return
        self._kafka.pause(*assigned)
        metrics.PAUSED.set(1)
        await self._kafka.getmany(timeout_ms=int(delay * 1000))  # not current, if anything: let go

    def _resume(self) -> None:
        paused = self._kafka.paused()
        if paused:
            self._kafka.resume(*paused)
        metrics.PAUSED.set(0)
        log.info("database reachable again, partitions resumed")


def can_share_prefetch(kafka: AIOKafkaConsumer) -> bool:
    """Whether this aiokafka has the private per-partition fetch size `Intake._share_prefetch` sets (pyproject.toml
    fences the versions it was tested on). Without it the prefetch is bounded by the public settings the client was
    built with, RAS_KAFKA_PREFETCH_BYTES per fetch response, only not shared among the partitions."""
    fetcher = getattr(kafka, "_fetcher", None)
    return isinstance(getattr(fetcher, "_max_partition_fetch_bytes", None), int)


def _value_bytes(records: Sequence[ConsumerRecord] | Sequence[Record]) -> int:
    return sum(len(r.value) for r in records if r.value is not None)


def _largest_table(rows: Rows) -> int:
    return max(map(len, (rows.registrations, rows.batch_facts, rows.essay_slots, rows.essay_links, rows.phase_results)))
