"""Bad events: whatever arrives on the eight topics, the consumer keeps going, every unusable record lands in
quarantine with its reason, and the valid events around it are applied.

Two layers:

* a hypothesis property over the projection itself (decode → rows → one transaction, consumer/apply.py) against
  real PostgreSQL: generated garbage and mutated real fixtures next to a valid stream, every outcome accounted for;
* a real `ras consume` process reading a real broker, fed valid batches interleaved with garbage on every topic
  (a 5 MB message, invalid UTF-8, JSON bombs, integers beyond int8, NUL characters…): it must never exit, reach the
  end of every partition, quarantine exactly the bad records, and build the tables the valid events alone build.

A value PostgreSQL itself refuses (an integer beyond its column, a NUL in text) makes the whole transaction fail;
consumer/runner.py then splits the batch until the one record is found and quarantines it. The property checks
the premise of that (the record alone fails, the rest alone applies); the process run checks the isolation.

One module (about 600 lines): both layers share the bad records (the hypothesis strategy and the hand-made stream
build them from the same templates and mutations), which are most of it.
"""

from __future__ import annotations

import asyncio
import copy
import random
import signal
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import psutil
import pytest
from aiokafka import AIOKafkaProducer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from consumer.apply import Applied, apply_fetch
from consumer.pure import contracts as c
from consumer.pure import topics as t
from consumer.pure.decode import Record, decode
from consumer.pure.fetch import decode_fetch
from db.errors import is_data_error
from devstack.demo import batch_life
from tests.helpers import figures
from tests.helpers.consumer import apply, as_records, dump, in_event_order, truncate
from tests.helpers.events import EPOCH, MAX_BYTES, Message, fixture_messages, phase_outcome
from tests.helpers.kafka_io import stored_positions
from tests.helpers.processes import RasProcess, free_port

# --- what the mutations start from --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Template:
    """A real fixture envelope and the model it decodes to."""

    topic: str
    key: bytes
    envelope: dict[str, Any]
    model: type[c.WireModel]


def _templates() -> list[Template]:
    out = []
    for gen in ("gen1", "gen2"):
        for message in fixture_messages(gen):
            event = decode(Record(message.topic, 0, 0, message.key, message.value), MAX_BYTES)
            if event is not None:  # the thin gen 2 CJ event is ignored whatever it holds
                out.append(Template(message.topic, message.key, orjson.loads(message.value), type(event.payload)))
    return out


TEMPLATES = _templates()
# Fields whose presence picks the model (README, "Topics decide the model"): without them an event is read as the
# other generation or as the ignored thin CJ event, which is correct, not a quarantine.
DISCRIMINATORS = {"essay_instructions", "original_file_name", "rankings"}
# Enum-valued text: a value the platform adds later must be stored, never quarantined.
ENUM_PATHS: dict[type[c.WireModel], list[tuple[str | int, ...]]] = {
    c.BatchEssaysRegisteredGen1: [("course_code",), ("metadata", "entity_type")],
    c.BatchEssaysRegisteredGen2: [("course_code",), ("metadata", "entity_type")],
    c.EssaySlotAssignedGen1: [],
    c.EssaySlotAssignedGen2: [],
    c.ELSBatchPhaseOutcome: [("phase_name",), ("phase_status",)],
    c.SpellcheckResultDataGen1: [("status",), ("system_metadata", "processing_stage")],
    c.SpellcheckResultGen2: [("status",), ("system_metadata", "processing_stage")],
    c.CJAssessmentCompletedGen1: [("status",)],
    c.AssessmentResultGen2: [("essay_results", 0, "letter_grade"), ("essay_results", 0, "confidence_label")],
    c.BatchPipelineCompletedGen2: [("final_status",), ("completed_phases", 0)],
}
# Integers that land in int4 columns, and text that lands in text or jsonb: where PostgreSQL has the last word.
INT_COLUMNS: dict[type[c.WireModel], tuple[str | int, ...]] = {
    c.BatchEssaysRegisteredGen1: ("expected_essay_count",),
    c.BatchEssaysRegisteredGen2: ("expected_essay_count",),
    c.SpellcheckResultDataGen1: ("corrections_made",),
    c.SpellcheckResultGen2: ("corrections_made",),
    c.CJAssessmentCompletedGen1: ("rankings", 0, "rank"),
    c.AssessmentResultGen2: ("essay_results", 0, "rank"),
}
TEXT_COLUMNS: dict[type[c.WireModel], tuple[str | int, ...]] = {
    c.BatchEssaysRegisteredGen1: ("user_id",),
    c.BatchEssaysRegisteredGen2: ("course_code",),
    c.EssaySlotAssignedGen1: ("file_upload_id",),
    c.EssaySlotAssignedGen2: ("original_file_name",),
    c.ELSBatchPhaseOutcome: ("phase_name",),
    c.SpellcheckResultDataGen1: ("status",),
    c.SpellcheckResultGen2: ("processor_version",),
    c.CJAssessmentCompletedGen1: ("status",),
    c.AssessmentResultGen2: ("essay_results", 0, "letter_grade"),
    c.BatchPipelineCompletedGen2: ("final_status",),
}


def _set(document: dict[str, Any], path: Sequence[str | int], value: Any) -> None:
    target: Any = document
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value


def _leaves(value: Any, path: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    if isinstance(value, dict) and value:
        return [leaf for k, v in value.items() for leaf in _leaves(v, (*path, k))]
    if isinstance(value, list) and value:
        return [leaf for i, v in enumerate(value) for leaf in _leaves(v, (*path, i))]
    return [path]


def _nested_under(envelope: dict[str, Any], name: str, depth: int) -> bytes:
    """The envelope with `data[name]` a list nested `depth` deep, written by hand: orjson writes only 254 levels."""
    marker = "nested-" + uuid.uuid4().hex
    envelope["data"][name] = marker
    return orjson.dumps(envelope).replace(f'"{marker}"'.encode(), b"[" * depth + b"]" * depth)


def _required(model: type[c.WireModel]) -> list[str]:
    return [name for name, f in model.model_fields.items() if f.is_required() and name not in DISCRIMINATORS]


# --- bad records ------------------------------------------------------------------------------------------------

QUARANTINE, ACCEPT, REFUSED, ANY = "quarantine", "accept", "refused", "any"


@dataclass(frozen=True)
class Bad:
    kind: str
    topic: str
    key: bytes | None
    value: bytes | None
    expect: str  # QUARANTINE, ACCEPT (applied or ignored), REFUSED (by PostgreSQL), ANY
    reason: str = ""  # part of the quarantine reason, when one is expected
    timestamp_ms: int | None = None


JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
# An unknown enum value: any text PostgreSQL can hold (no NUL, no lone surrogate).
NEW_VALUE = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), min_size=1, max_size=30)
KINDS = [
    "garbage",
    "not an object",
    "random object",
    "tombstone",
    "invalid UTF-8",
    "missing field",
    "wrong type",
    "envelope field missing",
    "unknown enum value",
    "random value at a leaf",
    "huge string",
    "deep nesting",
    "timestamp out of range",
    "absurd broker timestamp",
    "integer beyond its column",
    "NUL in text",
]


def _dumped(envelope: dict[str, Any]) -> bytes:
    return orjson.dumps(envelope)


@st.composite
def bad_records(draw: st.DrawFn) -> Bad:
    kind = draw(st.sampled_from(KINDS))
    template = draw(st.sampled_from(TEMPLATES))
    topic, key, model = template.topic, template.key, template.model
    envelope = copy.deepcopy(template.envelope)
    data = envelope["data"]
    if kind == "garbage":
        return Bad(kind, topic, key, draw(st.binary(max_size=300)), QUARANTINE)
    if kind == "not an object":
        value = draw(st.lists(JSON_SCALARS, max_size=3) | JSON_SCALARS)
        return Bad(kind, topic, key, orjson.dumps(value), QUARANTINE, "envelope is a JSON")
    if kind == "random object":
        document = draw(st.dictionaries(st.text(max_size=10), JSON_VALUES, max_size=5))
        return Bad(kind, topic, key, orjson.dumps(document), QUARANTINE, "envelope")
    if kind == "tombstone":
        return Bad(kind, topic, key, None, QUARANTINE, "tombstone")
    if kind == "invalid UTF-8":
        raw = _dumped(envelope)
        at = draw(st.integers(0, len(raw)))
        junk = draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80"]))
        return Bad(kind, topic, key, raw[:at] + junk + raw[at:], QUARANTINE, "not valid JSON")
    if kind == "missing field":
        name = draw(st.sampled_from(_required(model)))
        del data[name]
        return Bad(kind, topic, key, _dumped(envelope), QUARANTINE, f"{name}: Field required")
    if kind == "wrong type":
        name = draw(st.sampled_from(_required(model)))
        data[name] = [{"unexpected": [1, 2]}]
        return Bad(kind, topic, key, _dumped(envelope), QUARANTINE, name)
    if kind == "envelope field missing":
        name = draw(st.sampled_from(["event_type", "source_service", "data"]))
        del envelope[name]
        return Bad(kind, topic, key, _dumped(envelope), QUARANTINE, f"envelope.{name}: Field required")
    if kind == "unknown enum value":
        paths = [("event_type",), *[("data", *p) for p in ENUM_PATHS[model]]]
        _set(envelope, draw(st.sampled_from(paths)), draw(NEW_VALUE))
        return Bad(kind, topic, key, _dumped(envelope), ACCEPT)
    if kind == "random value at a leaf":
        _set(data, draw(st.sampled_from(_leaves(data))), draw(JSON_VALUES))
        return Bad(kind, topic, key, _dumped(envelope), ANY)
    if kind == "huge string":
        strings = [p for p in _leaves(data) if isinstance(_get(data, p), str)]
        size = draw(st.sampled_from([60_000, 1_100_000]))
        _set(data, draw(st.sampled_from(strings)), "x" * size)
        raw = _dumped(envelope)
        if len(raw) > MAX_BYTES:
            return Bad(kind, topic, key, raw, QUARANTINE, f"over the {MAX_BYTES}-byte limit")
        return Bad(kind, topic, key, raw, ANY)
    if kind == "deep nesting":
        depth = draw(st.sampled_from([50, 400, 1_100]))
        raw = _nested_under(envelope, "nested_junk", depth)
        if depth < 250:
            return Bad(kind, topic, key, raw, ACCEPT)
        # orjson reads 1,024 levels but writes only 254: between the two, the payload cannot get its digest.
        return Bad(kind, topic, key, raw, QUARANTINE, "re-encoded" if depth < 1_000 else "not valid JSON")
    if kind == "timestamp out of range":
        # Valid ISO 8601 that leaves the datetime range once converted to UTC.
        envelope["event_timestamp"] = draw(st.sampled_from(["0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-05:00"]))
        return Bad(kind, topic, key, _dumped(envelope), QUARANTINE, "outside the representable range")
    if kind == "absurd broker timestamp":
        stamp = draw(st.sampled_from([2**62, -(2**62), 2**63 - 1, 253_402_300_800_000]))
        return Bad(kind, topic, key, _dumped(envelope), ACCEPT, timestamp_ms=stamp)
    if kind == "integer beyond its column" and model in INT_COLUMNS:
        number = draw(st.sampled_from([2**31, -(2**31) - 1, 2**63 + 5, 2**64 - 1]))
        _set(data, INT_COLUMNS[model], number)
        if number < 0 and INT_COLUMNS[model][-1] != "rank":
            # A negative count never reaches PostgreSQL: the contract refuses it (consumer/pure/contracts.py).
            return Bad(kind, topic, key, _dumped(envelope), QUARANTINE, "greater than or equal to 0")
        return Bad(kind, topic, key, _dumped(envelope), REFUSED)
    if kind == "NUL in text" and model in TEXT_COLUMNS:
        _set(data, TEXT_COLUMNS[model], "before\u0000after")
        return Bad(kind, topic, key, _dumped(envelope), REFUSED)
    # The drawn template has no such column: send it unchanged (it is valid) so the draw is not wasted.
    return Bad("valid fixture", topic, key, _dumped(envelope), ACCEPT)


def _get(document: Any, path: Sequence[str | int]) -> Any:
    for step in path:
        document = document[step]
    return document


# --- the property ---------------------------------------------------------------------------------------------


def _valid_stream() -> list[Message]:
    """Two complete batches, one per generation: all eight topics, the thin CJ event included."""
    rng = random.Random(2)
    return batch_life(rng, "gen1", "teacher-valid", 3, 0.3, EPOCH) + batch_life(
        rng, "gen2", "teacher-valid", 3, 0.3, EPOCH
    )


def _with_bad(valid: Sequence[Message], bad: Bad, at: int) -> tuple[list[Record], Record]:
    """Records of partition 0 with the bad one at index `at`, offsets counted per topic."""
    offsets: Counter[str] = Counter()
    records, bad_record = [], None
    items: list[Message | Bad] = [*valid[:at], bad, *valid[at:]]
    for item in items:
        record = Record(item.topic, 0, offsets[item.topic], item.key, item.value)
        if isinstance(item, Bad):
            record = replace(record, timestamp_ms=item.timestamp_ms)
            bad_record = record
        offsets[item.topic] += 1
        records.append(record)
    assert bad_record is not None
    return records, bad_record


ROWS_OF = {
    "batches": "SELECT * FROM batches WHERE batch_id = ANY(:ids) ORDER BY batch_id",
    "batch_facts": "SELECT * FROM batch_facts WHERE batch_id = ANY(:ids) ORDER BY batch_id, kind, digest",
    "essays": "SELECT * FROM essays WHERE batch_id = ANY(:ids) ORDER BY essay_id",
    "phase_results": "SELECT * FROM phase_results WHERE batch_id = ANY(:ids) ORDER BY essay_id, phase",
}


async def _rows_of(conn: AsyncConnection, batch_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
    out = {}
    for table, query in ROWS_OF.items():
        out[table] = [dict(r._mapping) for r in await conn.execute(text(query), {"ids": batch_ids})]
    return out


async def _applied_alone(engine: AsyncEngine, records: Sequence[Record]) -> Applied | DBAPIError:
    async with engine.connect() as conn:
        transaction = await conn.begin()
        try:
            return await apply_fetch(conn, decode_fetch(records, MAX_BYTES))
        except DBAPIError as exc:
            return exc
        finally:
            await transaction.rollback()


def test_any_bad_record_is_quarantined_accepted_or_refused_and_the_valid_ones_still_apply(database_url: str) -> None:
    valid = _valid_stream()
    batch_ids = sorted(
        {orjson.loads(m.value)["data"]["entity_id"] for m in valid if m.topic == t.BATCH_ESSAYS_REGISTERED}
    )
    outcomes: Counter[tuple[str, str]] = Counter()
    loop = asyncio.new_event_loop()
    # Its own engine on its own loop: hypothesis calls the property synchronously, once per example.
    engine = create_async_engine(database_url, pool_size=2)

    async def reference() -> dict[str, list[dict[str, Any]]]:
        async with engine.connect() as conn:
            transaction = await conn.begin()
            await apply_fetch(conn, decode_fetch(as_records(valid), MAX_BYTES))
            rows = await _rows_of(conn, batch_ids)
            await transaction.rollback()
        return rows

    expected = loop.run_until_complete(reference())
    assert all(expected.values()), "the valid stream fills every table"

    async def check(bad: Bad, at: int) -> None:
        records, bad_record = _with_bad(valid, bad, at)
        async with engine.connect() as conn:
            transaction = await conn.begin()
            try:
                try:
                    applied = await apply_fetch(conn, decode_fetch(records, MAX_BYTES))
                except DBAPIError as exc:
                    assert is_data_error(exc), exc
                    assert bad.expect in (REFUSED, ANY), (bad.kind, exc)
                    outcomes[(bad.kind, "refused by PostgreSQL")] += 1
                    return
                assert bad.expect != REFUSED, (bad.kind, "PostgreSQL accepted", bad.value[:200] if bad.value else None)
                counted = sum(applied.applied.values()) + sum(applied.ignored.values())
                assert counted + sum(applied.quarantined.values()) == len(records), "every record accounted for"
                quarantined = (
                    await conn.execute(text('SELECT topic, partition, "offset", key, value, error FROM quarantine'))
                ).all()
                assert len(quarantined) <= 1, quarantined
                if bad.expect == QUARANTINE:
                    assert len(quarantined) == 1, (bad.kind, bad.value[:300] if bad.value else None)
                if bad.expect == ACCEPT:
                    assert not quarantined, (bad.kind, quarantined[0].error)
                for row in quarantined:
                    assert (row.topic, row.partition, row.offset) == (bad_record.topic, 0, bad_record.offset)
                    assert row.value == bad.value and row.key == bad.key, "kept byte for byte"
                    assert row.error.strip() and bad.reason in row.error, (bad.kind, bad.reason, row.error)
                outcomes[(bad.kind, "quarantined" if quarantined else "accepted")] += 1
                assert await _rows_of(conn, batch_ids) == expected, "the valid events around it are applied"
            finally:
                await transaction.rollback()
        # The premise of the runner's isolation: the refused record fails alone too, so splitting finds it.
        if bad.expect == REFUSED:
            assert isinstance(await _applied_alone(engine, [bad_record]), DBAPIError)

    @settings(
        max_examples=400,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
    )
    @given(bad=bad_records(), at=st.integers(0, len(valid)))
    def property_(bad: Bad, at: int) -> None:
        loop.run_until_complete(check(bad, at))

    started = time.perf_counter()
    try:
        property_()
    finally:
        loop.run_until_complete(engine.dispose())
        loop.close()
    by_outcome: Counter[str] = Counter()
    for (_kind, outcome), n in outcomes.items():
        by_outcome[outcome] += n
    figures.report(
        "bad-events-property",
        *(f"{kind:28} {outcome:24} {n}" for (kind, outcome), n in sorted(outcomes.items())),
        examples=sum(outcomes.values()),
        valid_records_per_example=len(valid),
        kinds=len({k for k, _ in outcomes}),
        quarantined=by_outcome["quarantined"],
        accepted=by_outcome["accepted"],
        refused_by_postgres=by_outcome["refused by PostgreSQL"],
        duration_s=round(time.perf_counter() - started, 1),
    )


# --- through a real broker and `ras consume` ---------------------------------------------------------------------


@dataclass(frozen=True)
class Sent:
    label: str
    topic: str
    key: bytes | None
    value: bytes | None
    reason: str | None  # None: a valid event; else the quarantine reason it must get
    timestamp_ms: int | None = None


def _envelope(topic: str) -> dict[str, Any]:
    template = next(tp for tp in TEMPLATES if tp.topic == topic)
    return copy.deepcopy(template.envelope)


def _bad_stream() -> list[Sent]:
    """Garbage of every kind on every topic, and the big and nasty ones once each."""
    bad = []
    for topic in t.ALL_TOPICS:
        envelope = _envelope(topic)
        raw = orjson.dumps(envelope)
        missing = copy.deepcopy(envelope)
        required = _required(next(tp.model for tp in TEMPLATES if tp.topic == topic))
        del missing["data"][required[0]]
        wrong = copy.deepcopy(envelope)
        wrong["data"] = "an envelope's data must be an object"
        bad += [
            Sent("invalid UTF-8", topic, b"k", raw[:20] + b"\xff\xfe" + raw[20:], "not valid JSON"),
            Sent("not JSON", topic, b"k", b"\x00\x01 definitely not json", "not valid JSON"),
            Sent("JSON list", topic, b"k", b"[1, 2, 3]", "envelope is a JSON list"),
            Sent("missing field", topic, b"k", orjson.dumps(missing), f"{required[0]}: Field required"),
            Sent("wrong type", topic, b"k", orjson.dumps(wrong), "envelope.data"),
            Sent("JSON bomb: 100k deep", topic, b"k", b"[" * 100_000 + b"]" * 100_000, "not valid JSON"),
            Sent("tombstone", topic, b"k", None, "tombstone"),
        ]
    registration = _envelope(t.BATCH_ESSAYS_REGISTERED)
    huge = copy.deepcopy(registration)
    huge["data"]["course_code"] = "x" * 5_000_000
    bad.append(Sent("5 MB message", t.BATCH_ESSAYS_REGISTERED, b"k", orjson.dumps(huge), "over the 1048576-byte limit"))
    array = copy.deepcopy(registration)
    array["data"]["essay_ids"] = list(range(150_000))  # ~1 MB of wrong-typed items: a bounded reason
    bad.append(Sent("JSON bomb: huge array", t.BATCH_ESSAYS_REGISTERED, b"k", orjson.dumps(array), "and 149995 more"))
    deep = _nested_under(copy.deepcopy(registration), "nested_junk", 400)
    bad.append(Sent("nested 400 deep", t.BATCH_ESSAYS_REGISTERED, b"k", deep, "re-encoded"))
    spellcheck = _envelope(t.SPELLCHECK_RESULTS)
    spellcheck["data"]["corrections_made"] = 2**63 + 5
    bad.append(Sent("int beyond int8", t.SPELLCHECK_RESULTS, b"k", orjson.dumps(spellcheck), "database rejected"))
    nul = _envelope(t.ESSAY_SLOT_ASSIGNED)
    nul["data"]["file_upload_id"] = "upload\u0000id"
    bad.append(Sent("NUL in text", t.ESSAY_SLOT_ASSIGNED, b"k", orjson.dumps(nul), "database rejected"))
    early = _envelope(t.ELS_BATCH_PHASE_OUTCOME)
    early["event_timestamp"] = "0001-01-01T00:00:00+05:00"
    bad.append(Sent("timestamp out of range", t.ELS_BATCH_PHASE_OUTCOME, b"k", orjson.dumps(early), "outside"))
    return bad


def _good_stream() -> tuple[list[Message], list[Sent]]:
    rng = random.Random(5)
    messages: list[Message] = []
    for i in range(8):
        messages += batch_life(rng, "gen1" if i % 3 == 0 else "gen2", f"teacher-{i % 3}", 6, 0.2, EPOCH)
    # Valid, though no release sends it yet: stored as text, never quarantined.
    batch_id = orjson.loads(messages[0].value)["data"]["entity_id"]
    messages.append(phase_outcome("gen2", batch_id, "plagiarism_check", "paused_by_operator", [], [], EPOCH))
    sent = [Sent("valid", m.topic, m.key, m.value, None) for m in messages]
    # A re-send with a record timestamp no datetime can hold: the payload's own stamps decide, it is applied.
    again = messages[1].resent(timedelta(seconds=30))
    sent.append(Sent("absurd broker timestamp", again.topic, again.key, again.value, None, 2**62))
    return messages, sent


async def _produce(
    bootstrap: str, stream: Sequence[Sent]
) -> tuple[dict[tuple[str, int], int], dict[int, tuple[str, int, int]]]:
    """Send in order; returns each partition's end and where every record went (index → topic, partition, offset)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, max_request_size=8_388_608, linger_ms=5)
    await producer.start()
    ends: dict[tuple[str, int], int] = {}
    placed: dict[int, tuple[str, int, int]] = {}
    try:
        futures = [await producer.send(s.topic, s.value, key=s.key, timestamp_ms=s.timestamp_ms) for s in stream]
        for index, meta in enumerate(await asyncio.gather(*futures)):
            placed[index] = (meta.topic, meta.partition, meta.offset)
            ends[(meta.topic, meta.partition)] = max(ends.get((meta.topic, meta.partition), 0), meta.offset + 1)
    finally:
        await producer.stop()
    return ends, placed


@pytest.mark.kafka
async def test_ras_consume_quarantines_every_bad_record_and_applies_the_rest(
    engine: AsyncEngine, database_url: str, kafka_bootstrap: str, redis_url: str, tmp_path: Path
) -> None:
    messages, good = _good_stream()
    bad = _bad_stream()
    stream = good + bad
    random.Random(11).shuffle(stream)
    ends, placed = await _produce(kafka_bootstrap, stream)
    sent_bytes = sum(len(s.value or b"") for s in stream)

    metrics_port = free_port()
    env = {
        "RAS_DATABASE_URL": database_url,
        "RAS_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "RAS_KAFKA_GROUP_ID": f"bad-events-{uuid.uuid4().hex[:8]}",
        "RAS_KAFKA_SESSION_TIMEOUT_MS": "6000",
        "RAS_CONSUMER_METRICS_PORT": str(metrics_port),
        "RAS_HOST": "127.0.0.1",
        # No cache and no live updates: this scenario is about the stream; Redis is named only so that nothing
        # reaches for a default localhost one.
        "RAS_REDIS_URL": redis_url,
        "RAS_CACHE_ENABLED": "false",
        "RAS_LIVE_UPDATES_ENABLED": "false",
    }
    consumer = RasProcess("consume", env, tmp_path / "consume.log")
    started = time.perf_counter()
    peak_rss = 0
    try:
        async with asyncio.timeout(90):
            while True:
                assert consumer.proc.poll() is None, f"the consumer exited:\n{consumer.output()[-3000:]}"
                peak_rss = max(peak_rss, psutil.Process(consumer.proc.pid).memory_info().rss)
                positions = await stored_positions(engine)
                if all(positions.get(tp, 0) >= end for tp, end in ends.items()):
                    break
                await asyncio.sleep(0.1)
        drained = time.perf_counter() - started
        await asyncio.sleep(0.5)  # a last moment in which a crash after the final commit would show
        assert consumer.proc.poll() is None, consumer.output()[-3000:]
        assert await stored_positions(engine) == ends, "exactly the end of every partition"
        metrics = await asyncio.to_thread(_metrics_text, metrics_port)
    finally:
        exit_code = await consumer.stop(signal.SIGTERM) if consumer.proc.poll() is None else consumer.proc.returncode
        consumer.kill()

    async with engine.connect() as conn:
        rows = (await conn.execute(text('SELECT topic, partition, "offset", value, error FROM quarantine'))).all()
    quarantined = {(r.topic, r.partition, r.offset): r for r in rows}
    expected = {placed[i]: s for i, s in enumerate(stream) if s.reason is not None}
    assert set(quarantined) == set(expected), "exactly the bad records are quarantined"
    reasons: Counter[str] = Counter()
    for where, s in expected.items():
        row = quarantined[where]
        assert s.reason is not None and s.reason in row.error, (s.label, s.reason, row.error[:300])
        assert row.value == s.value, (s.label, "kept byte for byte")
        assert len(row.error) < 2_000, (s.label, "a reason stays readable", len(row.error))
        reasons[s.label] += 1
    counted = sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("ras_consumer_events_total{") and 'outcome="quarantined"' in line
    )
    assert counted == len(bad), (counted, len(bad))

    via_broker = await dump(engine)
    await truncate(engine)
    await apply(engine, as_records(in_event_order(messages)))
    assert via_broker == await dump(engine), "the tables are those of the valid events alone"
    assert exit_code == 0, consumer.output()[-3000:]
    figures.report(
        "bad-events-consumer",
        records=len(stream),
        valid=len(good),
        bad=len(bad),
        bad_kinds=len(reasons),
        megabytes_sent=round(sent_bytes / 1e6, 1),
        quarantined=len(quarantined),
        refused_by_postgres=sum(1 for s in bad if s.reason == "database rejected"),
        partitions=len(ends),
        drain_s=round(drained, 2),
        consumer_exits=0,
        peak_rss_mb=round(peak_rss / 1e6),
        sigterm_exit_code=exit_code,
    )


def _metrics_text(port: int) -> str:
    import httpx

    return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
