"""R2 and R3: uncached reads through the GraphQL API, against hand-built answers from the same rows.

Data (projected by the consumer's own code from realistic events, bench/data.py): one gen 2 batch of 1,000 essays
through spellcheck (2 % failing, with error details) and CJ assessment; one user with 100 batches of 25 essays,
both generations, every fourth still running (`processing_pipelines`, half its essays spellchecked).

- R2: one batch with its 1,000 essays and every field of both typed phase results (spellcheck 19, CJ 21, the
  essay's own 5: ~45 selections per essay, ~560 KB of JSON).
- R3: a user's list of 100 batches with counts, statuses, current phase and phase outcomes.

Measured in process, cache off, as time per answer: the real app (`create_app`) through httpx's ASGI transport,
so authentication, limits, parsing, validation, execution, the per-request snapshot and JSON encoding all count.
The baseline is what a hand-written endpoint would do: the same rows fetched with asyncpg in one read-only
REPEATABLE READ transaction, built into dicts by hand and serialized with orjson. Both answers must be the same
bytes (checked once per run), so neither side can win by answering something else. Target: GraphQL ≤ 3× baseline.

Also reported: R2 with Strawberry's stock executor instead of app/graphql/execution.py's, for the fast path's effect.
Each repetition alternates the contenders request by request and keeps the median time of each; the reported
figure is the median over repetitions, with their spread.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from enum import Enum
from typing import Any

import asyncpg
import httpx
import orjson
from sqlalchemy.ext.asyncio import AsyncEngine

from app.graphql.enums import BatchClientStatus, BatchStatus, PhaseName, ProcessingStage
from app.main import create_app
from app.reads import status as app_status
from bench.common import Context, Result, asyncpg_dsn, ratios
from bench.data import HEADERS, big_batch, project, settings, use_stock_executor, user_batches
from db.engine import create_engine

NAME = "R2"
TITLE = "uncached reads: one batch of 1,000 essays (R2), a user's 100 batches (R3)"

ESSAYS = 1_000
LIST_BATCHES = 100
LIST_ESSAYS = 25
LIST_USER = "teacher-r3"
# Requests per contender and repetition (R2 stock: ~1 s each, so few).
R2_REQUESTS = 12
R2_STOCK_REQUESTS = 2
R3_REQUESTS = 40

R2_QUERY = """
query R2($id: ID!) {
  batch(id: $id) {
    id status essayCount
    essays(first: 1000) {
      totalCount
      nodes {
        id filename fileUploadId originalTextStorageId slotAssignedAt
        spellcheck {
          phase phaseCode status statusCode reportedStatus essayId batchId startedAt completedAt recordedAt
          correctionCount correctedTextStorageId totalCorrections l2DictionaryCorrections spellcheckerCorrections
          wordCount correctionDensity processingDurationMs processorVersion
          error { errorCode message correlationId timestamp service operation details stackTrace traceId spanId }
          details
        }
        cjAssessment {
          phase phaseCode status statusCode reportedStatus essayId batchId startedAt completedAt recordedAt
          rank score normalizedScore letterGrade confidenceScore confidenceLabel comparisonCount
          jobId assessmentMethod modelUsed feedbackUri metricsUri details
        }
      }
    }
  }
}
"""

R3_QUERY = """
query R3 {
  batches(first: 100) {
    totalCount
    nodes {
      id status statusCode clientStatus currentPhase
      essayCount completedEssayCount failedEssayCount
      createdAt lastUpdated processingStartedAt processingCompletedAt
      phaseOutcomes { phase status completedCount failedCount completedAt }
    }
  }
}
"""


# --------------------------------------------------------------------------------------------------------------
# The hand-built baselines
# --------------------------------------------------------------------------------------------------------------


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


async def r2_baseline(conn: asyncpg.Connection, batch_id: str) -> bytes:
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        batch = await conn.fetchrow("SELECT batch_id, status, essay_count FROM batches WHERE batch_id = $1", batch_id)
        essays = await conn.fetch(
            "SELECT essay_id, filename, file_upload_id, original_text_storage_id, slot_fact_at FROM essays"
            " WHERE batch_id = $1 ORDER BY essay_id LIMIT $2",
            batch_id,
            ESSAYS,
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


async def r3_baseline(conn: asyncpg.Connection, user: str) -> bytes:
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        batches = await conn.fetch(
            "SELECT batch_id, status, essay_count, completed_essay_count, failed_essay_count, created_at,"
            " last_updated, processing_started_at, processing_completed_at, phase_stats FROM batches"
            " WHERE user_id = $1 ORDER BY created_at DESC, batch_id DESC LIMIT $2",
            user,
            LIST_BATCHES,
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


# --------------------------------------------------------------------------------------------------------------
# Measuring
# --------------------------------------------------------------------------------------------------------------

Answer = Callable[[], Awaitable[bytes]]


def graphql_answer(client: httpx.AsyncClient, query: str, variables: dict[str, Any], user: str | None) -> Answer:
    headers = dict(HEADERS)
    if user is not None:
        headers["X-User-ID"] = user
    body = orjson.dumps({"query": query, "variables": variables})

    async def answer() -> bytes:
        response = await client.post("/graphql", content=body, headers=headers)
        if response.status_code != 200:
            raise RuntimeError(f"GraphQL answered {response.status_code}: {response.text[:500]}")
        return response.content

    return answer


async def _timed(answer: Answer) -> float:
    started = time.perf_counter()
    await answer()
    return time.perf_counter() - started


async def interleaved(contenders: dict[str, tuple[Answer, int]]) -> dict[str, float]:
    """Median seconds per answer of each contender, asked in turns (so drift hits all alike) after one warm-up."""
    for answer, _ in contenders.values():
        await answer()
    times: dict[str, list[float]] = {name: [] for name in contenders}
    rounds = max(count for _, count in contenders.values())
    for i in range(rounds):
        for name, (answer, count) in contenders.items():
            if i < count:
                times[name].append(await _timed(answer))
    return {name: statistics.median(samples) for name, samples in times.items()}


def _same(name: str, graphql: bytes, baseline: bytes) -> None:
    if graphql != baseline:
        at = next((i for i, (a, b) in enumerate(zip(graphql, baseline, strict=False)) if a != b), None)
        at = min(len(graphql), len(baseline)) if at is None else at
        raise RuntimeError(
            f"{name}: the GraphQL answer and the hand-built one differ at byte {at}:\n"
            f"  graphql:  …{graphql[max(0, at - 120) : at + 120]!r}\n"
            f"  baseline: …{baseline[max(0, at - 120) : at + 120]!r}"
        )


async def _prepare(engine: AsyncEngine) -> tuple[str, int]:
    rng = random.Random(2025)
    big = big_batch(rng, ESSAYS)
    listing = user_batches(rng, LIST_USER, LIST_BATCHES, LIST_ESSAYS)
    await project(engine, big)
    await project(engine, listing)
    return big[0].key.decode(), len(big) + len(listing)


async def run(ctx: Context) -> Result:
    result = Result(NAME, TITLE)
    url = await ctx.servers.fresh_database()
    engine = create_engine(url, pool_size=4)
    conn = await asyncpg.connect(asyncpg_dsn(url))
    await conn.set_type_codec("jsonb", encoder=orjson.dumps, decoder=orjson.loads, schema="pg_catalog")
    try:
        batch_id, events = await _prepare(engine)
        ctx.log(f"R2/R3: projected {events:,} events")
        app_settings = settings(url, cache_enabled=False)
        fast_app = create_app(app_settings, engine)
        stock_app = create_app(app_settings, engine)
        use_stock_executor(stock_app)
        transport = httpx.ASGITransport
        async with (
            httpx.AsyncClient(transport=transport(app=fast_app), base_url="http://ras") as fast,
            httpx.AsyncClient(transport=transport(app=stock_app), base_url="http://ras") as stock,
        ):
            r2 = graphql_answer(fast, R2_QUERY, {"id": batch_id}, None)
            r2_stock = graphql_answer(stock, R2_QUERY, {"id": batch_id}, None)
            r3 = graphql_answer(fast, R3_QUERY, {}, LIST_USER)

            async def r2_hand() -> bytes:
                return await r2_baseline(conn, batch_id)

            async def r3_hand() -> bytes:
                return await r3_baseline(conn, LIST_USER)

            r2_bytes = await r2()
            _same("R2", r2_bytes, await r2_hand())
            _same("R2 (stock executor)", await r2_stock(), await r2_hand())
            _same("R3", await r3(), await r3_hand())

            samples: dict[str, list[float]] = {}
            for rep in range(ctx.repetitions):
                got = await interleaved(
                    {
                        "r2": (r2, R2_REQUESTS),
                        "r2 hand": (r2_hand, R2_REQUESTS),
                        "r2 stock": (r2_stock, R2_STOCK_REQUESTS),
                    }
                )
                got |= await interleaved({"r3": (r3, R3_REQUESTS), "r3 hand": (r3_hand, R3_REQUESTS)})
                for name, seconds in got.items():
                    samples.setdefault(name, []).append(seconds * 1000)
                ctx.log(
                    f"R2/R3 #{rep + 1}: R2 {got['r2'] * 1000:.1f} ms (hand-built {got['r2 hand'] * 1000:.1f} ms, "
                    f"stock executor {got['r2 stock'] * 1000:.0f} ms); R3 {got['r3'] * 1000:.1f} ms "
                    f"(hand-built {got['r3 hand'] * 1000:.1f} ms)"
                )
    finally:
        await conn.close()
        await engine.dispose()
        await ctx.servers.drop_database(url)

    result.figure("R2 GraphQL, 1 batch × 1,000 essays, all phase fields", "ms", samples["r2"], f"{len(r2_bytes):,} B")
    result.figure("R2 hand-built (asyncpg + dicts + orjson)", "ms", samples["r2 hand"])
    result.figure("R2 GraphQL, Strawberry's stock executor", "ms", samples["r2 stock"])
    result.figure("R3 GraphQL, a user's 100 batches", "ms", samples["r3"])
    result.figure("R3 hand-built (asyncpg + dicts + orjson)", "ms", samples["r3 hand"])
    result.figure("R2 fast path speed-up (stock / fast executor)", "×", ratios(samples["r2 stock"], samples["r2"]))
    result.target("R2 GraphQL / hand-built", ratios(samples["r2"], samples["r2 hand"]), 3.0, at_most=True)
    result.target("R3 GraphQL / hand-built", ratios(samples["r3"], samples["r3 hand"]), 3.0, at_most=True)
    result.notes.append(
        f"R2/R3 data: {events:,} events projected by consumer.apply; answers checked byte-equal to the hand-built ones"
    )
    return result
