"""LIST: a user's list of 100 batches from the cache, at 8 and 32 clients, against the same list executed each time.

Data (projected by the consumer's own code, bench/data.py): one teacher with 100 batches of 25 essays, both
generations, every fourth still running (R3's). The request is the original service's own: the REST shim's
`/internal/v1/batches/user/{user_id}?limit=100`, every batch with its essays, about 1 MB of JSON.

Two real server processes (bench/r1_app.py: the app `ras serve` runs), each with default settings: one with the
cache (the answer stored before the load), one with RAS_CACHE_ENABLED=false, where every request executes. Each
repetition runs bench/mixed_load.py for 5 s at 8 and at 32 keep-alive connections against each, every answer
compared byte for byte with the one read before the load. Reported: answers per second (refusals at the execution
limit, HTTP 503, are counted apart, not as answers), p99, and the cache's hit
rate over the cached runs, from the server's own `ras_cache_requests_total` (hits over hits, misses, coalesced and
bypasses). Targets: hit rate ≥ 99 %, cached ≥ 10× the uncached requests per second at both client counts.
"""

from __future__ import annotations

import random
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import orjson

from bench.api_process import ApiProcess, api_process, mixed_load
from bench.common import Context, Result, ratios
from bench.data import HEADERS, project, user_batches
from db.engine import create_engine

NAME = "LIST"
TITLE = "cached list: a user's 100 batches (~1 MB) at 8 and 32 clients, hit rate, against uncached"

USER = "teacher-list"
BATCHES = 100
ESSAYS = 25
CLIENTS = (8, 32)
SECONDS = 5.0
WARMUP_SECONDS = 2.0
PATH = f"/internal/v1/batches/user/{USER}?limit={BATCHES}"
NOT_HITS = ("miss", "coalesced", "bypass")


async def _expected(api: ApiProcess) -> bytes:
    async with httpx.AsyncClient(base_url=api.base, timeout=60) as client:
        first = await client.get(PATH, headers=HEADERS)
        second = await client.get(PATH, headers=HEADERS)
    if first.status_code != 200 or second.content != first.content:
        raise RuntimeError(f"LIST: the list was not answered twice alike: {first.status_code} {first.text[:300]}")
    if len(orjson.loads(first.content)["batches"]) != BATCHES:
        raise RuntimeError("LIST: the list should hold every batch")
    return first.content


def _spec(workdir: Path, body: bytes) -> Path:
    spec = workdir / "list.json"
    request = {"kind": "list", "method": "GET", "path": PATH, "headers": HEADERS, "expect": {"body": body.decode()}}
    spec.write_bytes(orjson.dumps({"requests": [request]}))
    return spec


async def _measure(api: ApiProcess, spec: Path, clients: int, seconds: float) -> dict[str, Any]:
    report = await mixed_load(api.port, spec, clients, time.time() + 1.0 + seconds)
    outcomes = report["kinds"].get("list", {})
    if outcomes.get("wrong", 0):
        raise RuntimeError(f"LIST: wrong answers under load: {outcomes} {report['wrong_examples']}")
    return report


def _hits(counters: dict[str, dict[str, float]]) -> tuple[float, float]:
    results = counters.get("ras_cache_requests_total", {})
    return results.get("hit", 0.0), sum(results.get(name, 0.0) for name in NOT_HITS)


async def run(ctx: Context) -> Result:
    result = Result(NAME, TITLE)
    url = await ctx.servers.fresh_database()
    redis_url = await ctx.servers.redis_url()
    engine = create_engine(url)
    await project(engine, user_batches(random.Random(2026), USER, BATCHES, ESSAYS))
    await engine.dispose()
    samples: dict[str, list[float]] = {}
    hit_rate: list[float] = []
    refused = {"cached": 0, "uncached": 0}
    with tempfile.TemporaryDirectory(prefix="ras-bench-list-") as tmp:
        for cached in (True, False):
            settings = {} if cached else {"RAS_CACHE_ENABLED": "false"}
            async with api_process(url, redis_url, Path(tmp), **settings) as api:
                body = await _expected(api)
                spec = _spec(Path(tmp), body)
                side = "cached" if cached else "uncached"
                ctx.log(f"LIST: {side}, a {len(body):,} B answer")
                await _measure(api, spec, max(CLIENTS), WARMUP_SECONDS)
                for rep in range(ctx.repetitions):
                    for clients in CLIENTS:
                        hits_before, others_before = _hits(await api.counters())
                        report = await _measure(api, spec, clients, SECONDS)
                        hits, others = _hits(await api.counters())
                        outcomes = report["kinds"].get("list", {})
                        rate = outcomes.get("right", 0) / report["seconds"]  # refusals are not answers
                        refused[side] += outcomes.get("refused", 0)
                        samples.setdefault(f"{side} {clients} rate", []).append(rate)
                        samples.setdefault(f"{side} {clients} p99", []).append(report["p99_us"] / 1000)
                        if cached:
                            asked = (hits - hits_before) + (others - others_before)
                            hit_rate.append((hits - hits_before) / max(asked, 1.0) * 100)
                        ctx.log(f"LIST #{rep + 1} {side}, {clients} clients: {rate:,.0f} req/s")
    await ctx.servers.drop_database(url)
    for clients in CLIENTS:
        cached_rate, uncached_rate = samples[f"cached {clients} rate"], samples[f"uncached {clients} rate"]
        result.figure(f"LIST cached, {clients} clients", "req/s", cached_rate)
        result.figure(f"LIST cached p99, {clients} clients", "ms", samples[f"cached {clients} p99"])
        result.figure(f"LIST uncached, {clients} clients", "req/s", uncached_rate)
        result.figure(f"LIST uncached p99, {clients} clients", "ms", samples[f"uncached {clients} p99"])
        result.target(f"LIST cached / uncached, {clients} clients", ratios(cached_rate, uncached_rate), 10.0)
    result.target("LIST cache hit rate under load", hit_rate, 99.0, unit="%")
    result.notes.append(
        f"LIST: {len(body):,} B answers compared byte for byte; {SECONDS:g} s per measurement; refused (503, at the "
        f"execution limit): cached {refused['cached']:,}, uncached {refused['uncached']:,}"
    )
    return result
