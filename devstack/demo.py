"""Generated event streams shaped exactly like the platform's own payloads, for the demo, benchmarks and tests.

Each builder starts from one of the platform's example envelopes (devstack/templates, copies of
contracts/fixtures; a test keeps them equal) and changes only ids, counts and timestamps, so generated
events stay as close to the wire as the examples themselves. `batch_life` is the full life of a batch in one
contract generation; `with_resends` mixes in the outbox relay's re-sends (fresh event_id and event_timestamp, same
data).
"""

from __future__ import annotations

import copy
import json
import random
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

from consumer.pure import topics as t

TEMPLATES = Path(__file__).parent / "templates"
EPOCH = datetime(2025, 8, 1, 12, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Message:
    topic: str
    key: bytes
    value: bytes
    at: datetime

    def resent(self, later: timedelta) -> Message:
        """What the outbox relay sends again: new event_id and event_timestamp, same data."""
        envelope = json.loads(self.value)
        envelope["event_id"] = str(uuid.uuid4())
        stamp = self.at + later
        envelope["event_timestamp"] = _iso(stamp)
        return Message(self.topic, self.key, _dump(envelope), stamp)


@cache
def _fixture(gen: str, name: str) -> dict[str, Any]:
    return dict(json.loads((TEMPLATES / gen / name).read_text()))


def _iso(stamp: datetime) -> str:
    return stamp.strftime("%Y-%m-%dT%H:%M:%S") + (f".{stamp.microsecond:06d}" if stamp.microsecond else "") + "Z"


def _dump(envelope: dict[str, Any]) -> bytes:
    return json.dumps(envelope, separators=(",", ":")).encode()


def _message(gen: str, name: str, topic: str, key: str, at: datetime, data: dict[str, Any]) -> Message:
    envelope = copy.deepcopy(_fixture(gen, name))
    envelope["event_id"] = str(uuid.uuid4())
    envelope["event_timestamp"] = _iso(at)
    envelope["data"] = data
    return Message(topic, key.encode(), _dump(envelope), at)


def _meta(template: dict[str, Any], entity_id: str, at: datetime, **extra: Any) -> dict[str, Any]:
    meta = copy.deepcopy(template)
    meta.update(entity_id=entity_id, timestamp=_iso(at), **extra)
    return meta


def registered(gen: str, batch_id: str, user_id: str, essay_ids: list[str], at: datetime) -> Message:
    data = copy.deepcopy(_fixture(gen, "batch_essays_registered__default.json")["data"])
    data.update(entity_id=batch_id, expected_essay_count=len(essay_ids), essay_ids=essay_ids, user_id=user_id)
    data["metadata"] = _meta(data["metadata"], batch_id, at)
    return _message(gen, "batch_essays_registered__default.json", t.BATCH_ESSAYS_REGISTERED, batch_id, at, data)


def slot_assigned(gen: str, batch_id: str, essay_id: str, at: datetime) -> Message:
    name = "essay_slot_assigned__default.json"
    data = copy.deepcopy(_fixture(gen, name)["data"])
    data.update(
        batch_id=batch_id,
        essay_id=essay_id,
        file_upload_id=f"upl-{essay_id[:8]}",
        text_storage_id=f"orig-{essay_id[:8]}",
        timestamp=_iso(at),
    )
    if gen == "gen2":
        data["original_file_name"] = f"{essay_id[:8]}.docx"
    return _message(gen, name, t.ESSAY_SLOT_ASSIGNED, essay_id, at, data)


def spellchecked(gen: str, batch_id: str, essay_id: str, ok: bool, corrections: int, at: datetime) -> Message:
    outcome = "success" if ok else "failure"
    if gen == "gen1":
        name, topic = f"spellcheck_completed__{outcome}.json", t.ESSAY_SPELLCHECK_COMPLETED
    else:
        name, topic = f"spellcheck_results__{outcome}.json", t.SPELLCHECK_RESULTS
    data = copy.deepcopy(_fixture(gen, name)["data"])
    data.update(entity_id=essay_id, parent_id=batch_id, timestamp=_iso(at))
    data["system_metadata"] = _meta(
        data["system_metadata"],
        essay_id,
        at - timedelta(seconds=10),
        parent_id=batch_id,
        started_at=_iso(at - timedelta(seconds=8)),
        completed_at=_iso(at),
    )
    if gen == "gen1":
        if ok:
            data["corrections_made"] = corrections
            data["storage_metadata"] = {"references": {"corrected_text": {"default": f"corr-{essay_id[:8]}"}}}
    else:
        data["batch_id"] = batch_id
        if ok:
            data["corrections_made"] = corrections
            data["corrected_text_storage_id"] = f"corr-{essay_id[:8]}"
            data["correction_metrics"] = dict(data["correction_metrics"], total_corrections=corrections)
    return _message(gen, name, topic, essay_id, at, data)


def phase_outcome(
    gen: str, batch_id: str, phase: str, status: str, done: list[str], failed: list[str], at: datetime
) -> Message:
    name = "els_batch_phase_outcome__spellcheck_completed_with_failures.json"
    data = copy.deepcopy(_fixture(gen, name)["data"])
    template = data["processed_essays"][0]
    data.update(
        batch_id=batch_id,
        phase_name=phase,
        phase_status=status,
        processed_essays=[dict(template, essay_id=e, text_storage_id=f"corr-{e[:8]}") for e in done],
        failed_essay_ids=failed,
        correlation_id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"{batch_id}/{phase}")),
    )
    return _message(gen, name, t.ELS_BATCH_PHASE_OUTCOME, batch_id, at, data)


def cj_completed(gen: str, batch_id: str, ranked: list[str], at: datetime) -> Message:
    """Gen 1: the rich CJ event with rankings. Gen 2: the rich assessment result (with one anchor essay)."""
    if gen == "gen1":
        name = "cj_assessment_completed__with_rankings.json"
        data = copy.deepcopy(_fixture(gen, name)["data"])
        data.update(entity_id=batch_id, timestamp=_iso(at))
        data["system_metadata"] = _meta(data["system_metadata"], batch_id, at, completed_at=_iso(at))
        data["rankings"] = [
            {"rank": i + 1, "els_essay_id": e, "score": round(2.0 - i * 0.5, 2)} for i, e in enumerate(ranked)
        ]
        return _message(gen, name, t.CJ_ASSESSMENT_COMPLETED, str(uuid.uuid4()), at, data)
    name = "assessment_result_published__with_rankings_and_anchor.json"
    data = copy.deepcopy(_fixture(gen, name)["data"])
    template, anchor = data["essay_results"][0], data["essay_results"][1]
    results = [
        dict(template, essay_id=e, rank=i + 2, bt_score=round(2.0 - i * 0.5, 2), normalized_score=0.5)
        for i, e in enumerate(ranked)
    ]
    data.update(entity_id=batch_id, batch_id=batch_id, timestamp=_iso(at), assessed_at=_iso(at))
    data["essay_results"] = [dict(anchor, rank=1), *results]
    data["assignment_id"] = f"assign-{batch_id[:6]}"
    return _message(gen, name, t.ASSESSMENT_RESULT_PUBLISHED, data["cj_assessment_job_id"], at, data)


def cj_thin(batch_id: str, at: datetime) -> Message:
    name = "cj_assessment_completed__thin_NOT_CONSUMED_BY_RAS.json"
    data = copy.deepcopy(_fixture("gen2", name)["data"])
    data.update(entity_id=batch_id, timestamp=_iso(at))
    return _message("gen2", name, t.CJ_ASSESSMENT_COMPLETED, batch_id, at, data)


def pipeline_completed(batch_id: str, ok: int, failed: int, status: str, at: datetime) -> Message:
    name = "batch_pipeline_completed__completed_with_failures.json"
    data = copy.deepcopy(_fixture("gen2", name)["data"])
    data.update(batch_id=batch_id, final_status=status, successful_essay_count=ok, failed_essay_count=failed)
    data["metadata"] = _meta(data["metadata"], batch_id, at)
    return _message("gen2", name, t.BATCH_PIPELINE_COMPLETED, batch_id, at, data)


def batch_life(
    rng: random.Random, gen: str, user_id: str, essays: int, fail_rate: float, start: datetime = EPOCH
) -> list[Message]:
    """Every event of one batch from registration to the end of its pipeline, in event-time order."""
    batch_id = str(uuid.UUID(int=rng.getrandbits(128)))
    essay_ids = [str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(essays)]
    at = start
    out = [registered(gen, batch_id, user_id, essay_ids, at)]
    for i, essay in enumerate(essay_ids):
        out.append(slot_assigned(gen, batch_id, essay, at + timedelta(seconds=1 + i)))
    ok = [e for e in essay_ids if rng.random() >= fail_rate]
    bad = [e for e in essay_ids if e not in ok]
    for i, essay in enumerate(essay_ids):
        stamp = at + timedelta(seconds=100 + i)
        out.append(spellchecked(gen, batch_id, essay, essay in ok, rng.randint(0, 20), stamp))
    status = "completed_successfully" if not bad else "failed_critically" if not ok else "completed_with_failures"
    out.append(phase_outcome(gen, batch_id, "spellcheck", status, ok, bad, at + timedelta(seconds=200)))
    if not ok:
        return out
    out.append(cj_completed(gen, batch_id, ok, at + timedelta(seconds=300)))
    if gen == "gen2":
        out.append(cj_thin(batch_id, at + timedelta(seconds=300)))
    out.append(
        phase_outcome(gen, batch_id, "cj_assessment", "completed_successfully", ok, [], at + timedelta(seconds=400))
    )
    if gen == "gen2":
        final = "completed_successfully" if not bad else "completed_with_failures"
        out.append(pipeline_completed(batch_id, len(ok), len(bad), final, at + timedelta(seconds=500)))
    return out


def with_resends(rng: random.Random, messages: list[Message], rate: float) -> list[Message]:
    """Add outbox re-sends of some messages (each later than its original)."""
    extra = [m.resent(timedelta(seconds=rng.randint(1, 900))) for m in messages if rng.random() < rate]
    return messages + extra


def demo_stream(batches: int, users: int, seed: int = 2025, start: datetime | None = None) -> list[Message]:
    """Several teachers' batches of both generations, some with failing essays, with occasional re-sends."""
    rng = random.Random(seed)
    begin = start or datetime.now(UTC).replace(microsecond=0)
    messages: list[Message] = []
    for i in range(batches):
        gen = "gen1" if i % 4 == 0 else "gen2"
        offset = timedelta(minutes=i)
        user = f"teacher-{i % users + 1:02d}"
        messages += batch_life(rng, gen, user, rng.randint(5, 30), rng.choice([0.0, 0.0, 0.1, 0.3]), begin + offset)
    return with_resends(rng, messages, 0.03)
