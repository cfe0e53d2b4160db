"""The eight topics RAS subscribes to (EVENTS.md §1). The topic alone decides how a record is read."""

from __future__ import annotations

BATCH_ESSAYS_REGISTERED = "huleedu.batch.essays.registered.v1"
ESSAY_SLOT_ASSIGNED = "huleedu.els.essay.slot.assigned.v1"
ELS_BATCH_PHASE_OUTCOME = "huleedu.els.batch.phase.outcome.v1"
ESSAY_SPELLCHECK_COMPLETED = "huleedu.essay.spellcheck.completed.v1"
CJ_ASSESSMENT_COMPLETED = "huleedu.cj_assessment.completed.v1"
SPELLCHECK_RESULTS = "huleedu.essay.spellcheck.results.v1"
ASSESSMENT_RESULT_PUBLISHED = "huleedu.assessment.result.published.v1"
BATCH_PIPELINE_COMPLETED = "huleedu.batch.pipeline.completed.v1"

ALL_TOPICS: tuple[str, ...] = (
    BATCH_ESSAYS_REGISTERED,
    ESSAY_SLOT_ASSIGNED,
    ELS_BATCH_PHASE_OUTCOME,
    ESSAY_SPELLCHECK_COMPLETED,
    CJ_ASSESSMENT_COMPLETED,
    SPELLCHECK_RESULTS,
    ASSESSMENT_RESULT_PUBLISHED,
    BATCH_PIPELINE_COMPLETED,
)
