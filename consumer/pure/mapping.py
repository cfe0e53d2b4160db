"""Validated event → the rows it contributes (EVENTS.md §4–§5). Pure: no I/O, so it is tested without a database.

Every row carries `fact_at`, the time the producer stamped on the payload itself. The envelope's
`event_timestamp` is only a fallback because the outbox relay renews it on every re-send, while `data` (and the
stamps inside it) travels unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from consumer.pure import contracts as c
from consumer.pure.decode import Event, PoisonMessage

SPELLCHECK = "spellcheck"
CJ_ASSESSMENT = "cj_assessment"
SERVICE_NAME = "result_aggregator_service"

Row = dict[str, Any]


@dataclass
class Rows:
    """The rows a set of events contributes, by table, before reduction to one row per key."""

    registrations: list[Row] = field(default_factory=list)
    batch_facts: list[Row] = field(default_factory=list)
    essay_slots: list[Row] = field(default_factory=list)
    essay_links: list[Row] = field(default_factory=list)
    phase_results: list[Row] = field(default_factory=list)

    def extend(self, other: Rows) -> None:
        self.registrations += other.registrations
        self.batch_facts += other.batch_facts
        self.essay_slots += other.essay_slots
        self.essay_links += other.essay_links
        self.phase_results += other.phase_results


def _fact_at(event: Event, *stamps: datetime | None) -> datetime:
    for stamp in (*stamps, event.envelope.event_timestamp, event.record_time):
        if stamp is not None:
            return stamp
    raise PoisonMessage("event carries no timestamp at all (payload, envelope and record)")


def _error_detail(code: str, message: str, event: Event, at: datetime, operation: str, details: Row) -> Row:
    # The ErrorDetail JSON shape callers of the REST API already parse (REST.md).
    return {
        "error_code": code,
        "message": message,
        "correlation_id": event.envelope.correlation_id,
        "timestamp": at.isoformat(),
        "service": SERVICE_NAME,
        "operation": operation,
        "details": details,
        "stack_trace": None,
        "trace_id": None,
        "span_id": None,
    }


def _stage(status: str) -> str:
    # Rule S1: any status naming success completes the stage; everything else fails it.
    return "completed" if "SUCCESS" in status.upper() else "failed"


def _spellcheck_error(event: Event, data: c.ProcessingUpdate, essay_id: str, batch_id: str, at: datetime) -> Row | None:
    # Rule S3: only a failed stage with something in error_info gets an error detail; its message is the
    # Python rendering of error_info, as the original service produced it.
    error_info = data.system_metadata.error_info
    if _stage(data.status) != "failed" or not error_info:
        return None
    details = {"essay_id": essay_id, "batch_id": batch_id, "status": data.status}
    return _error_detail("SPELLCHECK_SERVICE_ERROR", str(error_info), event, at, "process_spellcheck_result", details)


def _registration(event: Event, data: c.BatchEssaysRegisteredGen1 | c.BatchEssaysRegisteredGen2) -> Rows:
    prompt = data.student_prompt_ref if isinstance(data, c.BatchEssaysRegisteredGen2) else None
    row: Row = {
        "batch_id": data.entity_id,
        "user_id": data.user_id,
        "course_code": data.course_code,
        "class_id": getattr(data, "class_id", None),
        "org_id": getattr(data, "org_id", None),
        "essay_count": data.expected_essay_count,
        "essay_ids": data.essay_ids,
        "student_prompt_ref": prompt.model_dump(mode="json") if prompt else None,
        "registration_digest": event.digest,
        "created_at": _fact_at(event, data.metadata.timestamp),
    }
    return Rows(registrations=[row])


def _slot(event: Event, data: c.EssaySlotAssignedGen1) -> Rows:
    row: Row = {
        "essay_id": data.essay_id,
        "batch_id": data.batch_id,
        "filename": getattr(data, "original_file_name", None),
        "file_upload_id": data.file_upload_id,
        "original_text_storage_id": data.text_storage_id,
        "slot_fact_at": _fact_at(event, data.timestamp),
        "slot_digest": event.digest,
    }
    return Rows(essay_slots=[row])


def _batch_fact(event: Event, batch_id: str, kind: str, at: datetime, body: Row) -> Row:
    return {"batch_id": batch_id, "kind": kind, "digest": event.digest, "fact_at": at, "body": body}


def _phase_outcome(event: Event, data: c.ELSBatchPhaseOutcome) -> Rows:
    body: Row = {
        "phase": data.phase_name,
        "status": data.phase_status,
        "completed_count": len(data.processed_essays),
        "failed_count": len(data.failed_essay_ids),
        "correlation_id": data.correlation_id or event.envelope.correlation_id,
    }
    return Rows(batch_facts=[_batch_fact(event, data.batch_id, "phase_outcome", _fact_at(event), body)])


def _pipeline_completed(event: Event, data: c.BatchPipelineCompletedGen2) -> Rows:
    body: Row = {
        "final_status": data.final_status,
        "completed_phases": data.completed_phases,
        "successful_essay_count": data.successful_essay_count,
        "failed_essay_count": data.failed_essay_count,
        "processing_duration_seconds": data.processing_duration_seconds,
    }
    at = _fact_at(event, data.metadata.timestamp)
    return Rows(batch_facts=[_batch_fact(event, data.batch_id, "pipeline_completed", at, body)])


def _result(rows: Rows, event: Event, essay_id: str, batch_id: str, phase: str, at: datetime, **columns: Any) -> Rows:
    """Add one essay's phase result (and the link of its essay to the batch) to `rows`; returns `rows`."""
    row: Row = {"essay_id": essay_id, "phase": phase, "batch_id": batch_id, "fact_at": at, "digest": event.digest}
    row.update(columns)
    rows.essay_links.append({"essay_id": essay_id, "batch_id": batch_id})
    rows.phase_results.append(row)
    return rows


def _spellcheck_gen1(event: Event, data: c.SpellcheckResultDataGen1) -> Rows:
    meta = data.system_metadata
    if not meta.parent_id:
        raise PoisonMessage("spellcheck result has no batch id in system_metadata.parent_id")
    at = _fact_at(event, data.timestamp, meta.completed_at)
    corrected = data.storage_metadata.first_id("corrected_text") if data.storage_metadata else None
    return _result(
        Rows(),
        event,
        meta.entity_id,
        meta.parent_id,
        SPELLCHECK,
        at,
        status=_stage(data.status),
        source_status=data.status,
        started_at=meta.started_at,
        completed_at=meta.completed_at,
        error_detail=_spellcheck_error(event, data, meta.entity_id, meta.parent_id, at),
        correction_count=data.corrections_made,
        corrected_text_storage_id=corrected,
    )


def _spellcheck_gen2(event: Event, data: c.SpellcheckResultGen2) -> Rows:
    if not data.entity_id:
        raise PoisonMessage("spellcheck result has no essay id in entity_id")
    meta = data.system_metadata
    metrics = data.correction_metrics
    at = _fact_at(event, data.timestamp, meta.completed_at)
    return _result(
        Rows(),
        event,
        data.entity_id,
        data.batch_id,
        SPELLCHECK,
        at,
        status=_stage(data.status),
        source_status=data.status,
        started_at=meta.started_at,
        completed_at=meta.completed_at,
        error_detail=_spellcheck_error(event, data, data.entity_id, data.batch_id, at),
        correction_count=data.corrections_made,
        corrected_text_storage_id=data.corrected_text_storage_id,
        total_corrections=metrics.total_corrections,
        l2_dictionary_corrections=metrics.l2_dictionary_corrections,
        spellchecker_corrections=metrics.spellchecker_corrections,
        word_count=metrics.word_count,
        correction_density=metrics.correction_density,
        processing_duration_ms=data.processing_duration_ms,
        processor_version=data.processor_version,
    )


def _cj_gen1(event: Event, data: c.CJAssessmentCompletedGen1) -> Rows:
    batch_id = data.entity_id
    if not batch_id:
        raise PoisonMessage("CJ assessment result has no batch id in entity_id")
    at = _fact_at(event, data.timestamp, data.system_metadata.completed_at)
    rows = Rows()
    for item in data.rankings:
        if item.els_essay_id is None:
            continue
        _result(
            rows,
            event,
            item.els_essay_id,
            batch_id,
            CJ_ASSESSMENT,
            at,
            status="completed",
            source_status=data.status,
            completed_at=data.system_metadata.completed_at,
            rank=item.rank,
            score=item.score,
            details={"cj_assessment_job_id": data.cj_assessment_job_id},
        )
    return rows


def _assessment_gen2(event: Event, data: c.AssessmentResultGen2) -> Rows:
    at = _fact_at(event, data.assessed_at, data.timestamp)
    comparisons = data.assessment_metadata.get("comparison_count")
    comparison_count = comparisons if isinstance(comparisons, int) and not isinstance(comparisons, bool) else None
    body: Row = {"assignment_id": data.assignment_id, "cj_assessment_job_id": data.cj_assessment_job_id}
    rows = Rows(batch_facts=[_batch_fact(event, data.batch_id, "assessment", at, body)])
    for result in data.essay_results:
        if result.is_anchor:
            continue
        details = {
            "cj_assessment_job_id": data.cj_assessment_job_id,
            "assessment_method": data.assessment_method,
            "model_used": data.model_used,
            "feedback_uri": result.feedback_uri,
            "metrics_uri": result.metrics_uri,
        }
        _result(
            rows,
            event,
            result.essay_id,
            data.batch_id,
            CJ_ASSESSMENT,
            at,
            status="completed",
            source_status="completed",
            completed_at=data.assessed_at,
            rank=result.rank,
            score=result.bt_score,
            normalized_score=result.normalized_score,
            letter_grade=result.letter_grade,
            confidence_score=result.confidence_score,
            confidence_label=result.confidence_label,
            comparison_count=comparison_count,
            details=details,
        )
    return rows


def rows_for(event: Event) -> Rows:
    """The rows one event contributes. Raises `PoisonMessage` for a valid payload RAS still cannot place."""
    payload = event.payload
    match payload:
        case c.BatchEssaysRegisteredGen1() | c.BatchEssaysRegisteredGen2():
            return _registration(event, payload)
        case c.EssaySlotAssignedGen1():
            return _slot(event, payload)
        case c.ELSBatchPhaseOutcome():
            return _phase_outcome(event, payload)
        case c.SpellcheckResultDataGen1():
            return _spellcheck_gen1(event, payload)
        case c.SpellcheckResultGen2():
            return _spellcheck_gen2(event, payload)
        case c.CJAssessmentCompletedGen1():
            return _cj_gen1(event, payload)
        case c.AssessmentResultGen2():
            return _assessment_gen2(event, payload)
        case c.BatchPipelineCompletedGen2():
            return _pipeline_completed(event, payload)
    raise PoisonMessage(f"no mapping to rows for {type(payload).__name__}")
