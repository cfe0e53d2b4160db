"""Contract tests: the shim's responses, field by field, against the shapes REST.md documents (gen 2).

Scenarios: the platform's gen 1 and gen 2 fixture sets, a batch that failed critically, a status no generation has
(the §8 fallback), `processing_pipelines` with essays at each stage (current_phase), every row of the §8 mapping,
and the user list's pagination, order and status filter.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from tests.app.graphql.conftest import FIXTURE_BATCH, FIXTURE_USER
from tests.app.rest.conftest import Rest
from tests.helpers.documented import SECTION_8, check_batch, check_user_batches
from tests.helpers.events import (
    EPOCH,
    cj_completed,
    phase_outcome,
    pipeline_completed,
    project,
    registered,
    slot_assigned,
    spellchecked,
)

STATUS = f"/batches/{FIXTURE_BATCH}/status"

SPELLCHECK_ERROR = {
    "error_code": "SPELLCHECK_SERVICE_ERROR",
    "message": "{'error_code': 'CONTENT_SERVICE_ERROR', 'error_message': 'Content storage returned empty "
    "storage_id', 'correlation_id': '73efe59d-a9ea-5325-9c4b-072ef06c94dd', 'timestamp': "
    "'2025-08-01T12:00:21+00:00', 'service': 'spellchecker_service', 'details': {'essay_id': "
    "'c9ff7af5-8e6b-507a-952e-2a14bd22169c'}}",
    "correlation_id": "73efe59d-a9ea-5325-9c4b-072ef06c94dd",
    "timestamp": "2025-08-01T12:00:21+00:00",
    "service": "result_aggregator_service",
    "operation": "process_spellcheck_result",
    "details": {
        "status": "spellcheck_failed",
        "batch_id": FIXTURE_BATCH,
        "essay_id": "c9ff7af5-8e6b-507a-952e-2a14bd22169c",
    },
    "stack_trace": None,
    "trace_id": None,
    "span_id": None,
}


def _essay(essay_id: str, **fields: Any) -> dict[str, Any]:
    essay: dict[str, Any] = {
        "essay_id": essay_id,
        "filename": None,
        "file_upload_id": None,
        "spellcheck_status": None,
        "spellcheck_correction_count": None,
        "spellcheck_corrected_text_storage_id": None,
        "spellcheck_error_detail": None,
        "cj_assessment_status": None,
        "cj_rank": None,
        "cj_score": None,
        "cj_assessment_error_detail": None,
        "last_updated": "2025-08-01T12:05:00",
    }
    essay.update(fields)
    return essay


def _fixture_essays(gen: str) -> list[dict[str, Any]]:
    """The fixture batch's essays: one slot assignment, two spellcheck results, a CJ ranking of three."""
    gen2 = gen == "gen2"
    return [
        _essay(
            "171b04c1-1125-5665-b999-10266c83625c",
            cj_assessment_status="completed",
            cj_rank=4 if gen2 else 3,
            cj_score=-0.62,
        ),
        _essay(
            "933a31a2-d0b4-5f91-8446-9ca05502b255",
            cj_assessment_status="completed",
            cj_rank=3 if gen2 else 2,
            cj_score=0.41,
        ),
        _essay(
            "bb52cb47-ff0d-5c47-86ea-11c46b2b904a",
            filename="anna_svensson_essay.docx" if gen2 else None,  # gen 1 slot events carry no file name
            file_upload_id="upl-bb52cb47",
            spellcheck_status="completed",
            spellcheck_correction_count=7,
            spellcheck_corrected_text_storage_id="corr-bb52cb47",
            cj_assessment_status="completed",
            cj_rank=1,
            cj_score=1.73,
        ),
        _essay(
            "c9ff7af5-8e6b-507a-952e-2a14bd22169c",
            spellcheck_status="failed",
            spellcheck_correction_count=0 if gen2 else None,  # gen 2 sends 0 on failure, gen 1 nothing
            spellcheck_error_detail=SPELLCHECK_ERROR,
            last_updated="2025-08-01T12:00:21",
        ),
    ]


async def test_gen2_fixtures_field_by_field(api: Rest, gen2: None) -> None:
    batch = await api.json(STATUS)
    check_batch(batch)
    assert batch == {
        "batch_id": FIXTURE_BATCH,
        "user_id": FIXTURE_USER,
        "overall_status": "completed_with_failures",
        "essay_count": 4,
        "completed_essay_count": 3,
        "failed_essay_count": 1,
        "requested_pipeline": None,
        "current_phase": None,
        "essays": _fixture_essays("gen2"),
        "created_at": "2025-08-01T12:00:00",
        "last_updated": "2025-08-01T12:06:50",
        "processing_started_at": "2025-08-01T12:00:12",
        "processing_completed_at": "2025-08-01T12:06:50",
        "assignment_id": "assign-eng5-uniforms",
        "student_prompt_ref": {
            "references": {"student_prompt_text": {"path": "prompts/eng5/uniforms.txt", "storage_id": "prompt-5d1e"}}
        },
    }


async def test_gen1_fixtures_field_by_field(api: Rest, gen1: None) -> None:
    # The gen 1 fixture set ends with spellcheck failing critically (after CJ completed): overall `failed`.
    batch = await api.json(STATUS)
    check_batch(batch)
    assert batch == {
        "batch_id": FIXTURE_BATCH,
        "user_id": FIXTURE_USER,
        "overall_status": "failed",
        "essay_count": 4,
        "completed_essay_count": 3,
        "failed_essay_count": 1,
        "requested_pipeline": None,
        "current_phase": None,
        "essays": _fixture_essays("gen1"),
        "created_at": "2025-08-01T12:00:00",
        "last_updated": "2025-08-01T12:06:40",
        "processing_started_at": "2025-08-01T12:00:12",
        "processing_completed_at": "2025-08-01T12:06:40",
        "assignment_id": None,
        "student_prompt_ref": None,
    }


async def test_the_user_list_holds_the_same_documents(api: Rest, gen2: None) -> None:
    listed = await api.json(f"/batches/user/{FIXTURE_USER}")
    check_user_batches(listed)
    assert listed == {"batches": [await api.json(STATUS)], "pagination": {"limit": 20, "offset": 0, "total": 1}}


async def test_a_gen2_batch_that_failed_critically(engine: AsyncEngine, api: Rest) -> None:
    at = EPOCH + timedelta(minutes=3)
    await project(
        engine,
        [
            registered("gen2", "b-fail", "t1", ["e1", "e2"], EPOCH),
            slot_assigned("gen2", "b-fail", "e1", EPOCH + timedelta(seconds=1)),
            slot_assigned("gen2", "b-fail", "e2", EPOCH + timedelta(seconds=2)),
            spellchecked("gen2", "b-fail", "e1", False, 0, EPOCH + timedelta(minutes=1)),
            spellchecked("gen2", "b-fail", "e2", False, 0, EPOCH + timedelta(minutes=2)),
            phase_outcome("gen2", "b-fail", "spellcheck", "failed_critically", [], ["e1", "e2"], at),
        ],
    )
    batch = await api.json("/batches/b-fail/status")
    check_batch(batch)
    assert batch["overall_status"] == "failed"
    assert batch["current_phase"] is None
    assert (batch["completed_essay_count"], batch["failed_essay_count"]) == (0, 0)  # rule P: counts unchanged
    assert batch["processing_completed_at"] == "2025-08-01T12:03:00"
    assert [e["spellcheck_status"] for e in batch["essays"]] == ["failed", "failed"]
    assert [e["spellcheck_error_detail"]["error_code"] for e in batch["essays"]] == ["SPELLCHECK_SERVICE_ERROR"] * 2
    assert [e["filename"] for e in batch["essays"]] == ["e1.docx", "e2.docx"]
    assert [e["last_updated"] for e in batch["essays"]] == ["2025-08-01T12:01:00", "2025-08-01T12:02:00"]


async def test_a_status_no_generation_has_falls_back_to_processing(engine: AsyncEngine, api: Rest) -> None:
    await project(
        engine,
        [
            registered("gen2", "b-new", "t1", ["e1"], EPOCH),
            pipeline_completed("b-new", 1, 0, "archived_by_newer_platform", EPOCH + timedelta(minutes=1)),
        ],
    )
    batch = await api.json("/batches/b-new/status")
    check_batch(batch)
    assert (batch["overall_status"], batch["current_phase"]) == ("processing", None)


async def test_current_phase_while_processing_pipelines(engine: AsyncEngine, api: Rest) -> None:
    # processing_pipelines arrives as a pipeline's final status; the phase then comes from the essays' stages.
    running = EPOCH + timedelta(minutes=5)
    batches = {"b-spell": ["s1", "s2"], "b-cj": ["c1", "c2"], "b-done": ["d1"], "b-empty": []}
    messages = []
    for batch_id, essays in batches.items():
        messages.append(registered("gen2", batch_id, "t-run", essays, EPOCH))
        messages.append(pipeline_completed(batch_id, 0, 0, "processing_pipelines", running))
        messages += [slot_assigned("gen2", batch_id, e, EPOCH + timedelta(seconds=1)) for e in essays]
    at = EPOCH + timedelta(minutes=1)
    messages += [
        # b-spell: one essay spellchecked, one not yet → spellcheck
        spellchecked("gen2", "b-spell", "s1", True, 2, at),
        # b-cj: both spellchecked (one failed: terminal too), CJ ranked only one → cj_assessment
        spellchecked("gen2", "b-cj", "c1", True, 2, at),
        spellchecked("gen2", "b-cj", "c2", False, 0, at),
        cj_completed("gen1", "b-cj", ["c1"], at + timedelta(minutes=1)),
        # b-done: spellchecked and ranked → nothing open, null
        spellchecked("gen2", "b-done", "d1", True, 0, at),
        cj_completed("gen1", "b-done", ["d1"], at + timedelta(minutes=1)),
    ]
    await project(engine, messages)
    phases = {}
    for batch_id in batches:
        batch = await api.json(f"/batches/{batch_id}/status")
        check_batch(batch)
        assert batch["overall_status"] == "processing"
        phases[batch_id] = batch["current_phase"]
    # b-empty has no essays: the original fell back to a BOS field no consumed event carries.
    assert phases == {"b-spell": "spellcheck", "b-cj": "cj_assessment", "b-done": None, "b-empty": None}

    listed = await api.json("/batches/user/t-run", params={"status": "processing_pipelines"})
    check_user_batches(listed)
    assert {b["batch_id"]: b["current_phase"] for b in listed["batches"]} == phases


async def test_every_row_of_the_status_mapping(engine: AsyncEngine, api: Rest) -> None:
    messages = []
    for i, internal in enumerate(SECTION_8):
        batch_id = f"b-{internal}"
        messages.append(registered("gen2", batch_id, "t-map", [], EPOCH + timedelta(minutes=i)))
        messages.append(pipeline_completed(batch_id, 0, 0, internal, EPOCH + timedelta(hours=1)))
    await project(engine, messages)

    listed = await api.json("/batches/user/t-map", params={"limit": "100"})
    check_user_batches(listed)
    assert {b["batch_id"]: b["overall_status"] for b in listed["batches"]} == {
        f"b-{internal}": client for internal, client in SECTION_8.items()
    }
    assert all(b["current_phase"] is None for b in listed["batches"])  # no essays anywhere
    for internal, client in SECTION_8.items():
        assert (await api.json(f"/batches/b-{internal}/status"))["overall_status"] == client
        if internal != "archived_by_newer_platform":  # not a BatchStatus value: refused as a filter (test_errors)
            filtered = await api.json("/batches/user/t-map", params={"status": internal})
            assert [b["batch_id"] for b in filtered["batches"]] == [f"b-{internal}"]
            assert filtered["pagination"]["total"] == 1


async def test_user_list_pages_newest_first_with_the_real_total(engine: AsyncEngine, api: Rest) -> None:
    messages = [registered("gen2", f"b{i:02d}", "t-many", [f"e{i}"], EPOCH + timedelta(minutes=i)) for i in range(7)]
    # Two batches registered at the same instant: the id breaks the tie (descending, like GraphQL's `batches`).
    messages.append(registered("gen2", "b03x", "t-many", [], EPOCH + timedelta(minutes=3)))
    messages.append(registered("gen2", "other", "someone-else", [], EPOCH))
    await project(engine, messages)

    newest_first = ["b06", "b05", "b04", "b03x", "b03", "b02", "b01", "b00"]
    whole = await api.json("/batches/user/t-many", params={"limit": "100"})
    assert [b["batch_id"] for b in whole["batches"]] == newest_first
    assert whole["pagination"] == {"limit": 100, "offset": 0, "total": 8}

    page = await api.json("/batches/user/t-many", params={"limit": "3", "offset": "2"})
    check_user_batches(page)
    assert [b["batch_id"] for b in page["batches"]] == newest_first[2:5]
    assert page["pagination"] == {"limit": 3, "offset": 2, "total": 8}  # gen 2: the real count, not len(batches)

    beyond = await api.json("/batches/user/t-many", params={"offset": "50"})
    assert beyond == {"batches": [], "pagination": {"limit": 20, "offset": 50, "total": 8}}

    nobody = await api.json("/batches/user/nobody")
    assert nobody == {"batches": [], "pagination": {"limit": 20, "offset": 0, "total": 0}}


async def test_datetimes_are_naive_utc_with_microseconds_only_when_non_zero(engine: AsyncEngine, api: Rest) -> None:
    precise = EPOCH + timedelta(microseconds=123456)
    await project(
        engine,
        [
            registered("gen2", "b-us", "t1", ["e1"], precise),
            slot_assigned("gen2", "b-us", "e1", EPOCH + timedelta(seconds=1, microseconds=500)),
        ],
    )
    batch = await api.json("/batches/b-us/status")
    check_batch(batch)
    assert batch["created_at"] == "2025-08-01T12:00:00.123456"
    assert batch["essays"][0]["last_updated"] == "2025-08-01T12:00:01.000500"
    assert batch["processing_started_at"] is None and batch["processing_completed_at"] is None


async def test_every_essay_is_listed_in_essay_id_order(engine: AsyncEngine, api: Rest) -> None:
    essays = [f"e{i}" for i in range(5)]
    await project(
        engine,
        [
            registered("gen2", "b-big", "t1", essays, EPOCH),
            registered("gen2", "b-small", "t1", ["x1"], EPOCH + timedelta(minutes=1)),
            *[slot_assigned("gen2", "b-big", e, EPOCH + timedelta(seconds=1)) for e in reversed(essays)],
            slot_assigned("gen2", "b-small", "x1", EPOCH + timedelta(minutes=1)),
        ],
    )
    assert [e["essay_id"] for e in (await api.json("/batches/b-big/status"))["essays"]] == essays
    listed = await api.json("/batches/user/t1")
    assert [[e["essay_id"] for e in b["essays"]] for b in listed["batches"]] == [["x1"], essays]
