"""R1 cached read throughput, and M1 memory of the API process.

A real server process (`python -m bench.r1_app`: the app `ras serve` runs, under the same uvicorn options, cache on)
serves the gateway's batch screen — one batch with its 25 essays and their spellcheck and CJ results
(app/static/examples/2-batch-detail.graphql), asked for a teacher (X-User-ID) — from the Redis cache. The same
server has R1's baseline at `/bare`: one Redis GET of a key holding the very bytes the cached GraphQL answer
returns, nothing else (bench/r1_app.py). Same process, event loop, HTTP stack and Redis: the ratio shows what the
cached GraphQL path (authentication, the request's cache key, the lookup: one MGET of the entry and the epoch,
splicing `extensions.cache`, metrics) costs over the least any cached answer could cost.

The gzip row sends the same request with `Accept-Encoding: gzip`: the answer is framed from the entry's compressed
form, memoized in the process (app/compression.py), around this request's `extensions.cache`. Its baseline,
`/bare-gzip`, is one Redis GET of the gzipped bytes such a hit sent, returned as they are with `Content-Encoding:
gzip`: the same bytes on the wire, none of the work.

Each measurement also reports the server's CPU time per request (its process's user and system time over the
requests answered): requests/s on a machine other work keeps busy says more about the machine than the code; CPU per
request much less so. For the capacity section (bench/capacity.py) the same as requests per CPU-second, Redis's
too (its INFO cpu counters over each measurement), and Redis's memory per cached entry after the load (MEMORY USAGE
of the entries and of the tag sets that index them).

Load: `wrk` (Debian package `wrk`) in its own process, 2 threads, 32 connections, the same POST (body and
headers) to both paths; without wrk, `bench.loadgen` (asyncio on uvloop, own process) does the same. After a
warm-up of every path, each repetition measures the four (plain and gzip, GraphQL and bare) for 5 s each, in
alternating order. Reported: requests/s and p50/p99 latency; the targets are GraphQL ≥ 0.7× the bare endpoint's
requests/s, plain and gzip alike. Every GraphQL answer under load
must be a cache hit (checked on the server's metrics: no miss beyond the one that filled the entry).

M1 (API): the server's peak RSS over the whole load, sampled every 20 ms, and its growth from the end of the first
repetition to the end of the last (memory must not grow with the number of requests served; the first repetition
still pays for first-time allocations, such as the few requests that ran uncached after a Redis timeout).
"""

from __future__ import annotations

import asyncio
import gzip
import math
import random
import re
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import httpx
import orjson
import psutil
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import create_async_engine

from bench.api_process import stop_process, wait_ready
from bench.capacity import (
    R1_CACHED_GZIP_PER_CPU,
    R1_CACHED_PER_CPU,
    R1_REDIS_BYTES_PER_ENTRY,
    R1_REDIS_PER_CPU,
    per_cpu_second,
)
from bench.common import MIB, Context, PeakRss, Result, ratios
from bench.cpu import cpu_seconds
from bench.data import HEADERS, project, server_env
from bench.r1_app import BARE_GZIP_KEY, BARE_GZIP_PATH, BARE_KEY, BARE_PATH
from devstack.demo import EPOCH, batch_life
from devstack.process import free_port
from infra.cache_keys import CacheLayout

NAME = "R1"
TITLE = "cached read: batch with 25 essays from Redis vs a bare GET in the same server (+ M1 API memory)"

CONNECTIONS = 32
THREADS = 2
SECONDS = 5.0
WARMUP_SECONDS = 2.0
USER = "teacher-r1"
QUERY = (Path(__file__).parents[1] / "app" / "static" / "examples" / "2-batch-detail.graphql").read_text()

WRK_SCRIPT = """
wrk.method = "POST"
{body}
{headers}
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{{"requests":%d,"seconds":%f,"p50_us":%f,"p99_us":%f,"non_2xx":%d,"socket_errors":%d}}\\n',
    summary.requests, summary.duration / 1e6, latency:percentile(50), latency:percentile(99),
    e.status, e.connect + e.read + e.write + e.timeout))
end
"""


@dataclass(frozen=True)
class Load:
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: int  # non-2xx answers and socket errors

    @property
    def rate(self) -> float:
        return self.requests / self.seconds


class LoadGenerator:
    """wrk when installed, else bench.loadgen: the same closed-loop POST at CONNECTIONS connections; with several
    bodies, each request carries the next one in turn. With `follow`, always bench.loadgen (wrk cannot be told
    anything once it runs), and the requests carry in turn the bodies named last by `show`."""

    def __init__(
        self,
        port: int,
        bodies: Sequence[bytes],
        headers: dict[str, str],
        workdir: Path,
        connections: int = CONNECTIONS,
        name: str = "load",
        follow: bool = False,
    ) -> None:
        self.port = port
        self.connections = connections
        self.follow = follow
        self.wrk = None if follow else shutil.which("wrk")
        self.name = "wrk" if self.wrk else "bench.loadgen (asyncio + uvloop)"
        self._proc: asyncio.subprocess.Process | None = None
        self._script = workdir / f"{name}.lua"
        lines = "\n".join(f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items())
        self._script.write_text(WRK_SCRIPT.format(body=_wrk_bodies(bodies), headers=lines))
        self._request = workdir / f"{name}.json"
        texts = [body.decode() for body in bodies]
        self._request.write_bytes(orjson.dumps({"method": "POST", "bodies": texts, "headers": headers}))

    def _argv(self, path: str, seconds: float) -> list[str]:
        if self.wrk:
            url = f"http://127.0.0.1:{self.port}{path}"
            duration = f"{seconds:g}s"
            return [self.wrk, f"-t{THREADS}", f"-c{self.connections}", f"-d{duration}", "-s", str(self._script), url]
        return [
            sys.executable,
            "-m",
            "bench.loadgen",
            f"--port={self.port}",
            f"--path={path}",
            f"--request-file={self._request}",
            f"--connections={self.connections}",
            f"--seconds={seconds}",
            *(["--follow"] if self.follow else []),
        ]

    async def run(self, path: str, seconds: float) -> Load:
        stdin = subprocess.PIPE if self.follow else subprocess.DEVNULL
        self._proc = proc = await asyncio.create_subprocess_exec(
            *self._argv(path, seconds), stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        assert proc.stdout is not None and proc.stderr is not None
        out, err, _ = await asyncio.gather(proc.stdout.read(), proc.stderr.read(), proc.wait())
        self._proc = None
        lines = [line for line in out.decode().splitlines() if line.startswith("{")]
        if proc.returncode != 0 or not lines:
            raise RuntimeError(f"{self.name} failed ({proc.returncode}): {out.decode()[-2000:]} {err.decode()[-2000:]}")
        found = orjson.loads(lines[-1])
        return Load(
            int(found["requests"]),
            float(found["seconds"]),
            found["p50_us"] / 1000,
            found["p99_us"] / 1000,
            int(found["non_2xx"]) + int(found["socket_errors"]),
        )

    def show(self, indexes: Sequence[int]) -> None:
        """With `follow`: from now on, ask for the bodies of `indexes`, in turn."""
        if indexes and self._proc is not None and self._proc.stdin is not None and not self._proc.stdin.is_closing():
            self._proc.stdin.write(" ".join(map(str, indexes)).encode() + b"\n")


def _wrk_bodies(bodies: Sequence[bytes]) -> str:
    """The Lua that gives wrk its request bodies: one fixed body, or a `request` function taking them in turn
    (slower per request, so only when there are several)."""
    if len(bodies) == 1:
        return f"wrk.body = [==[{bodies[0].decode()}]==]"
    listed = ",\n".join(f"  [==[{body.decode()}]==]" for body in bodies)
    return (
        f"local bodies = {{\n{listed}\n}}\nlocal n = 0\n"
        "request = function()\n  n = n + 1\n  return wrk.format(nil, nil, nil, bodies[n % #bodies + 1])\nend"
    )


async def _prime(base: str, body: bytes, headers: dict[str, str], redis: Redis) -> tuple[bytes, bytes]:
    """Store the entry (one miss), check that the next answers are clean hits, plain and gzipped, and give the bare
    endpoints their bytes: the plain answer, and the gzipped one exactly as it was sent."""
    async with httpx.AsyncClient(base_url=base, timeout=10) as client:
        await client.post("/graphql", content=body, headers=headers)  # the miss that stores the entry
        hit = await client.post("/graphql", content=body, headers={**headers, "Accept-Encoding": "identity"})
        answer = orjson.loads(hit.content)
        if answer.get("extensions", {}).get("cache", {}).get("status") != "hit" or "errors" in answer:
            raise RuntimeError(f"R1: the second request was not a clean cache hit: {hit.text[:500]}")
        if len(answer["data"]["batch"]["essays"]["nodes"]) != 25:
            raise RuntimeError("R1: the batch should have 25 essays")
        async with client.stream("POST", "/graphql", content=body, headers={**headers, "Accept-Encoding": "gzip"}) as r:
            gzipped = b"".join([part async for part in r.aiter_raw()])
        encoded = r.headers.get("content-encoding") == "gzip"
        if not encoded or orjson.loads(gzip.decompress(gzipped))["data"] != answer["data"]:
            raise RuntimeError("R1: the gzip request was not answered with the same document, gzipped")
        await redis.set(BARE_KEY, hit.content)
        await redis.set(BARE_GZIP_KEY, gzipped)
        bare = await client.post(BARE_PATH, content=body, headers=headers)
        async with client.stream("POST", BARE_GZIP_PATH, content=body, headers=headers) as r:
            bare_gzipped = b"".join([part async for part in r.aiter_raw()])
        assert (bare.content, bare_gzipped) == (hit.content, gzipped)
    return hit.content, gzipped


async def _redis_cpu(redis: Redis) -> float:
    """CPU time the Redis server has used so far (user and system, all its threads), from INFO: the server may be
    on another machine."""
    info = await redis.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


async def _bytes_per_entry(redis: Redis, layout: CacheLayout) -> float:
    """Redis memory of the cache's entries and the tag sets that index them (MEMORY USAGE, allocator overhead
    included), per entry. NaN without an entry."""
    entries = [key async for key in redis.scan_iter(match=f"{layout.entry_prefix}*", count=1000)]
    indexes = [key async for key in redis.scan_iter(match=f"{layout.index('')}*", count=1000)]
    if not entries:
        return math.nan
    sizes = [await redis.memory_usage(key) or 0 for key in [*entries, *indexes]]
    return sum(sizes) / len(entries)


def _described(key: str, load: Load) -> str:
    return f"{key} {load.rate:,.0f} req/s (p50 {load.p50_ms:.2f} ms, p99 {load.p99_ms:.2f} ms)"


def _not_hits(metrics: str) -> float:
    """GraphQL answers the server did not take from the cache so far (misses, and bypasses on a Redis timeout)."""
    found = re.findall(r'^ras_cache_requests_total\{result="(?:miss|bypass|coalesced)"\} (\S+)$', metrics, re.MULTILINE)
    return sum(float(value) for value in found)


async def run(ctx: Context) -> Result:
    result = Result(NAME, TITLE)
    url = await ctx.servers.fresh_database()
    redis_url = await ctx.servers.redis_url()
    engine = create_async_engine(url)
    rng = random.Random(11)
    messages = []
    for i in range(20):  # the teacher's other batches make the table realistic; the first one is asked for
        messages += batch_life(rng, "gen2" if i % 3 else "gen1", USER, 25, 0.1, EPOCH + timedelta(minutes=10 * i))
    await project(engine, messages)
    await engine.dispose()
    batch_id = messages[0].key.decode()

    port = free_port()
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    env = server_env(url, redis_url, port, prefix)
    headers = {**HEADERS, "X-User-ID": USER}
    body = orjson.dumps({"query": QUERY, "variables": {"batchId": batch_id, "first": 25}})
    base = f"http://127.0.0.1:{port}"
    redis = Redis.from_url(redis_url)
    samples: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="ras-bench-r1-") as tmp:
        log = Path(tmp) / "server.log"
        with log.open("wb") as out:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bench.r1_app", env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out
            )
        try:
            await wait_ready(base, proc, log, "the R1 server")
            plain, gzipped = await _prime(base, body, headers, redis)
            gzip_headers = {**headers, "Accept-Encoding": "gzip"}
            loads = {
                "graphql": (LoadGenerator(port, [body], headers, Path(tmp)), "/graphql"),
                "bare": (LoadGenerator(port, [body], headers, Path(tmp)), BARE_PATH),
                "graphql gzip": (LoadGenerator(port, [body], gzip_headers, Path(tmp), name="gzip"), "/graphql"),
                "bare gzip": (LoadGenerator(port, [body], gzip_headers, Path(tmp), name="gzip"), BARE_GZIP_PATH),
            }
            load = loads["graphql"][0]
            ctx.log(
                f"R1: {len(plain):,} B answer ({len(gzipped):,} B gzipped); load from {load.name}, "
                f"{CONNECTIONS} connections"
            )
            with PeakRss(proc.pid) as rss:
                for generator, path in loads.values():
                    await generator.run(path, WARMUP_SECONDS)  # also fills the Redis connection pools
                async with httpx.AsyncClient(base_url=base, timeout=10) as client:
                    not_hits_before = _not_hits((await client.get("/metrics", headers=HEADERS)).text)
                errors = 0
                rss_after: list[int] = []  # at the end of each repetition
                server = psutil.Process(proc.pid)
                for rep in range(ctx.repetitions):
                    order = list(loads) if rep % 2 == 0 else list(reversed(loads))
                    got: dict[str, Load] = {}
                    for key in order:
                        cpu_before, redis_before = cpu_seconds(server), await _redis_cpu(redis)
                        got[key] = measured = await loads[key][0].run(loads[key][1], SECONDS)
                        cpu = (cpu_seconds(server) - cpu_before) / max(measured.requests, 1)
                        samples.setdefault(f"{key} cpu", []).append(cpu * 1e6)
                        redis_cpu = await _redis_cpu(redis) - redis_before
                        samples.setdefault(f"{key} redis", []).append(per_cpu_second(measured.requests, redis_cpu))
                    for key, measured in got.items():
                        errors += measured.errors
                        samples.setdefault(f"{key} requests", []).append(measured.requests)
                        samples.setdefault(f"{key} rate", []).append(measured.rate)
                        samples.setdefault(f"{key} p50", []).append(measured.p50_ms)
                        samples.setdefault(f"{key} p99", []).append(measured.p99_ms)
                    rss_after.append(psutil.Process(proc.pid).memory_info().rss)
                    ctx.log(f"R1 #{rep + 1}: " + "; ".join(_described(key, got[key]) for key in loads))
            entry_bytes = await _bytes_per_entry(redis, CacheLayout(prefix))
            async with httpx.AsyncClient(base_url=base, timeout=10) as client:
                not_hits = _not_hits((await client.get("/metrics", headers=HEADERS)).text) - not_hits_before
            # A Redis call over RAS_REDIS_TIMEOUT_SECONDS (0.1 s) fails: the GraphQL request then executes without the
            # cache (fail-open), a bare one answers 500. The first burst of 32 connections can see a few of those on
            # a busy 2-core machine; more than a few in a thousand would mean the figures are not of cached reads.
            requests = sum(sum(samples[f"{key} requests"]) for key in loads)
            if not_hits + errors > requests / 1000:
                raise RuntimeError(f"R1: {not_hits:.0f} GraphQL answers not from cache and {errors} errors")
        finally:
            await stop_process(proc)
            await redis.delete(BARE_KEY, BARE_GZIP_KEY)
            await redis.aclose()
            await ctx.servers.drop_database(url)

    result.figure("R1 GraphQL from cache", "req/s", samples["graphql rate"], f"{len(plain):,} B answers")
    result.figure("R1 GraphQL p50", "ms", samples["graphql p50"])
    result.figure("R1 GraphQL p99", "ms", samples["graphql p99"])
    result.figure("R1 bare Redis GET endpoint", "req/s", samples["bare rate"])
    result.figure("R1 bare p50", "ms", samples["bare p50"])
    result.figure("R1 bare p99", "ms", samples["bare p99"])
    gzip_note = f"{len(gzipped):,} B gzipped answers"
    result.figure("R1 GraphQL gzip from cache", "req/s", samples["graphql gzip rate"], gzip_note)
    result.figure("R1 GraphQL gzip p50", "ms", samples["graphql gzip p50"])
    result.figure("R1 GraphQL gzip p99", "ms", samples["graphql gzip p99"])
    result.figure("R1 bare gzip Redis GET endpoint", "req/s", samples["bare gzip rate"])
    result.figure("R1 bare gzip p50", "ms", samples["bare gzip p50"])
    result.figure("R1 bare gzip p99", "ms", samples["bare gzip p99"])
    for key in loads:
        result.figure(f"R1 {key} server CPU per request", "µs", samples[f"{key} cpu"])
    per_cpu = {key: [per_cpu_second(1e6, us) for us in samples[f"{key} cpu"]] for key in ("graphql", "graphql gzip")}
    result.figure(R1_CACHED_PER_CPU, "req/CPU-s", per_cpu["graphql"], "requests / the server's CPU seconds")
    result.figure(R1_CACHED_GZIP_PER_CPU, "req/CPU-s", per_cpu["graphql gzip"])
    result.figure(R1_REDIS_PER_CPU, "req/CPU-s", samples["graphql redis"], "requests / Redis's CPU seconds (INFO cpu)")
    result.figure(R1_REDIS_BYTES_PER_ENTRY, "B", [entry_bytes], "MEMORY USAGE of entries and tag sets / entries")
    result.figure("M1 API peak RSS during R1", "MiB", [rss.peak / MIB], f"over {rss.samples:,} samples")
    served = sum(sum(samples[f"{key} requests"][1:]) for key in loads)
    result.figure(
        "M1 API RSS growth over repetitions 2…n",
        "MiB",
        [(rss_after[-1] - rss_after[0]) / MIB],
        f"while serving {served:,} more requests",
    )
    result.target("R1 GraphQL / bare requests/s", ratios(samples["graphql rate"], samples["bare rate"]), 0.7)
    gzip_ratios = ratios(samples["graphql gzip rate"], samples["bare gzip rate"])
    result.target("R1 GraphQL gzip / bare gzip requests/s", gzip_ratios, 0.7)
    result.notes.append(f"R1: {not_hits:.0f} GraphQL answers not from cache, {errors} errors under load")
    result.notes.append(
        f"R1 load: {load.name}, {THREADS} threads, {CONNECTIONS} connections, {SECONDS:g} s per measurement; "
        "server: python -m bench.r1_app (ras serve's app and uvicorn options, one process)"
    )
    return result
