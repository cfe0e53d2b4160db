"""Behind or caught up: decided by what still waits on the broker after a fetch, not by the fetch's size
(consumer.intake.Intake._behind)."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from aiokafka import TopicPartition

from consumer.intake import Fetched, Intake
from consumer.pure.decode import Record
from consumer.pure.fetch import decode_fetch
from consumer.pure.topics import ESSAY_SPELLCHECK_COMPLETED as TOPIC
from infra.settings import Settings

MOST = 1_000  # records a transaction may hold: behind from 100 waiting


class Marks:
    """The client's assignment and high watermarks, as a fake of the two methods `_behind` asks."""

    def __init__(self, marks: dict[int, int]) -> None:
        self._marks = marks

    def highwater(self, tp: TopicPartition) -> int | None:
        assert tp.partition in self._marks, "the client asserts a partition is assigned"
        return self._marks[tp.partition]

    def assignment(self) -> set[TopicPartition]:
        return {TopicPartition(TOPIC, partition) for partition in self._marks}


def fetched(per_partition: dict[int, int]) -> Fetched:
    """A fetch of `n` records from offset 0 of each partition."""
    records = [
        Record(TOPIC, partition, offset, b"k", b"not json", 0, [])
        for partition, n in per_partition.items()
        for offset in range(n)
    ]
    return Fetched(decode_fetch(records, 1_024), generation=1, fetched_at=0.0)


def intake(marks: dict[int, int]) -> Intake:
    settings = Settings(database_url="postgresql+asyncpg://unused/ras", kafka_max_batch_records=MOST)
    return Intake(cast(Any, Marks(marks)), cast(Any, None), settings, asyncio.Event())


def test_a_large_fetch_that_took_all_there_was_is_caught_up() -> None:
    assert not intake({0: 400, 1: 300})._behind(fetched({0: 400, 1: 300}))


def test_records_waiting_on_the_broker_after_a_fetch_mean_behind() -> None:
    assert intake({0: 60, 1: 60})._behind(fetched({0: 10, 1: 10}))  # 100 waiting


def test_a_few_records_arriving_meanwhile_leave_it_caught_up() -> None:
    assert not intake({0: 30, 1: 30})._behind(fetched({0: 10, 1: 10}))  # 40 waiting


def test_a_partition_no_longer_assigned_counts_nothing() -> None:
    assert not intake({})._behind(fetched({0: 10}))
