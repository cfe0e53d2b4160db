"""The response shapes as REST.md and EVENTS.md document them, written out here independently of app/.

A contract test checks every field of a real response against these: key set, JSON type, nullability, enum values
and the naive-datetime format. The enum lists are copied from EVENTS.md §7, not imported, so a change in app/
that drifts from the contract fails here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

# EVENTS.md §7, gen 2 BatchClientStatus: the REST `overall_status`.
CLIENT_STATUSES = (
    "pending_content",
    "ready",
    "processing",
    "completed_successfully",
    "completed_with_failures",
    "failed",
    "cancelled",
)
# EVENTS.md §7 PhaseName (gen 2): `current_phase`, lower case.
PHASE_NAMES = ("spellcheck", "ai_feedback", "cj_assessment", "nlp", "student_matching")
# EVENTS.md §7 ProcessingStage: the essays' `*_status`.
PROCESSING_STAGES = ("pending", "initialized", "processing", "completed", "failed", "cancelled")
# EVENTS.md §7 BatchStatus, both generations: the list's `status` parameter.
INTERNAL_STATUSES = (
    "awaiting_content_validation",
    "content_ingestion_failed",
    "awaiting_pipeline_configuration",
    "ready_for_pipeline_execution",
    "processing_pipelines",
    "awaiting_student_validation",
    "validation_timeout_processed",
    "completed_successfully",
    "completed_with_failures",
    "failed_critically",
    "cancelled",
    "guest_class_ready",
    "student_validation_completed",
)
# EVENTS.md §8, gen 2 column, row by row (and the fallback for a value no generation has).
SECTION_8 = {
    "awaiting_content_validation": "pending_content",
    "content_ingestion_failed": "failed",
    "awaiting_pipeline_configuration": "pending_content",
    "ready_for_pipeline_execution": "ready",
    "processing_pipelines": "processing",
    "awaiting_student_validation": "processing",
    "validation_timeout_processed": "processing",
    "guest_class_ready": "processing",
    "completed_successfully": "completed_successfully",
    "completed_with_failures": "completed_with_failures",
    "failed_critically": "failed",
    "cancelled": "cancelled",
    "student_validation_completed": "processing",
    "archived_by_newer_platform": "processing",
}

# REST.md: naive datetimes (no zone), Python isoformat: microseconds only when non-zero.
NAIVE_DATETIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{6})?")


@dataclass(frozen=True)
class Field:
    kind: str  # str, int, float, datetime, object, list
    nullable: bool = False
    values: tuple[str | None, ...] | None = None


ERROR_DETAIL_KEYS = (
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

ESSAY_RESULT = {
    "essay_id": Field("str"),
    "filename": Field("str", nullable=True),
    "file_upload_id": Field("str", nullable=True),
    "spellcheck_status": Field("str", nullable=True, values=PROCESSING_STAGES),
    "spellcheck_correction_count": Field("int", nullable=True),
    "spellcheck_corrected_text_storage_id": Field("str", nullable=True),
    "spellcheck_error_detail": Field("error_detail", nullable=True),
    "cj_assessment_status": Field("str", nullable=True, values=PROCESSING_STAGES),
    "cj_rank": Field("int", nullable=True),
    "cj_score": Field("float", nullable=True),
    "cj_assessment_error_detail": Field("error_detail", nullable=True),
    "last_updated": Field("datetime"),
}

BATCH_STATUS = {
    "batch_id": Field("str"),
    "user_id": Field("str"),
    "overall_status": Field("str", values=CLIENT_STATUSES),
    "essay_count": Field("int"),
    "completed_essay_count": Field("int"),
    "failed_essay_count": Field("int"),
    "requested_pipeline": Field("str", nullable=True),
    "current_phase": Field("str", nullable=True, values=PHASE_NAMES),
    "essays": Field("list"),
    "created_at": Field("datetime"),
    "last_updated": Field("datetime"),
    "processing_started_at": Field("datetime", nullable=True),
    "processing_completed_at": Field("datetime", nullable=True),
    "assignment_id": Field("str", nullable=True),
    "student_prompt_ref": Field("object", nullable=True),
}


def check_naive_datetime(value: Any, where: str) -> None:
    assert isinstance(value, str) and NAIVE_DATETIME.fullmatch(value), f"{where}: {value!r} is not a naive datetime"
    parsed = datetime.fromisoformat(value)
    assert parsed.tzinfo is None, where
    # isoformat writes a fraction exactly when microseconds are non-zero.
    assert ("." in value) == (parsed.microsecond != 0), f"{where}: {value!r}"


def check_field(value: Any, field: Field, where: str) -> None:
    if value is None:
        assert field.nullable, f"{where} is null but not nullable"
        return
    if field.kind == "str":
        assert isinstance(value, str), where
    elif field.kind == "int":
        assert type(value) is int, f"{where}: {value!r} is not an integer"
    elif field.kind == "float":
        assert type(value) is float, f"{where}: {value!r} is not a float"
    elif field.kind == "datetime":
        check_naive_datetime(value, where)
    elif field.kind == "object":
        assert isinstance(value, dict), where
    elif field.kind == "list":
        assert isinstance(value, list), where
    elif field.kind == "error_detail":
        assert isinstance(value, dict) and tuple(value) == ERROR_DETAIL_KEYS, f"{where}: {value!r}"
    else:
        raise AssertionError(f"unknown kind {field.kind}")
    if field.values is not None:
        assert value in field.values, f"{where}: {value!r} not in {field.values}"


def check_essay(essay: Any, where: str) -> None:
    assert isinstance(essay, dict)
    assert list(essay) == list(ESSAY_RESULT), f"{where}: keys {list(essay)}"
    for name, field in ESSAY_RESULT.items():
        check_field(essay[name], field, f"{where}.{name}")


def check_batch(batch: Any, where: str = "batch") -> None:
    """Every field of a BatchStatusResponse (gen 2), and of each of its essays."""
    assert isinstance(batch, dict)
    assert list(batch) == list(BATCH_STATUS), f"{where}: keys {list(batch)}"
    for name, field in BATCH_STATUS.items():
        check_field(batch[name], field, f"{where}.{name}")
    ids = [essay["essay_id"] for essay in batch["essays"]]
    assert ids == sorted(ids), f"{where}: essays not ordered by id"
    for i, essay in enumerate(batch["essays"]):
        check_essay(essay, f"{where}.essays[{i}]")


def check_user_batches(document: Any) -> None:
    assert isinstance(document, dict) and list(document) == ["batches", "pagination"]
    pagination = document["pagination"]
    assert list(pagination) == ["limit", "offset", "total"]
    assert all(type(pagination[k]) is int for k in pagination)
    assert 1 <= pagination["limit"] <= 100 and pagination["offset"] >= 0 and pagination["total"] >= 0
    assert len(document["batches"]) <= pagination["limit"]
    for i, batch in enumerate(document["batches"]):
        check_batch(batch, f"batches[{i}]")


def check_error(body: Any, error: str, code: str, correlation: str) -> None:
    assert isinstance(body, dict) and list(body) == ["error", "error_code", "message", "correlation_id"], body
    assert body["error"] == error and body["error_code"] == code, body
    assert isinstance(body["message"], str) and body["message"], body
    assert body["correlation_id"] == correlation, body
