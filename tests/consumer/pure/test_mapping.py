"""The projection against real PostgreSQL: fixtures of both generations, orphans, duplicates and quarantine."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from consumer.pure import topics as t
from tests.helpers.consumer import apply, as_records, dump, truncate
from tests.helpers.scenario import Message, fixture_messages

BATCH = "7b1f0c52-3d7e-4a51-9a57-5a0f3c1e2b01"
ESSAY_OK = "bb52cb47-ff0d-5c47-86ea-11c46b2b904a"
ESSAY_FAILED = "c9ff7af5-8e6b-507a-952e-2a14bd22169c"
ESSAY_3 = "933a31a2-d0b4-5f91-8446-9ca05502b255"
T = datetime(2025, 8, 1, 12, 0, tzinfo=UTC)


def fixtures(gen: str, skip: str = "failed_critically") -> list[tuple[str, bytes, bytes]]:
    return [(topic, key, value) for name, topic, key, value in fixture_messages(gen) if skip not in name]


def by_key(rows: list[dict[str, object]], *cols: str) -> dict[tuple[object, ...], dict[str, object]]:
    return {tuple(r[c] for c in cols): r for r in rows}


async def test_gen2_fixtures_project_every_consumed_field(engine: AsyncEngine) -> None:
    [applied] = await apply(engine, as_records(fixtures("gen2")))
    assert applied.batch_ids == {BATCH} and applied.user_ids == {"teacher-3f9a"}
    assert applied.ignored == {t.CJ_ASSESSMENT_COMPLETED: 1}
    assert sum(applied.quarantined.values()) == 2  # the thin spellcheck topic RAS does not consume
    tables = await dump(engine)

    [batch] = tables["batches"]
    assert batch["user_id"] == "teacher-3f9a" and batch["course_code"] == "ENG5" and batch["class_id"] == "class-9b"
    assert batch["essay_count"] == 4
    assert batch["student_prompt_ref"] == {
        "references": {"student_prompt_text": {"storage_id": "prompt-5d1e", "path": "prompts/eng5/uniforms.txt"}}
    }
    assert batch["status"] == "completed_with_failures"  # the pipeline's verdict (§5.3)
    assert (batch["completed_essay_count"], batch["failed_essay_count"]) == (3, 1)
    assert batch["assignment_id"] == "assign-eng5-uniforms"
    assert batch["completed_phases"] == ["spellcheck", "cj_assessment"]
    assert batch["phase_stats"]["spellcheck"]["status"] == "completed_with_failures"
    assert batch["phase_stats"]["cj_assessment"]["completed_count"] == 3
    assert batch["created_at"] == T
    assert batch["processing_started_at"] == T + timedelta(seconds=12)
    assert batch["processing_completed_at"] == T + timedelta(minutes=6, seconds=50)
    assert batch["last_updated"] == T + timedelta(minutes=6, seconds=50)
    assert batch["error_detail"] is None

    essays = by_key(tables["essays"], "essay_id")
    assert set(essays) == {(ESSAY_OK,), (ESSAY_FAILED,), (ESSAY_3,), ("171b04c1-1125-5665-b999-10266c83625c",)}
    slot = essays[(ESSAY_OK,)]
    assert (slot["filename"], slot["file_upload_id"], slot["original_text_storage_id"]) == (
        "anna_svensson_essay.docx",
        "upl-bb52cb47",
        "orig-bb52cb47",
    )
    assert all(e["batch_id"] == BATCH for e in essays.values())

    results = by_key(tables["phase_results"], "essay_id", "phase")
    assert ("ANCHOR_B_01", "cj_assessment") not in results  # anchors are skipped
    ok = results[(ESSAY_OK, "spellcheck")]
    assert (ok["status"], ok["correction_count"], ok["corrected_text_storage_id"]) == ("completed", 7, "corr-bb52cb47")
    assert (ok["total_corrections"], ok["l2_dictionary_corrections"], ok["spellchecker_corrections"]) == (7, 2, 5)
    assert (ok["word_count"], ok["correction_density"], ok["processing_duration_ms"]) == (312, 2.24, 842)
    assert ok["processor_version"] == "pyspellchecker_1.0_L2_swedish"
    assert ok["started_at"] == T + timedelta(seconds=12) and ok["completed_at"] == T + timedelta(seconds=20)
    failed = results[(ESSAY_FAILED, "spellcheck")]
    assert failed["status"] == "failed" and failed["source_status"] == "spellcheck_failed"
    error = failed["error_detail"]
    assert isinstance(error, dict)
    assert error["error_code"] == "SPELLCHECK_SERVICE_ERROR"
    assert error["message"].startswith("{'error_code': 'CONTENT_SERVICE_ERROR', 'error_message': ")
    assert error["details"] == {"essay_id": ESSAY_FAILED, "batch_id": BATCH, "status": "spellcheck_failed"}
    assert error["correlation_id"] == "73efe59d-a9ea-5325-9c4b-072ef06c94dd"
    cj = results[(ESSAY_OK, "cj_assessment")]
    assert (cj["status"], cj["rank"], cj["score"], cj["normalized_score"]) == ("completed", 1, 1.73, 0.9)
    assert (cj["letter_grade"], cj["confidence_score"], cj["confidence_label"]) == ("A", 0.82, "HIGH")
    assert cj["comparison_count"] == 6
    assert results[(ESSAY_3, "cj_assessment")]["rank"] == 3  # ranks keep the anchor's gap


async def test_gen1_fixtures_follow_rule_p_and_read_nested_storage_ids(engine: AsyncEngine) -> None:
    await apply(engine, as_records(fixtures("gen1")))
    tables = await dump(engine)
    [batch] = tables["batches"]
    # Spellcheck outcome: 3 + 1 = essay_count, so the status is set; the CJ outcome covers 3 < 4 and keeps it.
    assert batch["status"] == "completed_with_failures"
    assert (batch["completed_essay_count"], batch["failed_essay_count"]) == (3, 1)
    assert batch["student_prompt_ref"] is None and batch["assignment_id"] is None
    results = by_key(tables["phase_results"], "essay_id", "phase")
    assert results[(ESSAY_OK, "spellcheck")]["corrected_text_storage_id"] == "corr-bb52cb47"
    assert results[(ESSAY_FAILED, "spellcheck")]["correction_count"] is None
    assert results[(ESSAY_OK, "cj_assessment")]["score"] == 1.73
    assert results[(ESSAY_OK, "cj_assessment")]["letter_grade"] is None
    assert by_key(tables["essays"], "essay_id")[(ESSAY_OK,)]["filename"] is None


async def test_critical_phase_failure_records_error_detail(engine: AsyncEngine) -> None:
    messages = [
        (topic, key, value)
        for name, topic, key, value in fixture_messages("gen2")
        if name.startswith(("batch_essays_registered", "els_batch_phase_outcome__spellcheck_failed"))
    ]
    await apply(engine, as_records(messages))
    [batch] = (await dump(engine))["batches"]
    assert batch["status"] == "failed_critically"
    assert (batch["completed_essay_count"], batch["failed_essay_count"]) == (0, 0)
    assert batch["error_detail"]["error_code"] == "PROCESSING_ERROR"
    assert batch["error_detail"]["details"] == {"batch_id": BATCH, "phase": "spellcheck", "status": "failed_critically"}


async def test_essays_and_results_before_their_batch_link_up_on_registration(engine: AsyncEngine) -> None:
    messages = fixtures("gen2")
    registration = [m for m in messages if m[0] == t.BATCH_ESSAYS_REGISTERED]
    rest = [m for m in messages if m[0] != t.BATCH_ESSAYS_REGISTERED]
    [early] = await apply(engine, as_records(rest))
    assert early.user_ids == set()  # nobody's list can show an unregistered batch
    assert (await dump(engine))["batches"] == []
    assert {e["batch_id"] for e in (await dump(engine))["essays"]} == {BATCH}
    [late] = await apply(engine, as_records(registration))
    assert late.batch_ids == {BATCH} and late.user_ids == {"teacher-3f9a"}
    [batch] = (await dump(engine))["batches"]
    assert batch["status"] == "completed_with_failures" and batch["assignment_id"] == "assign-eng5-uniforms"


async def test_replays_and_relay_resends_change_nothing(engine: AsyncEngine) -> None:
    messages = fixtures("gen2")
    await apply(engine, as_records(messages))
    before = await dump(engine)
    resent = [Message(topic, key, value, T).resent(timedelta(hours=1)) for topic, key, value in messages]
    stream: list[Message | tuple[str, bytes, bytes]] = [*messages, *resent]
    results = await apply(engine, as_records(stream), per_transaction=3)
    assert all(r.batch_ids == set() for r in results)
    assert await dump(engine) == before


async def test_one_batch_event_reports_only_that_batch(engine: AsyncEngine) -> None:
    await apply(engine, as_records(fixtures("gen2")))
    envelope = json.loads(
        dict((n, v) for n, _t, _k, v in fixture_messages("gen2"))["batch_essays_registered__default.json"]
    )
    envelope["data"]["entity_id"] = "other-batch"
    envelope["data"]["user_id"] = "other-teacher"
    envelope["data"]["metadata"]["entity_id"] = "other-batch"
    [applied] = await apply(engine, as_records([(t.BATCH_ESSAYS_REGISTERED, b"k", json.dumps(envelope).encode())]))
    assert applied.batch_ids == {"other-batch"} and applied.user_ids == {"other-teacher"}


async def test_unplaceable_events_are_quarantined_and_passed(engine: AsyncEngine) -> None:
    values = dict((n, v) for n, _t, _k, v in fixture_messages("gen1"))
    cj = json.loads(values["cj_assessment_completed__with_rankings.json"])
    cj["data"]["entity_id"] = None
    spell = json.loads(values["spellcheck_completed__success.json"])
    spell["data"]["system_metadata"]["parent_id"] = None
    records = as_records(
        [
            (t.CJ_ASSESSMENT_COMPLETED, b"k1", json.dumps(cj).encode()),
            (t.ESSAY_SPELLCHECK_COMPLETED, b"k2", json.dumps(spell).encode()),
            (t.ESSAY_SPELLCHECK_COMPLETED, b"k3", b"\x00garbage"),
            (t.ESSAY_SLOT_ASSIGNED, b"k4", values["essay_slot_assigned__default.json"]),
        ]
    )
    [applied] = await apply(engine, records)
    assert applied.applied == {t.ESSAY_SLOT_ASSIGNED: 1}
    assert applied.quarantined == {t.CJ_ASSESSMENT_COMPLETED: 1, t.ESSAY_SPELLCHECK_COMPLETED: 2}
    quarantined = await dump_quarantine(engine)
    assert [(q["topic"], q["offset"], q["key"]) for q in quarantined] == [
        (t.CJ_ASSESSMENT_COMPLETED, 0, b"k1"),
        (t.ESSAY_SPELLCHECK_COMPLETED, 0, b"k2"),
        (t.ESSAY_SPELLCHECK_COMPLETED, 1, b"k3"),
    ]
    reasons = [str(q["error"]) for q in quarantined]
    assert "no batch id in entity_id" in reasons[0]
    assert "system_metadata.parent_id" in reasons[1]
    assert "not valid JSON" in reasons[2]
    assert quarantined[2]["value"] == b"\x00garbage"
    positions = await dump_positions(engine)
    assert positions[(t.ESSAY_SPELLCHECK_COMPLETED, 0)] == 2 and positions[(t.CJ_ASSESSMENT_COMPLETED, 0)] == 1


async def dump_quarantine(engine: AsyncEngine) -> list[dict[str, object]]:
    from sqlalchemy import text

    async with engine.connect() as conn:
        rows = await conn.execute(text('SELECT * FROM quarantine ORDER BY topic, "offset"'))
        return [dict(r._mapping) for r in rows]


async def dump_positions(engine: AsyncEngine) -> dict[tuple[str, int], int]:
    from sqlalchemy import text

    async with engine.connect() as conn:
        rows = await conn.execute(text("SELECT topic, partition, next_offset FROM consumer_positions"))
        return {(r.topic, r.partition): r.next_offset for r in rows}


async def test_quarantine_log_line_names_the_record_and_the_producers_correlation_id(
    engine: AsyncEngine, capsys: pytest.CaptureFixture[str]
) -> None:
    envelope = json.loads(dict((n, v) for n, _t, _k, v in fixture_messages("gen2"))["spellcheck_results__success.json"])
    del envelope["data"]["correction_metrics"]
    await apply(engine, as_records([(t.SPELLCHECK_RESULTS, b"k", json.dumps(envelope).encode())]))
    line = capsys.readouterr().out
    assert "record quarantined" in line and "correlation_id=73efe59d-a9ea-5325-9c4b-072ef06c94dd" in line
    assert "topic=huleedu.essay.spellcheck.results.v1" in line and "offset=0" in line


def _retried(value: bytes, later: timedelta) -> bytes:
    """The same result computed again later: every stamp of its payload moves by `later` (a new digest)."""
    envelope = json.loads(value)
    data, meta = envelope["data"], envelope["data"]["system_metadata"]
    for holder, name in ((data, "timestamp"), (meta, "timestamp"), (meta, "started_at"), (meta, "completed_at")):
        holder[name] = (datetime.fromisoformat(holder[name]) + later).isoformat()
    return json.dumps(envelope).encode()


async def test_replaced_results_refold_their_batch_whatever_came_before(engine: AsyncEngine) -> None:
    messages = fixtures("gen2")
    results = [m for m in messages if m[0] == t.SPELLCHECK_RESULTS]
    retries = [(topic, key, _retried(value, timedelta(days=1))) for topic, key, value in results]
    await apply(engine, as_records([m for m in messages if m not in results] + retries))
    expected = await dump(engine)

    await truncate(engine)
    await apply(engine, as_records(messages))
    superseded = await dump(engine)
    # The replaced results held the batch's earliest activity, so the fold over the final rows starts later.
    assert superseded["batches"][0]["processing_started_at"] < expected["batches"][0]["processing_started_at"]
    await apply(engine, as_records(retries))
    assert await dump(engine) == expected
