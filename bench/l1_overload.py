"""L1: overload. 200 clients mix cached and uncached reads against one API process, with default settings.

Data (projected by the consumer's own code, bench/data.py): a teacher with 20 batches of 25 essays; 8 of them are
asked for. Each client (a keep-alive connection of bench/mixed_load.py, closed loop: the next request as soon as an
answer is complete; a refused one is not retried later, the client just asks its next) picks, for one of the 8:

* cached (4 in 5): the gateway's batch screen (app/static/examples/2-batch-detail.graphql), stored before the load;
* uncached (1 in 5): the same screen plus the projection's positions in one query. Nothing can tell a cache when
  positions move, so no such answer is stored (nor shared between identical requests in flight): every one executes.

The server is a real process (bench/r1_app.py: the app `ras serve` runs) with its defaults, among them the
execution limit (RAS_MAX_CONCURRENT_EXECUTIONS, RAS_ADMISSION_WAIT_SECONDS). Reported: answers per second, p99 of
each kind and of all, the share refused (HTTP 503 with Retry-After and SERVICE_UNAVAILABLE), wrong answers (every
answer is checked against the one read before the load; a wrong one is anything but that or the documented
refusal) and the recovery time: from the moment the clients stop to the first uncached answer, asked one at a time
from then on, that is right and takes at most twice its median time on the quiet server. The admission counters
and the cache's results are noted.

`RAS_BENCH_L1_SECONDS` sets the load's length (default 20 s in `make bench`; the issue's row is 60 s).
"""

from __future__ import annotations

import asyncio
import os
import random
import statistics
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson

from bench.api_process import ApiProcess, api_process, mixed_load
from bench.common import Context, Result
from bench.data import HEADERS, project
from db.engine import create_engine
from devstack.demo import EPOCH, batch_life

NAME = "L1"
TITLE = "overload: 200 clients mixing cached and uncached reads (throughput, p99, refused, recovery)"

CLIENTS = 200
SECONDS = float(os.environ.get("RAS_BENCH_L1_SECONDS", "20"))
USER = "teacher-l1"
BATCHES = 20
HOT = 8
CACHED_WEIGHT, UNCACHED_WEIGHT = 4, 1
QUIET_SAMPLES = 20
NORMAL_FACTOR = 2.0
RECOVERY_GUARD_SECONDS = 120.0
SCREEN = (Path(__file__).parents[1] / "app" / "static" / "examples" / "2-batch-detail.graphql").read_text()
POSITIONS = "projection { quarantinedCount partitions { topic partition nextOffset } }"
# The screen's operation with the positions beside its batch: its last brace closes the operation.
UNCACHED = SCREEN.rstrip()[:-1] + POSITIONS + "\n}\n"


def _request(query: str, batch_id: str) -> bytes:
    return orjson.dumps({"query": query, "variables": {"batchId": batch_id, "first": 25}})


async def _answer(client: httpx.AsyncClient, body: bytes) -> tuple[Any, str, float]:
    started = time.perf_counter()
    response = await client.post("/graphql", content=body, headers=HEADERS)
    seconds = time.perf_counter() - started
    document = orjson.loads(response.content)
    if response.status_code != 200 or "errors" in document:
        return None, f"HTTP {response.status_code} {response.text[:300]}", seconds
    return document["data"], str(document.get("extensions", {}).get("cache", {}).get("status")), seconds


async def _prepare(api: ApiProcess, batch_ids: list[str], workdir: Path) -> tuple[Path, float]:
    """The spec of the load (each request with its expected data, the cached ones stored) and the quiet median time
    of an uncached answer."""
    requests = []
    quiet: list[float] = []
    async with httpx.AsyncClient(base_url=api.base, timeout=30) as client:
        for batch_id in batch_ids:
            cached, uncached = _request(SCREEN, batch_id), _request(UNCACHED, batch_id)
            await _answer(client, cached)  # the miss that stores it
            data, status, _ = await _answer(client, cached)
            if data is None or status != "hit":
                raise RuntimeError(f"L1: the batch screen of {batch_id} is not a clean hit: {status}")
            positions, status, _ = await _answer(client, uncached)
            if positions is None or status == "hit":
                raise RuntimeError(f"L1: the uncached query of {batch_id} answered {status}")
            for kind, body, expected, weight in (
                ("cached", cached, data, CACHED_WEIGHT),
                ("uncached", uncached, positions, UNCACHED_WEIGHT),
            ):
                requests.append(
                    {
                        "kind": kind,
                        "weight": weight,
                        "method": "POST",
                        "path": "/graphql",
                        "body": body.decode(),
                        "headers": HEADERS,
                        "expect": {"data": expected},
                    }
                )
        probe = _request(UNCACHED, batch_ids[0])
        for _ in range(QUIET_SAMPLES):
            quiet.append((await _answer(client, probe))[2])
    spec = workdir / "l1.json"
    spec.write_bytes(orjson.dumps({"requests": requests}))
    return spec, statistics.median(quiet)


async def _recovery(api: ApiProcess, batch_id: str, expected: Any, end_at: float, normal: float) -> tuple[float, int]:
    """Seconds from `end_at` until an uncached answer is right and takes at most `normal`; the probes it took."""
    await asyncio.sleep(max(0.0, end_at - time.time()))
    probe = _request(UNCACHED, batch_id)
    probes = 0
    async with httpx.AsyncClient(base_url=api.base, timeout=60) as client, asyncio.timeout(RECOVERY_GUARD_SECONDS):
        while True:
            probes += 1
            data, _, seconds = await _answer(client, probe)
            if data == expected and seconds <= normal:
                return time.time() - end_at, probes


def _delta(before: dict[str, dict[str, float]], after: dict[str, dict[str, float]], name: str) -> dict[str, float]:
    return {k: v - before.get(name, {}).get(k, 0.0) for k, v in after.get(name, {}).items()}


async def run(ctx: Context) -> Result:
    result = Result(NAME, TITLE)
    url = await ctx.servers.fresh_database()
    redis_url = await ctx.servers.redis_url()
    engine = create_engine(url)
    rng = random.Random(31)
    messages = []
    for i in range(BATCHES):
        messages += batch_life(rng, "gen2" if i % 3 else "gen1", USER, 25, 0.1, EPOCH + timedelta(minutes=10 * i))
    await project(engine, messages)
    await engine.dispose()
    batch_ids = list(dict.fromkeys(m.key.decode() for m in messages))[:HOT]

    with tempfile.TemporaryDirectory(prefix="ras-bench-l1-") as tmp:
        async with api_process(url, redis_url, Path(tmp)) as api:
            spec, quiet = await _prepare(api, batch_ids, Path(tmp))
            expected = next(
                r["expect"]["data"]
                for r in orjson.loads(spec.read_bytes())["requests"]
                if r["kind"] == "uncached" and batch_ids[0] in r["body"]
            )
            ctx.log(f"L1: {CLIENTS} clients for {SECONDS:g} s; an uncached answer takes {quiet * 1000:.1f} ms quiet")
            before = await api.counters()
            end_at = time.time() + 1.0 + SECONDS  # a second for the load generator's process to start
            load = asyncio.create_task(mixed_load(api.port, spec, CLIENTS, end_at))
            recovery, probes = await _recovery(api, batch_ids[0], expected, end_at, quiet * NORMAL_FACTOR)
            report = await load
            after = await api.counters()
    await ctx.servers.drop_database(url)
    _report(ctx, result, report, quiet, recovery, probes, before, after)
    return result


def _report(
    ctx: Context,
    result: Result,
    report: dict[str, Any],
    quiet: float,
    recovery: float,
    probes: int,
    before: dict[str, dict[str, float]],
    after: dict[str, dict[str, float]],
) -> None:
    kinds: dict[str, dict[str, float]] = report["kinds"]
    requests = int(report["requests"])
    refused = sum(kind.get("refused", 0) for kind in kinds.values())
    wrong = sum(kind.get("wrong", 0) for kind in kinds.values())
    seconds = float(report["seconds"])
    result.figure(
        "L1 answers per second (right or refused)", "req/s", [requests / seconds], f"{requests:,} in {seconds:.0f} s"
    )
    result.figure("L1 p99, all", "ms", [report["p99_us"] / 1000])
    for name in ("cached", "uncached"):
        kind = kinds.get(name, {})
        result.figure(
            f"L1 p99, {name}", "ms", [kind.get("p99_us", 0.0) / 1000], f"p50 {kind.get('p50_us', 0.0) / 1000:.1f} ms"
        )
    uncached = kinds.get("uncached", {})
    result.figure("L1 refused, share of all answers", "%", [refused / max(requests, 1) * 100], f"{refused:,} refused")
    result.figure(
        "L1 refused, share of uncached", "%", [uncached.get("refused", 0) / max(uncached.get("requests", 1), 1) * 100]
    )
    result.figure(
        "L1 recovery after the load",
        "s",
        [recovery],
        f"{probes} probes; normal ≤ {quiet * NORMAL_FACTOR * 1000:.0f} ms",
    )
    result.target("L1 wrong answers", [float(wrong)], 0.0, at_most=True, unit="answers")
    admissions = _delta(before, after, "ras_api_admissions_total")
    cache = _delta(before, after, "ras_cache_requests_total")
    result.notes.append(
        "L1 admissions: "
        + ", ".join(f"{k} {v:,.0f}" for k, v in sorted(admissions.items()))
        + "; cache: "
        + ", ".join(f"{k} {v:,.0f}" for k, v in sorted(cache.items()))
        + f"; socket errors {report['socket_errors']}; outcomes {kinds}"
    )
    for example in report.get("wrong_examples", []):
        result.notes.append(f"L1 wrong: {example}")
    ctx.log(f"L1: {requests / seconds:,.0f} answers/s, {refused:,} refused, {wrong} wrong, recovery {recovery:.2f} s")
