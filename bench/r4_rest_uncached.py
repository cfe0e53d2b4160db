"""R4: the REST shim's uncached answers against the original service's access pattern on the same rows.

Data (projected by the consumer's own code, bench/data.py): one teacher with 40 batches of 25 essays, both
generations, every fourth still running. Two answers: one completed batch's status (`/batches/{id}/status`, 25
essays) and the teacher's list (`/batches/user/{id}`, the default 20 batches with their essays).

Both sides are ASGI apps in this process, asked through httpx's ASGI transport one request at a time, cache off:
the real app (`create_app`: authentication, parameters, loaders, snapshot, shape, orjson) and the baseline
(bench/rest_orm_baseline.py: an ORM session per request, `selectinload` of the batches' essays and their results,
pydantic models built from the ORM objects, the json module). Their answers must be equal as parsed JSON (checked
once per run). Requests alternate between the two; each repetition keeps the median time per answer of each side,
reported as answers per second. Target: the shim ≥ 2× the baseline's answers per second. For the capacity section
(bench/capacity.py), the shim's answers per CPU-second of this process too (bench.r2_r3_uncached.interleaved),
and of the PostgreSQL server over the same answers asked alone.
"""

from __future__ import annotations

import random

import httpx
import orjson
from sqlalchemy.ext.asyncio import AsyncEngine

from app.main import create_app
from bench.capacity import (
    R4_LIST_PER_CPU,
    R4_PG_LIST_PER_CPU,
    R4_PG_STATUS_PER_CPU,
    R4_STATUS_PER_CPU,
    per_cpu_second,
)
from bench.common import Context, Result, ratios
from bench.cpu import postgres_server, server_cpu_seconds
from bench.data import HEADERS, project, settings, user_batches
from bench.r2_r3_uncached import Answer, Timed, interleaved
from bench.rest_orm_baseline import orm_app
from db.engine import create_engine

NAME = "R4"
TITLE = "uncached REST answers: the shim against the original's ORM access pattern"

USER = "teacher-r4"
BATCHES = 40
ESSAYS = 25
REQUESTS = 40
PREFIX = "/internal/v1"


def rest_answer(client: httpx.AsyncClient, path: str) -> Answer:
    headers = {name: value for name, value in HEADERS.items() if name != "Content-Type"}

    async def answer() -> bytes:
        response = await client.get(PREFIX + path, headers=headers)
        if response.status_code != 200:
            raise RuntimeError(f"{path} answered {response.status_code}: {response.text[:500]}")
        return response.content

    return answer


def _same(name: str, shim: bytes, baseline: bytes) -> None:
    if orjson.loads(shim) != orjson.loads(baseline):
        raise RuntimeError(f"{name}: the shim's answer and the baseline's differ:\n{shim[:600]!r}\n{baseline[:600]!r}")


async def _completed_batch(engine: AsyncEngine) -> str:
    async with engine.connect() as conn:
        found = await conn.exec_driver_sql(
            "SELECT batch_id FROM batches WHERE user_id = $1 AND status <> 'processing_pipelines' "
            "ORDER BY batch_id LIMIT 1",
            (USER,),
        )
        return str(found.scalar_one())


async def _server_cpu_per_answer(engine: AsyncEngine, answer: Answer, count: int) -> float:
    """PostgreSQL's CPU seconds per answer over `count` answers asked one after the other (NaN for a server that is
    not on this machine)."""
    async with engine.connect() as conn:
        raw = await conn.get_raw_connection()
        postmaster = await postgres_server(raw.driver_connection)
    before = server_cpu_seconds(postmaster)
    for _ in range(count):
        await answer()
    return (server_cpu_seconds(postmaster) - before) / count


async def run(ctx: Context) -> Result:
    result = Result(NAME, TITLE)
    url = await ctx.servers.fresh_database()
    engine = create_engine(url, pool_size=4)
    try:
        await project(engine, user_batches(random.Random(2026), USER, BATCHES, ESSAYS))
        batch_id = await _completed_batch(engine)
        shim_app = create_app(settings(url, cache_enabled=False), engine)
        transport = httpx.ASGITransport
        async with (
            httpx.AsyncClient(transport=transport(app=shim_app), base_url="http://ras") as shim,
            httpx.AsyncClient(transport=transport(app=orm_app(engine)), base_url="http://ras") as orm,
        ):
            paths = {"status": f"/batches/{batch_id}/status", "list": f"/batches/user/{USER}"}
            answers = {
                f"{side} {name}": rest_answer(client, path)
                for name, path in paths.items()
                for side, client in (("shim", shim), ("orm", orm))
            }
            for name in paths:
                _same(f"R4 {name}", await answers[f"shim {name}"](), await answers[f"orm {name}"]())
            samples: dict[str, list[float]] = {}
            for rep in range(ctx.repetitions):
                timed: dict[str, Timed] = {}
                for name in paths:
                    sides = {f"{side} {name}": (answers[f"{side} {name}"], REQUESTS) for side in ("shim", "orm")}
                    timed |= await interleaved(sides)
                got = {name: t.seconds for name, t in timed.items()}
                for name, seconds in got.items():
                    samples.setdefault(name, []).append(1 / seconds)
                for name in paths:
                    cpu = timed[f"shim {name}"].cpu_seconds
                    samples.setdefault(f"shim {name} cpu", []).append(per_cpu_second(1, cpu))
                ms = {name: f"{seconds * 1000:.1f} ms" for name, seconds in got.items()}
                ctx.log(
                    f"R4 #{rep + 1}: status {ms['shim status']} (ORM {ms['orm status']}); "
                    f"list {ms['shim list']} (ORM {ms['orm list']})"
                )
                for name in paths:
                    served = await _server_cpu_per_answer(engine, answers[f"shim {name}"], REQUESTS)
                    samples.setdefault(f"shim {name} pg", []).append(per_cpu_second(1, served))
    finally:
        await engine.dispose()
        await ctx.servers.drop_database(url)

    result.figure(f"R4 REST batch status, {ESSAYS} essays, uncached", "answers/s", samples["shim status"])
    result.figure("R4 original's pattern (ORM selectinload, pydantic)", "answers/s", samples["orm status"])
    result.figure("R4 REST user list, 20 batches with essays, uncached", "answers/s", samples["shim list"])
    result.figure("R4 original's pattern, user list", "answers/s", samples["orm list"])
    note = "answers / CPU seconds of the bench process (app and in-process client; PostgreSQL's not included)"
    result.figure(R4_STATUS_PER_CPU, "req/CPU-s", samples["shim status cpu"], note)
    result.figure(R4_LIST_PER_CPU, "req/CPU-s", samples["shim list cpu"])
    note = "answers / CPU seconds of the whole server over 40 answers in a row (NaN when it is not on this machine)"
    result.figure(R4_PG_STATUS_PER_CPU, "req/CPU-s", samples["shim status pg"], note)
    result.figure(R4_PG_LIST_PER_CPU, "req/CPU-s", samples["shim list pg"])
    for name, title in (("status", "batch status"), ("list", "user list")):
        speedup = ratios(samples[f"shim {name}"], samples[f"orm {name}"])
        result.target(f"R4 {title}: shim / original's pattern", speedup, 2.0)
    result.notes.append("R4: one client, requests alternating between two apps in one process; answers equal as JSON")
    return result
