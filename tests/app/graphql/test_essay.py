"""Query.essay and a batch's essays: essay fields, the PhaseResult interface and its typed shortcuts."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncEngine

from tests.app.graphql.conftest import FIXTURE_BATCH, Api
from tests.helpers.events import EPOCH, project, spellchecked

ESSAY = "bb52cb47-ff0d-5c47-86ea-11c46b2b904a"
FAILED_ESSAY = "c9ff7af5-8e6b-507a-952e-2a14bd22169c"

RESULT_FIELDS = """
  __typename phase phaseCode status statusCode reportedStatus essayId batchId startedAt completedAt recordedAt
  error { errorCode message service operation details }
  details
  ... on SpellcheckResult {
    correctionCount correctedTextStorageId totalCorrections l2DictionaryCorrections spellcheckerCorrections
    wordCount correctionDensity processingDurationMs processorVersion
  }
  ... on CJAssessmentResult {
    rank score normalizedScore letterGrade confidenceScore confidenceLabel comparisonCount
    jobId assessmentMethod modelUsed feedbackUri metricsUri
  }
"""

EVERY_ESSAY_FIELD = f"""
query($id: ID!) {{
  essay(id: $id) {{
    id batchId filename fileUploadId originalTextStorageId slotAssignedAt
    batch {{ id }}
    phaseResults {{ {RESULT_FIELDS} }}
    spellcheck {{ status correctionCount }}
    cjAssessment {{ status rank }}
  }}
}}
"""

SPELLCHECK = {
    "__typename": "SpellcheckResult",
    "phase": "SPELLCHECK",
    "phaseCode": "spellcheck",
    "status": "COMPLETED",
    "statusCode": "completed",
    "reportedStatus": "spellchecked_success",
    "essayId": ESSAY,
    "batchId": FIXTURE_BATCH,
    "startedAt": "2025-08-01T12:00:12+00:00",
    "completedAt": "2025-08-01T12:00:20+00:00",
    "recordedAt": "2025-08-01T12:00:20+00:00",
    "error": None,
    "details": None,
    "correctionCount": 7,
    "correctedTextStorageId": "corr-bb52cb47",
    "totalCorrections": 7,
    "l2DictionaryCorrections": 2,
    "spellcheckerCorrections": 5,
    "wordCount": 312,
    "correctionDensity": 2.24,
    "processingDurationMs": 842,
    "processorVersion": "pyspellchecker_1.0_L2_swedish",
}

CJ = {
    "__typename": "CJAssessmentResult",
    "phase": "CJ_ASSESSMENT",
    "phaseCode": "cj_assessment",
    "status": "COMPLETED",
    "statusCode": "completed",
    "reportedStatus": "completed",
    "essayId": ESSAY,
    "batchId": FIXTURE_BATCH,
    "startedAt": None,
    "completedAt": "2025-08-01T12:05:00+00:00",
    "recordedAt": "2025-08-01T12:05:00+00:00",
    "error": None,
    "details": {
        "cj_assessment_job_id": "412",
        "assessment_method": "cj_assessment",
        "model_used": "claude-3-5-haiku",
        "feedback_uri": None,
        "metrics_uri": None,
    },
    "rank": 1,
    "score": 1.73,
    "normalizedScore": 0.9,
    "letterGrade": "A",
    "confidenceScore": 0.82,
    "confidenceLabel": "HIGH",
    "comparisonCount": 6,
    "jobId": "412",
    "assessmentMethod": "cj_assessment",
    "modelUsed": "claude-3-5-haiku",
    "feedbackUri": None,
    "metricsUri": None,
}


async def test_gen2_essay_has_every_field(api: Api, gen2: None) -> None:
    essay = (await api.data(EVERY_ESSAY_FIELD, {"id": ESSAY}))["essay"]
    assert essay == {
        "id": ESSAY,
        "batchId": FIXTURE_BATCH,
        "filename": "anna_svensson_essay.docx",
        "fileUploadId": "upl-bb52cb47",
        "originalTextStorageId": "orig-bb52cb47",
        "slotAssignedAt": "2025-08-01T12:00:05+00:00",
        "batch": {"id": FIXTURE_BATCH},
        "phaseResults": [SPELLCHECK, CJ],  # pipeline order
        "spellcheck": {"status": "COMPLETED", "correctionCount": 7},
        "cjAssessment": {"status": "COMPLETED", "rank": 1},
    }


async def test_failed_spellcheck_carries_its_error_detail(api: Api, gen2: None) -> None:
    query = """query($id: ID!) {
      essay(id: $id) { spellcheck { status reportedStatus error { errorCode message details } } }
    }"""
    spellcheck = (await api.data(query, {"id": FAILED_ESSAY}))["essay"]["spellcheck"]
    assert spellcheck["status"] == "FAILED"
    assert spellcheck["reportedStatus"] == "spellcheck_failed"
    assert spellcheck["error"]["errorCode"] == "SPELLCHECK_SERVICE_ERROR"
    assert "Content storage returned empty storage_id" in spellcheck["error"]["message"]
    assert spellcheck["error"]["details"] == {
        "essay_id": FAILED_ESSAY,
        "batch_id": FIXTURE_BATCH,
        "status": "spellcheck_failed",
    }


async def test_gen1_essay_reads_nested_storage_ids_and_gen1_cj_scores(api: Api, gen1: None) -> None:
    query = f"query($id: ID!) {{ essay(id: $id) {{ filename phaseResults {{ {RESULT_FIELDS} }} }} }}"
    essay = (await api.data(query, {"id": ESSAY}))["essay"]
    assert essay["filename"] is None  # gen 1 slot events carry no file name
    spellcheck, cj = essay["phaseResults"]
    assert spellcheck["correctedTextStorageId"] == "corr-bb52cb47"
    assert spellcheck["wordCount"] is None
    assert (cj["rank"], cj["score"], cj["letterGrade"], cj["jobId"]) == (1, 1.73, None, "412")
    assert cj["reportedStatus"] == "completed_successfully"


async def test_unknown_essay_is_null(api: Api, gen2: None) -> None:
    assert await api.data('{ essay(id: "nope") { id } }') == {"essay": None}


async def test_essay_before_its_batch_has_no_batch(engine: AsyncEngine, api: Api) -> None:
    # A result can arrive before the registration: the essay exists, its batch is not known yet.
    await project(engine, [spellchecked("gen2", "b-later", "e-early", True, 1, EPOCH + timedelta(minutes=1))])
    query = '{ essay(id: "e-early") { id batchId batch { id } spellcheck { status } } }'
    assert (await api.data(query))["essay"] == {
        "id": "e-early",
        "batchId": "b-later",
        "batch": None,
        "spellcheck": {"status": "COMPLETED"},
    }


async def test_batch_essays_filter_by_phase_status(api: Api, gen2: None) -> None:
    query = """
    query($id: ID!) {
      batch(id: $id) {
        failed: essays(phaseStatus: {phase: SPELLCHECK, statuses: [FAILED]}) { totalCount nodes { id } }
        checked: essays(phaseStatus: {phase: SPELLCHECK}) { totalCount }
        waiting: essays(phaseStatus: {phase: SPELLCHECK, statuses: [], withoutResult: true}) { totalCount nodes { id } }
        ranked: essays(phaseStatus: {phase: CJ_ASSESSMENT, statuses: [COMPLETED]}) { totalCount }
        odd: essays(phaseStatus: {phase: CJ_ASSESSMENT, statuses: [UNKNOWN]}) { totalCount }
        notRanked: essays(phaseStatus: {phase: CJ_ASSESSMENT, statuses: [FAILED], withoutResult: true}) {
          nodes { id }
        }
      }
    }
    """
    batch = (await api.data(query, {"id": FIXTURE_BATCH}))["batch"]
    assert batch["failed"] == {"totalCount": 1, "nodes": [{"id": FAILED_ESSAY}]}
    assert batch["checked"] == {"totalCount": 2}
    assert batch["waiting"]["totalCount"] == 2
    assert {e["id"] for e in batch["waiting"]["nodes"]} == {
        "933a31a2-d0b4-5f91-8446-9ca05502b255",
        "171b04c1-1125-5665-b999-10266c83625c",
    }
    assert batch["ranked"] == {"totalCount": 3}
    assert batch["odd"] == {"totalCount": 0}
    assert batch["notRanked"] == {"nodes": [{"id": FAILED_ESSAY}]}


async def test_essay_pages_follow_cursors(api: Api, gen2: None) -> None:
    query = """
    query($id: ID!, $after: String) {
      batch(id: $id) {
        essays(first: 3, after: $after) {
          totalCount
          pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
          edges { cursor node { id } }
        }
      }
    }
    """
    first = (await api.data(query, {"id": FIXTURE_BATCH}))["batch"]["essays"]
    assert first["totalCount"] == 4
    assert first["pageInfo"]["hasNextPage"] is True
    assert first["pageInfo"]["hasPreviousPage"] is False
    assert first["pageInfo"]["endCursor"] == first["edges"][-1]["cursor"]
    rest = (await api.data(query, {"id": FIXTURE_BATCH, "after": first["pageInfo"]["endCursor"]}))["batch"]["essays"]
    assert rest["pageInfo"]["hasNextPage"] is False
    assert rest["pageInfo"]["hasPreviousPage"] is True
    ids = [e["node"]["id"] for e in first["edges"] + rest["edges"]]
    assert ids == sorted(ids) and len(set(ids)) == 4
