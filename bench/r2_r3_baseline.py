"""What R2 and R3 (bench/r2_r3_uncached.py) measure the GraphQL API against: the answer a hand-written endpoint
would give, the same rows fetched with asyncpg in one read-only REPEATABLE READ transaction, built into dicts by hand
and serialized with orjson. Each must be byte-equal to the GraphQL answer (checked once per run), so everything the
schema adds (enum names, ISO instants, parsed error details, phase outcomes in their order) is spelled out here.
"""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Any

import asyncpg
import orjson

from app.graphql.enums import BatchClientStatus, BatchStatus, PhaseName, ProcessingStage
from app.reads import status as app_status


def _names(enum: type[Enum]) -> dict[str, str]:
    """Wire text → GraphQL enum value name."""
    return {str(member.value): member.name for member in enum}


_BATCH_STATUS = _names(BatchStatus)
_CLIENT_STATUS = _names(BatchClientStatus)
_STAGE = _names(ProcessingStage)
_PHASE = _names(PhaseName)
_TERMINAL = list(app_status.TERMINAL_STAGES)


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _instant(value: Any) -> datetime | None:
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            return None
    return None


def _error(raw: Any) -> dict[str, Any] | None:
    if not isinstance(raw, dict):
        return None
    return {
        "errorCode": _text(raw.get("error_code")),
        "message": _text(raw.get("message")),
        "correlationId": _text(raw.get("correlation_id")),
        "timestamp": _iso(_instant(raw.get("timestamp"))),
        "service": _text(raw.get("service")),
        "operation": _text(raw.get("operation")),
        "details": raw.get("details"),
        "stackTrace": _text(raw.get("stack_trace")),
        "traceId": _text(raw.get("trace_id")),
        "spanId": _text(raw.get("span_id")),
    }


def _common(r: asyncpg.Record) -> dict[str, Any]:
    phase, stage = r["phase"], r["status"]
    return {
        "phase": _PHASE.get(phase, "UNKNOWN"),
        "phaseCode": phase,
        "status": _STAGE.get(stage, "UNKNOWN"),
        "statusCode": stage,
        "reportedStatus": r["source_status"],
        "essayId": r["essay_id"],
        "batchId": r["batch_id"],
        "startedAt": _iso(r["started_at"]),
        "completedAt": _iso(r["completed_at"]),
        "recordedAt": _iso(r["fact_at"]),
    }


def _spellcheck(r: asyncpg.Record | None) -> dict[str, Any] | None:
    if r is None:
        return None
    out = _common(r)
    out.update(
        correctionCount=r["correction_count"],
        correctedTextStorageId=r["corrected_text_storage_id"],
        totalCorrections=r["total_corrections"],
        l2DictionaryCorrections=r["l2_dictionary_corrections"],
        spellcheckerCorrections=r["spellchecker_corrections"],
        wordCount=r["word_count"],
        correctionDensity=r["correction_density"],
        processingDurationMs=r["processing_duration_ms"],
        processorVersion=r["processor_version"],
        error=_error(r["error_detail"]),
        details=r["details"],
    )
    return out


def _cj(r: asyncpg.Record | None) -> dict[str, Any] | None:
    if r is None:
        return None
    details = r["details"] or {}
    out = _common(r)
    out.update(
        rank=r["rank"],
        score=r["score"],
        normalizedScore=r["normalized_score"],
        letterGrade=r["letter_grade"],
        confidenceScore=r["confidence_score"],
        confidenceLabel=r["confidence_label"],
        comparisonCount=r["comparison_count"],
        jobId=_text(details.get("cj_assessment_job_id")),
        assessmentMethod=_text(details.get("assessment_method")),
        modelUsed=_text(details.get("model_used")),
        feedbackUri=_text(details.get("feedback_uri")),
        metricsUri=_text(details.get("metrics_uri")),
        details=r["details"],
    )
    return out


async def r2_baseline(conn: asyncpg.Connection, batch_id: str, first: int) -> bytes:
    """R2's answer: the batch and its first `first` essays with every field of both phase results."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        batch = await conn.fetchrow("SELECT batch_id, status, essay_count FROM batches WHERE batch_id = $1", batch_id)
        essays = await conn.fetch(
            "SELECT essay_id, filename, file_upload_id, original_text_storage_id, slot_fact_at FROM essays"
            " WHERE batch_id = $1 ORDER BY essay_id LIMIT $2",
            batch_id,
            first,
        )
        total = await conn.fetchval("SELECT count(*) FROM essays WHERE batch_id = $1", batch_id)
        results = await conn.fetch(
            "SELECT * FROM phase_results WHERE essay_id = ANY($1::text[])", [e["essay_id"] for e in essays]
        )
    by_essay: dict[str, dict[str, asyncpg.Record]] = {}
    for r in results:
        by_essay.setdefault(r["essay_id"], {})[r["phase"]] = r
    nodes = []
    for e in essays:
        found = by_essay.get(e["essay_id"], {})
        nodes.append(
            {
                "id": e["essay_id"],
                "filename": e["filename"],
                "fileUploadId": e["file_upload_id"],
                "originalTextStorageId": e["original_text_storage_id"],
                "slotAssignedAt": _iso(e["slot_fact_at"]),
                "spellcheck": _spellcheck(found.get("spellcheck")),
                "cjAssessment": _cj(found.get("cj_assessment")),
            }
        )
    answer = {
        "id": batch["batch_id"],
        "status": _BATCH_STATUS.get(batch["status"], "UNKNOWN"),
        "essayCount": batch["essay_count"],
        "essays": {"totalCount": total, "nodes": nodes},
    }
    return orjson.dumps({"data": {"batch": answer}})


def _outcomes(phase_stats: Any) -> list[dict[str, Any]]:
    rows = []
    for phase, stats in (phase_stats or {}).items():
        if isinstance(stats, dict):
            count = stats.get("completed_count")
            failed = stats.get("failed_count")
            rows.append(
                (
                    _instant(stats.get("completed_at")),
                    phase,
                    {
                        "phase": _PHASE.get(phase, "UNKNOWN"),
                        "status": _BATCH_STATUS.get(str(stats.get("status", "")), "UNKNOWN"),
                        "completedCount": count if type(count) is int else 0,
                        "failedCount": failed if type(failed) is int else 0,
                        "completedAt": None,
                    },
                )
            )
    rows.sort(key=lambda o: (o[0] is None, o[0] or datetime.min, o[1]))
    for at, _, out in rows:
        out["completedAt"] = _iso(at)
    return [out for _, _, out in rows]


async def r3_baseline(conn: asyncpg.Connection, user: str, first: int) -> bytes:
    """R3's answer: the user's first `first` batches with counts, statuses, current phase and phase outcomes."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        batches = await conn.fetch(
            "SELECT batch_id, status, essay_count, completed_essay_count, failed_essay_count, created_at,"
            " last_updated, processing_started_at, processing_completed_at, phase_stats FROM batches"
            " WHERE user_id = $1 ORDER BY created_at DESC, batch_id DESC LIMIT $2",
            user,
            first,
        )
        total = await conn.fetchval("SELECT count(*) FROM batches WHERE user_id = $1", user)
        running = [b["batch_id"] for b in batches if b["status"] == app_status.PROCESSING_PIPELINES]
        progress = {}
        if running:
            rows = await conn.fetch(
                "SELECT e.batch_id, count(*) AS essays,"
                " count(*) FILTER (WHERE s.status IS NULL OR s.status <> ALL($2::text[])) AS spell_open,"
                " count(*) FILTER (WHERE c.status IS NULL OR c.status <> ALL($2::text[])) AS cj_open"
                " FROM essays e"
                " LEFT JOIN phase_results s ON s.essay_id = e.essay_id AND s.phase = 'spellcheck'"
                " LEFT JOIN phase_results c ON c.essay_id = e.essay_id AND c.phase = 'cj_assessment'"
                " WHERE e.batch_id = ANY($1::text[]) GROUP BY e.batch_id",
                running,
                _TERMINAL,
            )
            progress = {r["batch_id"]: r for r in rows}
    nodes = []
    for b in batches:
        state = b["status"]
        phase = None
        found = progress.get(b["batch_id"])
        if state == app_status.PROCESSING_PIPELINES and found is not None and found["essays"]:
            phase = "SPELLCHECK" if found["spell_open"] else "CJ_ASSESSMENT" if found["cj_open"] else None
        nodes.append(
            {
                "id": b["batch_id"],
                "status": _BATCH_STATUS.get(state, "UNKNOWN"),
                "statusCode": state,
                "clientStatus": _CLIENT_STATUS[app_status.client_status(state)],
                "currentPhase": phase,
                "essayCount": b["essay_count"],
                "completedEssayCount": b["completed_essay_count"],
                "failedEssayCount": b["failed_essay_count"],
                "createdAt": _iso(b["created_at"]),
                "lastUpdated": _iso(b["last_updated"]),
                "processingStartedAt": _iso(b["processing_started_at"]),
                "processingCompletedAt": _iso(b["processing_completed_at"]),
                "phaseOutcomes": _outcomes(b["phase_stats"]),
            }
        )
    return orjson.dumps({"data": {"batches": {"totalCount": total, "nodes": nodes}}})
