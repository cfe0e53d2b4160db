"""Wire bytes → validated contract model. Anything that cannot be read raises `PoisonMessage` with the reason."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from pydantic import ValidationError

from consumer.pure import contracts as c
from consumer.pure import topics as t


class PoisonMessage(Exception):
    """A record that can never be applied as it is: it goes to quarantine with this reason.

    `correlation_id` is the envelope's, when the envelope could be read: it ties the quarantine log line to the
    producer's own logs of the same request.
    """

    def __init__(self, reason: str, correlation_id: str | None = None) -> None:
        super().__init__(reason)
        self.correlation_id = correlation_id


@dataclass(frozen=True, slots=True)
class Record:
    """One broker record, independent of the Kafka client library."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int | None = None
    headers: Sequence[tuple[str, bytes | None]] = ()


@dataclass(frozen=True, slots=True)
class Event:
    """A validated event: its envelope, its typed payload and the identity of its payload across re-sends."""

    topic: str
    envelope: c.Envelope
    payload: c.WireModel
    digest: str
    record_time: datetime | None


def _registration(data: dict[str, Any]) -> type[c.WireModel]:
    return c.BatchEssaysRegisteredGen1 if "essay_instructions" in data else c.BatchEssaysRegisteredGen2


def _slot(data: dict[str, Any]) -> type[c.WireModel]:
    return c.EssaySlotAssignedGen2 if "original_file_name" in data else c.EssaySlotAssignedGen1


_MODEL_FOR_TOPIC: dict[str, Callable[[dict[str, Any]], type[c.WireModel]]] = {
    t.BATCH_ESSAYS_REGISTERED: _registration,
    t.ESSAY_SLOT_ASSIGNED: _slot,
    t.ELS_BATCH_PHASE_OUTCOME: lambda _d: c.ELSBatchPhaseOutcome,
    t.ESSAY_SPELLCHECK_COMPLETED: lambda _d: c.SpellcheckResultDataGen1,
    t.CJ_ASSESSMENT_COMPLETED: lambda _d: c.CJAssessmentCompletedGen1,
    t.SPELLCHECK_RESULTS: lambda _d: c.SpellcheckResultGen2,
    t.ASSESSMENT_RESULT_PUBLISHED: lambda _d: c.AssessmentResultGen2,
    t.BATCH_PIPELINE_COMPLETED: lambda _d: c.BatchPipelineCompletedGen2,
}


def payload_digest(topic: str, data: dict[str, object]) -> str:
    """Identity of an event across outbox re-sends: the relay keeps `data` and renews `event_id`."""
    canonical = orjson.dumps(data, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(topic.encode() + b"\0" + canonical).hexdigest()


def _reason(exc: ValidationError, where: str) -> str:
    parts = []
    for error in exc.errors(include_url=False)[:5]:
        loc = ".".join(str(p) for p in error["loc"]) or "(root)"
        parts.append(f"{where}.{loc}: {error['msg']}")
    more = exc.error_count() - 5
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def decode(record: Record, max_bytes: int) -> Event | None:
    """Read one record. Returns None for a record RAS deliberately ignores (gen 2's thin CJ event)."""
    if record.topic not in _MODEL_FOR_TOPIC:
        raise PoisonMessage(f"topic {record.topic!r} is not one RAS consumes")
    if record.value is None:
        raise PoisonMessage("record has no value (tombstone)")
    if len(record.value) > max_bytes:
        raise PoisonMessage(f"record is {len(record.value)} bytes, over the {max_bytes}-byte limit")
    try:
        raw = orjson.loads(record.value)
    except orjson.JSONDecodeError as exc:
        raise PoisonMessage(f"not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise PoisonMessage(f"envelope is a JSON {type(raw).__name__}, not an object")
    try:
        envelope = c.Envelope.model_validate(raw)
    except ValidationError as exc:
        raise PoisonMessage(_reason(exc, "envelope")) from None
    if record.topic == t.CJ_ASSESSMENT_COMPLETED and "rankings" not in envelope.data:
        return None
    model = _MODEL_FOR_TOPIC[record.topic](envelope.data)
    try:
        payload = model.model_validate(envelope.data)
    except ValidationError as exc:
        raise PoisonMessage(_reason(exc, f"data[{model.__name__}]"), envelope.correlation_id) from None
    try:
        digest = payload_digest(record.topic, envelope.data)
    except orjson.JSONEncodeError as exc:
        # orjson reads up to 1024 levels of nesting but writes only 254: a payload between the two is valid JSON
        # that cannot be given an identity, and must not stop the consumer.
        raise PoisonMessage(f"data cannot be re-encoded for its digest: {exc}", envelope.correlation_id) from None
    return Event(record.topic, envelope, payload, digest, _record_time(record.timestamp_ms))


def _record_time(timestamp_ms: int | None) -> datetime | None:
    """The broker's record time, only ever a fallback stamp; any producer can set it, so a value datetime cannot
    represent is treated as absent rather than failing a valid event."""
    if timestamp_ms is None:
        return None
    try:
        return datetime.fromtimestamp(timestamp_ms / 1000, UTC)
    except (OverflowError, OSError, ValueError):
        return None
