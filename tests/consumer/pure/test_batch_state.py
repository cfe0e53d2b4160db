"""Rule P and the pipeline verdict as a fold over facts (EVENTS.md §4.5, §5.3), without a database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from consumer.pure.batch_state import Fact, derive

T0 = datetime(2025, 8, 1, 12, 0, tzinfo=UTC)


def outcome(phase: str, status: str, done: int, failed: int, minute: int) -> Fact:
    body = {"phase": phase, "status": status, "completed_count": done, "failed_count": failed, "correlation_id": "c"}
    return Fact("phase_outcome", T0 + timedelta(minutes=minute), f"{phase}{minute}", body)


def pipeline(status: str, ok: int, failed: int, minute: int) -> Fact:
    body = {
        "final_status": status,
        "completed_phases": ["spellcheck", "cj_assessment"],
        "successful_essay_count": ok,
        "failed_essay_count": failed,
        "processing_duration_seconds": 1.0,
    }
    return Fact("pipeline_completed", T0 + timedelta(minutes=minute), f"p{minute}", body)


def test_registered_batch_without_facts_awaits_content() -> None:
    state = derive("b", 4, T0, [], None, None)
    assert (state.status, state.completed_essay_count, state.failed_essay_count) == (
        "awaiting_content_validation",
        0,
        0,
    )
    assert state.last_updated == T0 and state.processing_started_at is None


def test_outcome_covering_every_essay_sets_the_overall_status() -> None:
    assert derive("b", 4, T0, [outcome("spellcheck", "completed_successfully", 4, 0, 1)], None, None).status == (
        "completed_successfully"
    )
    mixed = derive("b", 4, T0, [outcome("spellcheck", "completed_with_failures", 3, 1, 1)], None, None)
    assert (mixed.status, mixed.completed_essay_count, mixed.failed_essay_count) == ("completed_with_failures", 3, 1)
    assert mixed.processing_completed_at == T0 + timedelta(minutes=1)


def test_outcome_covering_fewer_essays_keeps_status_but_raises_counts() -> None:
    state = derive("b", 4, T0, [outcome("spellcheck", "completed_with_failures", 2, 1, 1)], None, None)
    assert (state.status, state.completed_essay_count, state.failed_essay_count) == (
        "awaiting_content_validation",
        2,
        1,
    )


def test_counts_only_grow_across_phases() -> None:
    facts = [
        outcome("spellcheck", "completed_with_failures", 3, 1, 1),
        outcome("cj_assessment", "completed_successfully", 3, 0, 2),
    ]
    state = derive("b", 4, T0, facts, None, None)
    assert (state.status, state.completed_essay_count, state.failed_essay_count) == ("completed_with_failures", 3, 1)
    assert set(state.phase_stats) == {"spellcheck", "cj_assessment"}


def test_critical_failure_sets_error_and_keeps_counts() -> None:
    facts = [
        outcome("spellcheck", "completed_with_failures", 2, 1, 1),
        outcome("spellcheck", "failed_critically", 0, 4, 2),
    ]
    state = derive("b", 4, T0, facts, None, None)
    assert state.status == "failed_critically"
    assert (state.completed_essay_count, state.failed_essay_count) == (2, 1)
    assert state.error_detail is not None
    assert state.error_detail["error_code"] == "PROCESSING_ERROR"
    assert state.error_detail["details"] == {"batch_id": "b", "phase": "spellcheck", "status": "failed_critically"}


def test_unknown_outcome_status_changes_nothing_but_the_phase_stats() -> None:
    state = derive("b", 4, T0, [outcome("nlp", "processing_pipelines", 4, 0, 1)], None, None)
    assert (state.status, state.completed_essay_count) == ("awaiting_content_validation", 0)
    assert state.phase_stats["nlp"]["status"] == "processing_pipelines"


def test_pipeline_verdict_overwrites_status_and_counts() -> None:
    facts = [outcome("spellcheck", "completed_with_failures", 3, 1, 1), pipeline("completed_with_failures", 3, 1, 5)]
    state = derive("b", 4, T0, facts, None, None)
    assert (state.status, state.completed_essay_count, state.failed_essay_count) == ("completed_with_failures", 3, 1)
    assert state.completed_phases == ["spellcheck", "cj_assessment"]
    assert state.processing_completed_at == T0 + timedelta(minutes=5)


def test_fold_follows_fact_time_not_list_order() -> None:
    facts = [
        pipeline("student_validation_completed", 1, 0, 9),
        outcome("spellcheck", "completed_successfully", 4, 0, 1),
    ]
    assert derive("b", 4, T0, facts, None, None).status == "student_validation_completed"
    assert derive("b", 4, T0, list(reversed(facts)), None, None).status == "student_validation_completed"


def test_essay_activity_spans_processing_and_last_update() -> None:
    first, last = T0 + timedelta(seconds=30), T0 + timedelta(hours=2)
    state = derive("b", 4, T0, [outcome("spellcheck", "completed_successfully", 4, 0, 10)], first, last)
    assert state.processing_started_at == first
    assert state.last_updated == last


def test_assignment_comes_from_the_newest_assessment() -> None:
    facts = [
        Fact("assessment", T0 + timedelta(minutes=2), "a2", {"assignment_id": "new"}),
        Fact("assessment", T0 + timedelta(minutes=1), "a1", {"assignment_id": "old"}),
        Fact("assessment", T0 + timedelta(minutes=3), "a3", {"assignment_id": None}),
    ]
    assert derive("b", 4, T0, facts, None, None).assignment_id == "new"
