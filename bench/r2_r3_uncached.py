"""R2 and R3: uncached reads through the GraphQL API, against hand-built answers from the same rows.

Data (projected by the consumer's own code from realistic events, bench/data.py): one gen 2 batch of 1,000 essays
through spellcheck (2 % failing, with error details) and CJ assessment; one user with 100 batches of 25 essays,
both generations, every fourth still running (`processing_pipelines`, half its essays spellchecked).

- R2: one batch with its 1,000 essays and every field of both typed phase results (spellcheck 19, CJ 21, the
  essay's own 5: ~45 selections per essay, ~560 KB of JSON).
- R3: a user's list of 100 batches with counts, statuses, current phase and phase outcomes.

Measured in process, cache off, as time per answer: the real app (`create_app`) through httpx's ASGI transport,
so authentication, limits, parsing, validation, execution, the per-request snapshot and JSON encoding all count.
The baseline is what a hand-written endpoint would do (bench/r2_r3_baseline.py): the same rows fetched with asyncpg
in one read-only REPEATABLE READ transaction, built into dicts by hand and serialized with orjson. Both answers must
be the same bytes (checked once per run), so neither side can win by answering something else. Target: GraphQL ≤ 2×
baseline (issue 16's round two; it was 3×).

Also reported: R2 with Strawberry's stock executor instead of app/graphql/execution.py's, for the fast path's effect.
Each repetition alternates the contenders request by request and keeps the median time of each; the reported
figure is the median over repetitions, with their spread. For the capacity section (bench/capacity.py), the median
CPU time of this process per answer too, as answers per CPU-second: the app's work with the in-process client's,
without PostgreSQL's.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import orjson
from sqlalchemy.ext.asyncio import AsyncEngine

from app.main import create_app
from bench.capacity import R2_PER_CPU, R3_PER_CPU, per_cpu_second
from bench.common import Context, Result, asyncpg_dsn, ratios
from bench.data import HEADERS, big_batch, project, settings, use_stock_executor, user_batches
from bench.r2_r3_baseline import r2_baseline, r3_baseline
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


Answer = Callable[[], Awaitable[bytes]]


def graphql_answer(client: httpx.AsyncClient, query: str, variables: dict[str, Any], user: str | None) -> Answer:
    # identity: httpx asks for gzip by default, and the API would compress answers the hand-built baseline leaves
    # as they are; compression has its own figures (R1's gzip row).
    headers = dict(HEADERS) | {"Accept-Encoding": "identity"}
    if user is not None:
        headers["X-User-ID"] = user
    body = orjson.dumps({"query": query, "variables": variables})

    async def answer() -> bytes:
        response = await client.post("/graphql", content=body, headers=headers)
        if response.status_code != 200:
            raise RuntimeError(f"GraphQL answered {response.status_code}: {response.text[:500]}")
        return response.content

    return answer


@dataclass(frozen=True)
class Timed:
    seconds: float  # median wall time per answer
    cpu_seconds: float  # median CPU time of this process per answer: the app's work and the in-process client's


async def _timed(answer: Answer) -> tuple[float, float]:
    started, cpu = time.perf_counter(), time.process_time()
    await answer()
    return time.perf_counter() - started, time.process_time() - cpu


async def interleaved(contenders: dict[str, tuple[Answer, int]]) -> dict[str, Timed]:
    """Median wall and CPU seconds per answer of each contender, asked in turns (so drift hits all alike) after one
    warm-up. One answer at a time, so the process's CPU time over an answer is that answer's."""
    for answer, _ in contenders.values():
        await answer()
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in contenders}
    rounds = max(count for _, count in contenders.values())
    for i in range(rounds):
        for name, (answer, count) in contenders.items():
            if i < count:
                times[name].append(await _timed(answer))
    return {
        name: Timed(statistics.median(t for t, _ in samples), statistics.median(c for _, c in samples))
        for name, samples in times.items()
    }


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
                return await r2_baseline(conn, batch_id, ESSAYS)

            async def r3_hand() -> bytes:
                return await r3_baseline(conn, LIST_USER, LIST_BATCHES)

            r2_bytes = await r2()
            _same("R2", r2_bytes, await r2_hand())
            _same("R2 (stock executor)", await r2_stock(), await r2_hand())
            _same("R3", await r3(), await r3_hand())

            samples: dict[str, list[float]] = {}
            for rep in range(ctx.repetitions):
                timed = await interleaved(
                    {
                        "r2": (r2, R2_REQUESTS),
                        "r2 hand": (r2_hand, R2_REQUESTS),
                        "r2 stock": (r2_stock, R2_STOCK_REQUESTS),
                    }
                )
                timed |= await interleaved({"r3": (r3, R3_REQUESTS), "r3 hand": (r3_hand, R3_REQUESTS)})
                got = {name: t.seconds for name, t in timed.items()}
                for name, seconds in got.items():
                    samples.setdefault(name, []).append(seconds * 1000)
                for name in ("r2", "r3"):
                    samples.setdefault(f"{name} cpu", []).append(per_cpu_second(1, timed[name].cpu_seconds))
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
    note = "answers / CPU seconds of the bench process (app and in-process client; PostgreSQL's not included)"
    result.figure(R2_PER_CPU, "req/CPU-s", samples["r2 cpu"], note)
    result.figure(R3_PER_CPU, "req/CPU-s", samples["r3 cpu"])
    result.figure("R2 fast path speed-up (stock / fast executor)", "×", ratios(samples["r2 stock"], samples["r2"]))
    result.target("R2 GraphQL / hand-built", ratios(samples["r2"], samples["r2 hand"]), 2.0, at_most=True)
    result.target("R3 GraphQL / hand-built", ratios(samples["r3"], samples["r3 hand"]), 2.0, at_most=True)
    result.notes.append(
        f"R2/R3 data: {events:,} events projected by consumer.apply; answers checked byte-equal to the hand-built ones"
    )
    return result
