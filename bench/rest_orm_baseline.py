"""What R4 (bench/r4_rest_uncached.py) measures the REST shim against: the original service's access pattern on
our tables, served from the same process the same way (a Starlette route through httpx's ASGI transport).

The original (a Quart app) loaded a batch as an ORM object with `selectinload` of its essays, in a session per
request, built its pydantic response models from the ORM objects and returned their JSON. Its essays carried their
phase results as columns; here they are rows of `phase_results`, so the essays' results are a second `selectinload`
(three statements per batch screen, plus the count for a list). The answer must equal the shim's (compared as
parsed JSON once per run), so the statuses, the current phase and naive-UTC times are derived as the shim does.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.orm import foreign, registry, relationship, selectinload
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app.reads import status
from db.tables import Base

_BATCHES = Base.metadata.tables["batches"]
_ESSAYS = Base.metadata.tables["essays"]
_RESULTS = Base.metadata.tables["phase_results"]


class PhaseResultRecord:
    essay_id: str
    phase: str
    status: str
    fact_at: datetime
    error_detail: dict[str, Any] | None
    correction_count: int | None
    corrected_text_storage_id: str | None
    rank: int | None
    score: float | None


class EssayResult:
    essay_id: str
    filename: str | None
    file_upload_id: str | None
    slot_fact_at: datetime | None
    results: list[PhaseResultRecord]


class BatchResult:
    batch_id: str
    user_id: str
    status: str
    essay_count: int
    completed_essay_count: int
    failed_essay_count: int
    created_at: datetime
    last_updated: datetime
    processing_started_at: datetime | None
    processing_completed_at: datetime | None
    assignment_id: str | None
    student_prompt_ref: dict[str, Any] | None
    essays: list[EssayResult]


_mapper = registry()
_mapper.map_imperatively(PhaseResultRecord, _RESULTS)
_mapper.map_imperatively(
    EssayResult,
    _ESSAYS,
    properties={
        "results": relationship(
            PhaseResultRecord, primaryjoin=_ESSAYS.c.essay_id == foreign(_RESULTS.c.essay_id), viewonly=True
        )
    },
)
_mapper.map_imperatively(
    BatchResult,
    _BATCHES,
    properties={
        "essays": relationship(
            EssayResult,
            primaryjoin=_BATCHES.c.batch_id == foreign(_ESSAYS.c.batch_id),
            order_by=_ESSAYS.c.essay_id,
            viewonly=True,
        )
    },
)

_WITH_ESSAYS = selectinload(BatchResult.essays).selectinload(EssayResult.results)  # type: ignore[arg-type]


class ErrorDetailModel(BaseModel):
    error_code: Any = None
    message: Any = None
    correlation_id: Any = None
    timestamp: Any = None
    service: Any = None
    operation: Any = None
    details: Any = None
    stack_trace: Any = None
    trace_id: Any = None
    span_id: Any = None


class EssayResultResponse(BaseModel):
    essay_id: str
    filename: str | None
    file_upload_id: str | None
    spellcheck_status: str | None
    spellcheck_correction_count: int | None
    spellcheck_corrected_text_storage_id: str | None
    spellcheck_error_detail: ErrorDetailModel | None
    cj_assessment_status: str | None
    cj_rank: int | None
    cj_score: float | None
    cj_assessment_error_detail: ErrorDetailModel | None
    last_updated: datetime


class BatchStatusResponse(BaseModel):
    batch_id: str
    user_id: str
    overall_status: str
    essay_count: int
    completed_essay_count: int
    failed_essay_count: int
    requested_pipeline: str | None
    current_phase: str | None
    essays: list[EssayResultResponse]
    created_at: datetime
    last_updated: datetime
    processing_started_at: datetime | None
    processing_completed_at: datetime | None
    assignment_id: str | None
    student_prompt_ref: dict[str, Any] | None


class Pagination(BaseModel):
    limit: int
    offset: int
    total: int


class UserBatchesResponse(BaseModel):
    batches: list[BatchStatusResponse]
    pagination: Pagination


def _naive(value: datetime | None) -> datetime | None:
    return None if value is None else value.astimezone(UTC).replace(tzinfo=None)


def _error(raw: dict[str, Any] | None) -> ErrorDetailModel | None:
    return None if not isinstance(raw, dict) else ErrorDetailModel(**raw)


def _essay(essay: EssayResult, fallback: datetime) -> EssayResultResponse:
    found = {result.phase: result for result in essay.results}
    spell, cj = found.get(status.SPELLCHECK), found.get(status.CJ_ASSESSMENT)
    stamps = [r.fact_at for r in essay.results] + ([essay.slot_fact_at] if essay.slot_fact_at else [])
    return EssayResultResponse(
        essay_id=essay.essay_id,
        filename=essay.filename,
        file_upload_id=essay.file_upload_id,
        spellcheck_status=spell.status if spell else None,
        spellcheck_correction_count=spell.correction_count if spell else None,
        spellcheck_corrected_text_storage_id=spell.corrected_text_storage_id if spell else None,
        spellcheck_error_detail=_error(spell.error_detail) if spell else None,
        cj_assessment_status=cj.status if cj else None,
        cj_rank=cj.rank if cj else None,
        cj_score=cj.score if cj else None,
        cj_assessment_error_detail=_error(cj.error_detail) if cj else None,
        last_updated=_naive(max(stamps, default=fallback)) or fallback,
    )


def _current_phase(batch: BatchResult, essays: list[EssayResultResponse]) -> str | None:
    if batch.status != status.PROCESSING_PIPELINES or not essays:
        return None
    if any(e.spellcheck_status not in status.TERMINAL_STAGES for e in essays):
        return status.SPELLCHECK
    if any(e.cj_assessment_status not in status.TERMINAL_STAGES for e in essays):
        return status.CJ_ASSESSMENT
    return None


def batch_response(batch: BatchResult) -> BatchStatusResponse:
    """BatchStatusResponse from the ORM objects, as the original's `from_domain` built it."""
    essays = [_essay(essay, batch.last_updated) for essay in batch.essays]
    return BatchStatusResponse(
        batch_id=batch.batch_id,
        user_id=batch.user_id,
        overall_status=status.client_status(batch.status),
        essay_count=batch.essay_count,
        completed_essay_count=batch.completed_essay_count,
        failed_essay_count=batch.failed_essay_count,
        requested_pipeline=None,
        current_phase=_current_phase(batch, essays),
        essays=essays,
        created_at=_naive(batch.created_at) or batch.created_at,
        last_updated=_naive(batch.last_updated) or batch.last_updated,
        processing_started_at=_naive(batch.processing_started_at),
        processing_completed_at=_naive(batch.processing_completed_at),
        assignment_id=batch.assignment_id,
        student_prompt_ref=batch.student_prompt_ref,
    )


def _json(model: BaseModel) -> Response:
    # The original returned `jsonify(model.model_dump(mode="json"))`: a dict, then the json module.
    return Response(json.dumps(model.model_dump(mode="json")), media_type="application/json")


def orm_app(engine: AsyncEngine) -> Starlette:
    """The two routes, reading through an ORM session per request."""
    sessions = async_sessionmaker(engine, expire_on_commit=False)

    async def batch_status(request: Request) -> Response:
        async with sessions() as session:
            query = select(BatchResult).where(_BATCHES.c.batch_id == request.path_params["batch_id"])
            batch = (await session.execute(query.options(_WITH_ESSAYS))).scalar_one_or_none()
            if batch is None:
                return Response('{"error": "Batch not found"}', 404, media_type="application/json")
            return _json(batch_response(batch))

    async def user_batches(request: Request) -> Response:
        user_id = request.path_params["user_id"]
        limit, offset = int(request.query_params.get("limit", 20)), int(request.query_params.get("offset", 0))
        async with sessions() as session:
            batches = await _user_batches(session, user_id, limit, offset)
            total = (await session.execute(select(func.count()).where(_BATCHES.c.user_id == user_id))).scalar_one()
        page = Pagination(limit=limit, offset=offset, total=total)
        return _json(UserBatchesResponse(batches=[batch_response(b) for b in batches], pagination=page))

    return Starlette(
        routes=[
            Route("/internal/v1/batches/{batch_id}/status", batch_status),
            Route("/internal/v1/batches/user/{user_id}", user_batches),
        ]
    )


async def _user_batches(session: AsyncSession, user_id: str, limit: int, offset: int) -> list[BatchResult]:
    query = (
        select(BatchResult)
        .where(_BATCHES.c.user_id == user_id)
        .order_by(_BATCHES.c.created_at.desc(), _BATCHES.c.batch_id.desc())
        .limit(limit)
        .offset(offset)
        .options(_WITH_ESSAYS)
    )
    return list((await session.execute(query)).scalars())
