"""Events for tests: the platform's envelopes for all eight topics, as records, projected into a test database.

The envelope builders are devstack.demo's (each starts from the platform's own example payload and changes only ids,
counts and stamps); this module re-exports them and adds what tests need around them:

* `records` numbers messages into broker records (partition by key, offsets per partition);
* `project` applies messages to a database through the real projection (consumer.apply);
* `fixture_messages` is every consumed fixture file of one generation;
* `teacher_batches` is many complete batches of one teacher, for volume tests;
* `running_batch` is one batch still in its pipelines, half its essays spellchecked.

Builders by topic: 1 `registered`, 2 `slot_assigned`, 3 `phase_outcome`, 4 and 6 `spellchecked` (gen 1 / gen 2),
5 `cj_completed` (gen 1, with rankings) and `cj_thin` (gen 2, ignored by RAS), 7 `cj_completed` (gen 2),
8 `pipeline_completed`.
"""

from __future__ import annotations

import random
import uuid
import zlib
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncEngine

from consumer.apply import Applied, apply_fetch
from consumer.pure import topics
from consumer.pure.decode import Record
from consumer.pure.fetch import decode_fetch
from devstack.demo import (
    EPOCH,
    Message,
    batch_life,
    cj_completed,
    cj_thin,
    phase_outcome,
    pipeline_completed,
    registered,
    slot_assigned,
    spellchecked,
    with_resends,
)
from tests.helpers.scenario import fixture_messages as _fixture_files

__all__ = [
    "EPOCH",
    "Message",
    "batch_life",
    "cj_completed",
    "cj_thin",
    "fixture_messages",
    "phase_outcome",
    "pipeline_completed",
    "project",
    "records",
    "registered",
    "running_batch",
    "slot_assigned",
    "spellchecked",
    "teacher_batches",
    "with_resends",
]

MAX_BYTES = 1_048_576


def records(messages: Sequence[Message], partitions: int = 1) -> list[Record]:
    """Broker records: partition chosen from the key (stable, like Kafka's), offsets counted per partition."""
    next_offset: dict[tuple[str, int], int] = defaultdict(int)
    out = []
    for m in messages:
        partition = zlib.crc32(m.key) % partitions
        offset = next_offset[(m.topic, partition)]
        next_offset[(m.topic, partition)] = offset + 1
        out.append(Record(m.topic, partition, offset, m.key, m.value, int(m.at.timestamp() * 1000)))
    return out


async def project(engine: AsyncEngine, messages: Sequence[Message], partitions: int = 1) -> Applied:
    """Apply the messages in one transaction, as the consumer would."""
    async with engine.begin() as conn:
        return await apply_fetch(conn, decode_fetch(records(messages, partitions), MAX_BYTES))


def fixture_messages(gen: str) -> list[Message]:
    """Every fixture of one generation on a topic RAS consumes, as messages stamped with their event time."""
    out = []
    for _name, topic, key, value in _fixture_files(gen):
        if topic in topics.ALL_TOPICS:
            out.append(Message(topic, key, value, EPOCH))
    return out


def teacher_batches(
    user_id: str, batches: int, essays: int, gen: str = "gen2", seed: int = 7, start: datetime = EPOCH
) -> list[Message]:
    """`batches` complete batches of `essays` essays each, registered a minute apart, no failures."""
    rng = random.Random(f"{seed}/{user_id}")
    messages: list[Message] = []
    for i in range(batches):
        messages += batch_life(rng, gen, user_id, essays, 0.0, start + timedelta(minutes=i))
    return messages


def running_batch(user_id: str, essays: int, seed: int = 7, start: datetime = EPOCH) -> list[Message]:
    """A gen 2 batch of `essays` essays in `processing_pipelines`, the first half of them spellchecked."""
    rng = random.Random(f"{seed}/{user_id}/running")
    batch_id = str(uuid.UUID(int=rng.getrandbits(128)))
    essay_ids = [str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(essays)]
    messages = [registered("gen2", batch_id, user_id, essay_ids, start)]
    messages += [slot_assigned("gen2", batch_id, e, start + timedelta(seconds=1)) for e in essay_ids]
    messages.append(pipeline_completed(batch_id, 0, 0, "processing_pipelines", start + timedelta(seconds=5)))
    for n, essay_id in enumerate(essay_ids[: essays // 2]):
        messages.append(spellchecked("gen2", batch_id, essay_id, True, 3, start + timedelta(seconds=60 + n)))
    return messages
