"""Query.batch on data projected from the platform's fixtures: every Batch field, both contract generations."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncEngine

from tests.app.graphql.conftest import FIXTURE_BATCH, FIXTURE_USER, Api
from tests.helpers.events import (
    EPOCH,
    phase_outcome,
    pipeline_completed,
    project,
    registered,
    slot_assigned,
    spellchecked,
)

EVERY_BATCH_FIELD = """
query($id: ID!) {
  batch(id: $id) {
    id userId assignmentId courseCode classId orgId
    status statusCode clientStatus currentPhase
    essayCount completedEssayCount failedEssayCount registeredEssayIds requestedPipelines completedPhases
    phaseOutcomes { phase phaseCode status statusCode completedCount failedCount completedAt }
    createdAt lastUpdated processingStartedAt processingCompletedAt
    error { errorCode message correlationId timestamp service operation details stackTrace traceId spanId }
    studentPrompt { contentType storageId path }
    essays { totalCount }
  }
}
"""

ESSAY_IDS = [
    "bb52cb47-ff0d-5c47-86ea-11c46b2b904a",
    "933a31a2-d0b4-5f91-8446-9ca05502b255",
    "171b04c1-1125-5665-b999-10266c83625c",
    "c9ff7af5-8e6b-507a-952e-2a14bd22169c",
]

PROCESSING_ERROR = {
    "errorCode": "PROCESSING_ERROR",
    "message": "Phase spellcheck failed critically",
    "correlationId": "73efe59d-a9ea-5325-9c4b-072ef06c94dd",
    "timestamp": "2025-08-01T12:06:40+00:00",
    "service": "result_aggregator_service",
    "operation": "process_batch_phase_outcome",
    "details": {"batch_id": FIXTURE_BATCH, "phase": "spellcheck", "status": "failed_critically"},
    "stackTrace": None,
    "traceId": None,
    "spanId": None,
}


async def test_gen2_batch_has_every_field(api: Api, gen2: None) -> None:
    batch = (await api.data(EVERY_BATCH_FIELD, {"id": FIXTURE_BATCH}))["batch"]
    outcomes = {o["phase"]: o for o in batch.pop("phaseOutcomes")}
    assert batch == {
        "id": FIXTURE_BATCH,
        "userId": FIXTURE_USER,
        "assignmentId": "assign-eng5-uniforms",
        "courseCode": "ENG5",
        "classId": "class-9b",
        "orgId": None,
        "status": "COMPLETED_WITH_FAILURES",
        "statusCode": "completed_with_failures",
        "clientStatus": "COMPLETED_WITH_FAILURES",
        "currentPhase": None,
        "essayCount": 4,
        "completedEssayCount": 3,
        "failedEssayCount": 1,
        "registeredEssayIds": ESSAY_IDS,
        "requestedPipelines": None,
        "completedPhases": ["spellcheck", "cj_assessment"],
        "createdAt": "2025-08-01T12:00:00+00:00",
        "lastUpdated": "2025-08-01T12:06:50+00:00",
        "processingStartedAt": "2025-08-01T12:00:12+00:00",
        "processingCompletedAt": "2025-08-01T12:06:50+00:00",
        "error": PROCESSING_ERROR,
        "studentPrompt": {
            "contentType": "student_prompt_text",
            "storageId": "prompt-5d1e",
            "path": "prompts/eng5/uniforms.txt",
        },
        "essays": {"totalCount": 4},
    }
    assert outcomes["CJ_ASSESSMENT"] == {
        "phase": "CJ_ASSESSMENT",
        "phaseCode": "cj_assessment",
        "status": "COMPLETED_SUCCESSFULLY",
        "statusCode": "completed_successfully",
        "completedCount": 3,
        "failedCount": 0,
        "completedAt": "2025-08-01T12:06:40+00:00",
    }
    assert outcomes["SPELLCHECK"]["phaseCode"] == "spellcheck"


async def test_gen1_batch_maps_its_statuses(api: Api, gen1: None) -> None:
    batch = (await api.data(EVERY_BATCH_FIELD, {"id": FIXTURE_BATCH}))["batch"]
    assert batch["status"] == "FAILED_CRITICALLY"
    assert batch["clientStatus"] == "FAILED"
    assert batch["assignmentId"] is None
    assert batch["classId"] is None
    assert batch["studentPrompt"] is None
    assert batch["completedPhases"] is None
    assert batch["processingCompletedAt"] == "2025-08-01T12:06:40+00:00"
    assert batch["error"]["errorCode"] == "PROCESSING_ERROR"


async def test_unknown_batch_is_null(api: Api, gen2: None) -> None:
    assert await api.data('{ batch(id: "no-such-batch") { id } }') == {"batch": None}


async def test_a_status_new_to_the_schema_is_unknown_with_its_text(engine: AsyncEngine, api: Api) -> None:
    await project(
        engine,
        [
            registered("gen2", "b-new", "t1", ["e1"], EPOCH),
            pipeline_completed("b-new", 1, 0, "archived_by_newer_platform", EPOCH + timedelta(minutes=1)),
            phase_outcome("gen2", "b-new", "plagiarism_check", "brand_new", ["e1"], [], EPOCH + timedelta(seconds=30)),
        ],
    )
    query = (
        '{ batch(id: "b-new") { status statusCode clientStatus phaseOutcomes { phase phaseCode status statusCode } } }'
    )
    assert (await api.data(query))["batch"] == {
        "status": "UNKNOWN",
        "statusCode": "archived_by_newer_platform",
        "clientStatus": "PROCESSING",  # EVENTS.md §8 fallback
        "phaseOutcomes": [
            {"phase": "UNKNOWN", "phaseCode": "plagiarism_check", "status": "UNKNOWN", "statusCode": "brand_new"}
        ],
    }


async def test_current_phase_follows_the_essays_while_processing(engine: AsyncEngine, api: Api) -> None:
    # processing_pipelines only arrives as a pipeline's final status; the phase then comes from the essays.
    at = EPOCH + timedelta(minutes=5)
    await project(
        engine,
        [
            registered("gen2", "b-run", "t1", ["e1", "e2"], EPOCH),
            pipeline_completed("b-run", 0, 0, "processing_pipelines", at),
            registered("gen2", "b-empty", "t1", [], EPOCH),
            pipeline_completed("b-empty", 0, 0, "processing_pipelines", at),
            slot_assigned("gen2", "b-run", "e1", EPOCH),
            slot_assigned("gen2", "b-run", "e2", EPOCH),
            spellchecked("gen2", "b-run", "e1", True, 3, EPOCH + timedelta(minutes=1)),
        ],
    )
    query = '{ run: batch(id: "b-run") { currentPhase } empty: batch(id: "b-empty") { currentPhase } }'
    assert await api.data(query) == {"run": {"currentPhase": "SPELLCHECK"}, "empty": {"currentPhase": None}}

    await project(engine, [spellchecked("gen2", "b-run", "e2", False, 0, EPOCH + timedelta(minutes=2))])
    assert (await api.data(query))["run"] == {"currentPhase": "CJ_ASSESSMENT"}
