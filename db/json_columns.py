"""The JSON columns of the read model parsed into the typed parts of db/rows.py: error details, a batch's phase
outcomes, the student prompt's storage reference. Lenient by design: a value the producer left out or mistyped
becomes None (or a zero count), never an error, since the rows are what the platform's events said.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from db.rows import ErrorDetail, Json, PhaseOutcome, StorageRef


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _instant(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    try:
        return datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        return None


def error_detail(raw: Json | None) -> ErrorDetail | None:
    if not isinstance(raw, dict):
        return None
    return ErrorDetail(
        error_code=_text(raw.get("error_code")),
        message=_text(raw.get("message")),
        correlation_id=_text(raw.get("correlation_id")),
        timestamp=_instant(raw.get("timestamp")),
        service=_text(raw.get("service")),
        operation=_text(raw.get("operation")),
        details=raw.get("details"),
        stack_trace=_text(raw.get("stack_trace")),
        trace_id=_text(raw.get("trace_id")),
        span_id=_text(raw.get("span_id")),
    )


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def phase_outcomes(phase_stats: Json | None) -> tuple[PhaseOutcome, ...]:
    outcomes = []
    for phase, stats in (phase_stats or {}).items():
        if isinstance(stats, dict):
            outcomes.append(
                PhaseOutcome(
                    phase=phase,
                    status=str(stats.get("status", "")),
                    completed_count=_count(stats.get("completed_count")),
                    failed_count=_count(stats.get("failed_count")),
                    completed_at=_instant(stats.get("completed_at")),
                )
            )
    return tuple(sorted(outcomes, key=lambda o: (o.completed_at is None, o.completed_at or datetime.min, o.phase)))


def prompt_reference(raw: Json | None) -> StorageRef | None:
    """The student prompt's storage reference: the `student_prompt_text` entry, else the first one."""
    references = raw.get("references") if isinstance(raw, dict) else None
    if not isinstance(references, dict) or not references:
        return None
    content_type = "student_prompt_text" if "student_prompt_text" in references else next(iter(references))
    entry = references[content_type]
    if not isinstance(entry, dict) or not entry:
        return None
    # Like the consumer's `first_id`: the helper writes storage_id first, gen 1 writes {"default": id}.
    storage_id = entry.get("storage_id", next(iter(entry.values())))
    return StorageRef(content_type, str(storage_id), _text(entry.get("path")) or None)
