"""The pure parts of the shim: datetime text, error details, essays' last_updated, phase progress, parameters."""

from __future__ import annotations

from dataclasses import fields
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from app.rest.params import InvalidParameter, ListParams, list_params, valid_id
from app.rest.shape import (
    ERROR_DETAIL_KEYS,
    batch_status,
    error_detail,
    essay_last_updated,
    essay_result,
    naive_utc,
    phase_progress,
)
from db.rows import BatchRow, EssayRow, PhaseProgress, PhaseResultRow

T0 = datetime(2025, 8, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (T0, "2025-08-01T12:00:00"),
        (T0.replace(microsecond=123456), "2025-08-01T12:00:00.123456"),
        (T0.replace(microsecond=5), "2025-08-01T12:00:00.000005"),
        (datetime(2025, 8, 1, 14, 0, tzinfo=timezone(timedelta(hours=2))), "2025-08-01T12:00:00"),
        (datetime(2025, 8, 1, 0, 30, tzinfo=timezone(timedelta(hours=1))), "2025-07-31T23:30:00"),
        (datetime(2025, 8, 1, 12, 0), "2025-08-01T12:00:00"),  # already naive: taken as UTC
    ],
)
def test_naive_utc(value: datetime, text: str) -> None:
    assert naive_utc(value) == text


def test_error_detail_has_exactly_the_documented_keys_in_order() -> None:
    stored = {"message": "m", "error_code": "X", "extra": 1, "details": {"a": 1}}
    shaped = error_detail(stored)
    assert shaped is not None
    assert tuple(shaped) == ERROR_DETAIL_KEYS
    assert shaped["error_code"] == "X" and shaped["details"] == {"a": 1} and shaped["span_id"] is None
    assert error_detail(None) is None


def result(phase: str, status: str, at: datetime, **columns: Any) -> PhaseResultRow:
    values: dict[str, Any] = {f.name: None for f in fields(PhaseResultRow)}
    values.update(essay_id="e", phase=phase, status=status, fact_at=at, error=None)
    values.update(columns)
    return PhaseResultRow(**values)


def essay(slot_at: datetime | None, *results: PhaseResultRow, essay_id: str = "e") -> EssayRow:
    return EssayRow(essay_id, "b", None, None, None, slot_at, {r.phase: r for r in results})


def test_an_essays_last_updated_is_its_newest_fact() -> None:
    spell = result("spellcheck", "completed", T0 + timedelta(minutes=2))
    cj = result("cj_assessment", "completed", T0 + timedelta(minutes=5))
    assert essay_last_updated(essay(T0, spell)) == T0 + timedelta(minutes=2)
    assert essay_last_updated(essay(T0 + timedelta(hours=1), spell, cj)) == T0 + timedelta(hours=1)
    assert essay_last_updated(essay(None, cj)) == T0 + timedelta(minutes=5)
    assert essay_last_updated(essay(None)) is None
    # Never null in the response: an essay without any fact time (which the projection never makes) takes the batch's.
    assert essay_result(essay(None), T0)["last_updated"] == "2025-08-01T12:00:00"


def test_phase_progress_counts_missing_and_non_terminal_results_as_open() -> None:
    essays = [
        essay(T0, result("spellcheck", "completed", T0), result("cj_assessment", "processing", T0)),
        essay(T0, result("spellcheck", "cancelled", T0)),
        essay(T0, result("spellcheck", "pending", T0), result("cj_assessment", "failed", T0)),
    ]
    assert phase_progress(essays) == PhaseProgress(essays=3, spellcheck_open=1, cj_assessment_open=2)
    assert phase_progress([]) == PhaseProgress(0, 0, 0)


def batch_row(status: str) -> BatchRow:
    return BatchRow(
        batch_id="b",
        user_id="u",
        course_code=None,
        class_id=None,
        org_id=None,
        essay_count=2,
        essay_ids=[],
        requested_pipelines=["spellcheck"],
        student_prompt_ref=None,
        created_at=T0,
        status=status,
        completed_essay_count=0,
        failed_essay_count=0,
        phase_stats={},
        completed_phases=None,
        error_detail=None,
        assignment_id=None,
        processing_started_at=None,
        processing_completed_at=None,
        last_updated=T0,
    )


@pytest.mark.parametrize(
    ("status", "results", "phase"),
    [
        ("processing_pipelines", [], "spellcheck"),
        ("processing_pipelines", [("spellcheck", "completed")], "spellcheck"),  # the other essay has none
        ("processing_pipelines", [("spellcheck", "completed"), ("spellcheck", "failed")], "cj_assessment"),
        (
            "processing_pipelines",
            [
                ("spellcheck", "completed"),
                ("spellcheck", "failed"),
                ("cj_assessment", "completed"),
                ("cj_assessment", "cancelled"),
            ],
            None,
        ),
        ("completed_successfully", [], None),
        ("awaiting_student_validation", [], None),
    ],
)
def test_current_phase_from_the_listed_essays(status: str, results: list[tuple[str, str]], phase: str | None) -> None:
    first = [result(p, s, T0) for i, (p, s) in enumerate(results) if i % 2 == 0]
    second = [result(p, s, T0) for i, (p, s) in enumerate(results) if i % 2 == 1]
    essays = [essay(T0, *first, essay_id="e1"), essay(T0, *second, essay_id="e2")]
    document = batch_status(batch_row(status), essays)
    assert document["current_phase"] == phase
    assert document["requested_pipeline"] is None  # never filled, whatever the row holds


def test_list_params_defaults_and_canonical_form() -> None:
    assert list_params({}) == ListParams(20, 0, None)
    assert list_params({"limit": ["100"], "offset": ["7"], "status": ["cancelled"]}) == ListParams(100, 7, "cancelled")
    assert list_params({"limit": ["+5"]}) == ListParams(5, 0, None)
    assert list_params({"limit": [""], "status": [""]}) == ListParams(20, 0, None)
    assert ListParams(20, 0, None).canonical() == [("limit", "20"), ("offset", "0"), ("status", "")]
    assert list_params({"limit": ["1", ""]}) == ListParams(1, 0, None)
    assert isinstance(list_params({"limit": ["1", "2"]}), InvalidParameter)


@pytest.mark.parametrize(
    ("value", "ok"), [("b1", True), ("x" * 256, True), ("x" * 257, False), (" ", False), ("a\nb", False), ("ü-ß", True)]
)
def test_valid_id(value: str, ok: bool) -> None:
    assert valid_id(value) is ok
