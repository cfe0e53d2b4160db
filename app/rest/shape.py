"""Rows → the REST JSON documents the original service's callers parse (REST.md, gen 2 shape). Pure: no I/O.

Key order is fixed here (the order of the original's response models, gen 2's additions last), so equal rows always
give equal bytes: the shim's ETag and its cached bodies rely on that.

Datetimes are written as the original wrote them: naive UTC through `isoformat()`, e.g. "2025-08-01T12:00:00" or
"2025-08-01T12:00:00.123456" (microseconds only when non-zero, no zone). Our columns are timestamptz, so each
value is converted to UTC and its zone dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from app.reads import status
from db.rows import BatchRow, EssayRow, PhaseProgress, PhaseResultRow

Json = dict[str, Any]

# ErrorDetail JSON keys, in REST.md's order. The consumer stores exactly these; anything else is dropped and a
# missing one is null, so callers always see the documented object.
ERROR_DETAIL_KEYS: tuple[str, ...] = (
    "error_code",
    "message",
    "correlation_id",
    "timestamp",
    "service",
    "operation",
    "details",
    "stack_trace",
    "trace_id",
    "span_id",
)


def naive_utc(value: datetime) -> str:
    """The original's datetime text: naive UTC, `isoformat()`."""
    if value.tzinfo is UTC:  # as the driver returns timestamptz values: no conversion needed
        value = value.replace(tzinfo=None)
    elif value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value.isoformat()


def _naive_utc_or_none(value: datetime | None) -> str | None:
    return None if value is None else naive_utc(value)


def error_detail(raw: Json | None) -> Json | None:
    """A stored ErrorDetail JSON as the documented object (REST.md's keys, in its order)."""
    if not isinstance(raw, dict):
        return None
    return {key: raw.get(key) for key in ERROR_DETAIL_KEYS}


def essay_last_updated(essay: EssayRow) -> datetime | None:
    """The newest fact time of the essay's slot assignment and of its phase results."""
    stamps = [result.fact_at for result in essay.results.values()]
    if essay.slot_fact_at is not None:
        stamps.append(essay.slot_fact_at)
    return max(stamps, default=None)


def essay_result(essay: EssayRow, fallback_updated: datetime) -> Json:
    """EssayResultResponse. `fallback_updated` (the batch's) stands in for an essay with no fact time at all,
    which the projection never produces (every essay row comes from a slot or a result), as the field is required."""
    spellcheck: PhaseResultRow | None = essay.spellcheck
    cj: PhaseResultRow | None = essay.cj_assessment
    return {
        "essay_id": essay.essay_id,
        "filename": essay.filename,
        "file_upload_id": essay.file_upload_id,
        "spellcheck_status": spellcheck.status if spellcheck else None,
        "spellcheck_correction_count": spellcheck.correction_count if spellcheck else None,
        "spellcheck_corrected_text_storage_id": spellcheck.corrected_text_storage_id if spellcheck else None,
        "spellcheck_error_detail": error_detail(spellcheck.error_detail) if spellcheck else None,
        "cj_assessment_status": cj.status if cj else None,
        "cj_rank": cj.rank if cj else None,
        "cj_score": cj.score if cj else None,
        "cj_assessment_error_detail": error_detail(cj.error_detail) if cj else None,
        "last_updated": naive_utc(essay_last_updated(essay) or fallback_updated),
    }


def phase_progress(essays: Sequence[EssayRow]) -> PhaseProgress:
    """The batch's essays and those without a terminal spellcheck / CJ result, as reads.phase_progress counts them."""

    def is_open(result: PhaseResultRow | None) -> bool:
        return result is None or result.status not in status.TERMINAL_STAGES

    return PhaseProgress(
        essays=len(essays),
        spellcheck_open=sum(is_open(e.spellcheck) for e in essays),
        cj_assessment_open=sum(is_open(e.cj_assessment) for e in essays),
    )


def batch_status(batch: BatchRow, essays: Sequence[EssayRow]) -> Json:
    """BatchStatusResponse (gen 2): `essays` are all of the batch's essays, in the order to list them."""
    return {
        "batch_id": batch.batch_id,
        "user_id": batch.user_id,
        "overall_status": status.client_status(batch.status),
        "essay_count": batch.essay_count,
        "completed_essay_count": batch.completed_essay_count,
        "failed_essay_count": batch.failed_essay_count,
        # No consumed event names the requested pipeline (README, "What no event says").
        "requested_pipeline": None,
        "current_phase": status.current_phase(batch.status, phase_progress(essays)),
        "essays": [essay_result(essay, batch.last_updated) for essay in essays],
        "created_at": naive_utc(batch.created_at),
        "last_updated": naive_utc(batch.last_updated),
        "processing_started_at": _naive_utc_or_none(batch.processing_started_at),
        "processing_completed_at": _naive_utc_or_none(batch.processing_completed_at),
        "assignment_id": batch.assignment_id,
        "student_prompt_ref": batch.student_prompt_ref,
    }


def user_batches(batches: Sequence[Json], limit: int, offset: int, total: int) -> Json:
    """The user batch list: BatchStatusResponse documents and the page's position in the whole list."""
    return {"batches": list(batches), "pagination": {"limit": limit, "offset": offset, "total": total}}
