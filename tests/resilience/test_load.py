"""Load: 200 concurrent clients for 60 s against the real `ras serve`, while 1,000 events/s flow through `ras consume`.

The clients mix what callers do: the same hot queries again and again (answered from the cache until an event evicts
them), a different batch each time, the projection (never cached) and the REST shim. The promises: zero errors,
memory that stops growing, and once the stream is applied, answers equal to the tables.

`RAS_RESILIENCE_LOAD_SECONDS` shortens or lengthens the run (default 60).
"""

from __future__ import annotations

import asyncio
import os
import random
import statistics
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.helpers import figures
from tests.helpers.kafka_io import produce
from tests.helpers.stack import (
    AUTH,
    BATCH_QUERY,
    LIST_QUERY,
    Api,
    Consumer,
    PacedProducer,
    Wiring,
    batch_ids,
    batch_lives,
    cache_status,
    graphql,
    reference_api,
    rss_mib,
    stream,
    wait_for_ends,
)

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

SECONDS = float(os.environ.get("RAS_RESILIENCE_LOAD_SECONDS", "60"))
CLIENTS = 200
RATE = 1_000.0
USERS = [f"teacher-{i:02d}" for i in range(7)]
PROJECTION_QUERY = (
    "{ projection { totalLag newestEventAt quarantinedCount partitions { topic partition nextOffset } } }"
)
# Memory is bounded if the second half of the run adds little: a leak per request or per event grows steadily, and
# the second half serves as many requests and events as the first. The allowance covers allocator noise and caches
# that fill once (connection pools, compiled statements).
GROWTH_FACTOR = 1.25
GROWTH_SLACK_MIB = 40.0


class Load:
    """What the clients saw: outcomes and latencies by kind of request."""

    def __init__(self) -> None:
        self.latencies: dict[str, list[float]] = defaultdict(list)
        self.outcomes: Counter[str] = Counter()
        self.errors: list[str] = []

    def record(self, kind: str, seconds: float, response: httpx.Response) -> None:
        self.latencies[kind].append(seconds)
        body = response.json() if response.headers.get("content-type", "").startswith("application/json") else None
        if not 200 <= response.status_code < 300 or (isinstance(body, dict) and "errors" in body):
            self.outcomes["error"] += 1
            if len(self.errors) < 20:
                self.errors.append(f"{kind}: HTTP {response.status_code} {response.text[:300]}")
            return
        status = cache_status(body) if isinstance(body, dict) and kind != "rest" else None
        self.outcomes[status or ("rest" if kind == "rest" else "uncacheable")] += 1

    def failure(self, kind: str, exc: Exception) -> None:
        self.outcomes["error"] += 1
        if len(self.errors) < 20:
            self.errors.append(f"{kind}: {type(exc).__name__}: {exc}")

    def percentiles(self) -> dict[str, str]:
        everything = sorted(x for v in self.latencies.values() for x in v)
        out = {"all": _p50_p99(everything)}
        out.update({kind: _p50_p99(sorted(v)) for kind, v in self.latencies.items()})
        return out


def _p50_p99(values: list[float]) -> str:
    if not values:
        return "-"
    p99 = values[min(len(values) - 1, int(len(values) * 0.99))]
    return f"p50 {statistics.median(values) * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, max {values[-1] * 1000:.0f} ms"


def request_kinds(
    seeded: list[str], rng: random.Random
) -> list[tuple[str, Callable[[httpx.AsyncClient], Awaitable[httpx.Response]]]]:
    """The requests a client picks from, with their kinds. Hot ones repeat (the cache's case), the rest vary."""
    hot = seeded[:8]

    def batch(ids: list[str]) -> Callable[[httpx.AsyncClient], Awaitable[httpx.Response]]:
        return lambda client: graphql(client, BATCH_QUERY, {"id": rng.choice(ids)})

    def user_list(client: httpx.AsyncClient) -> Awaitable[httpx.Response]:
        return graphql(client, LIST_QUERY, {"userId": rng.choice(USERS), "first": 20}, user=None)

    def projection(client: httpx.AsyncClient) -> Awaitable[httpx.Response]:
        return graphql(client, PROJECTION_QUERY)

    def rest_status(client: httpx.AsyncClient) -> Awaitable[httpx.Response]:
        return client.get(f"/internal/v1/batches/{rng.choice(seeded)}/status", headers=AUTH)

    def rest_list(client: httpx.AsyncClient) -> Awaitable[httpx.Response]:
        user = rng.choice(USERS)
        return client.get(
            f"/internal/v1/batches/user/{user}", params={"limit": 20, "offset": rng.randrange(0, 40)}, headers=AUTH
        )

    return [
        ("hot batch", batch(hot)),
        ("hot batch", batch(hot)),
        ("hot list", user_list),
        ("any batch", batch(seeded)),
        ("projection", projection),
        ("rest", rest_status),
        ("rest", rest_list),
    ]


async def client_loop(url: str, load: Load, deadline: float, seed: int, seeded: list[str]) -> None:
    """One caller with its own keep-alive connection, asking as fast as it is answered until the deadline.

    A client of its own rather than one shared pool of 200: httpx's pool does work in proportion to its size on every
    request, and with one shared pool this process answered for half the requests per second (measured)."""
    rng = random.Random(seed)
    kinds = request_kinds(seeded, rng)
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        while time.monotonic() < deadline:
            kind, send = rng.choice(kinds)
            started = time.monotonic()
            try:
                response = await send(client)
            except httpx.HTTPError as exc:
                load.failure(kind, exc)
                continue
            load.record(kind, time.monotonic() - started, response)


async def metrics_of(url: str) -> dict[str, float]:
    """The process's Prometheus counters summed over their labels."""
    async with httpx.AsyncClient(timeout=10) as client:
        text = (await client.get(url + "/metrics")).text
    totals: dict[str, float] = defaultdict(float)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            totals[sample.name] += sample.value
    return totals


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


async def sample_rss(pids: dict[str, int], samples: dict[str, list[float]], every: float = 1.0) -> None:
    while True:
        for name, pid in pids.items():
            samples[name].append(rss_mib(pid))
        await asyncio.sleep(every)


async def test_200_clients_while_1000_events_per_second_flow(
    engine: AsyncEngine, database_url: str, redis_url: str, kafka_bootstrap: str, tmp_path: Path
) -> None:
    scenario = "load"
    began = time.monotonic()
    seed_events = [m for life in batch_lives(240, seed=81, users=len(USERS)) for m in life]
    flowing = stream(int(RATE * SECONDS), seed=82, resend_rate=0.03)
    seeded = batch_ids(seed_events)
    wiring = Wiring(database_url, kafka_bootstrap).with_cache(redis_url)
    consumer = Consumer(wiring, tmp_path / "consume.log", log_level="WARNING")
    api = Api(wiring, tmp_path / "serve.log")
    load = Load()
    rss: dict[str, list[float]] = defaultdict(list)
    try:
        ends = await produce(kafka_bootstrap, seed_events)
        await wait_for_ends(engine, ends, 60, consumer)
        await api.ready()
        sampler = asyncio.create_task(sample_rss({"api": api.pid, "consumer": consumer.pid}, rss))
        processes = {
            "api": psutil.Process(api.pid),
            "consumer": psutil.Process(consumer.pid),
            "clients": psutil.Process(),
        }
        cpu_before = {name: cpu_seconds(p) for name, p in processes.items()}
        started = time.monotonic()
        deadline = started + SECONDS
        async with PacedProducer(kafka_bootstrap) as producer:
            producing = asyncio.create_task(producer.paced(flowing, RATE))
            await asyncio.gather(*(client_loop(api.url, load, deadline, i, seeded) for i in range(CLIENTS)))
            elapsed = time.monotonic() - started
            cpu = {name: round(cpu_seconds(p) - cpu_before[name]) for name, p in processes.items()}
            rate = await producing
        sampler.cancel()
        await asyncio.gather(sampler, return_exceptions=True)
        ends = {**ends, **producer.ends}
        finished = time.monotonic()
        await wait_for_ends(engine, ends, 120, consumer)
        behind_s = time.monotonic() - finished
        api_metrics = await metrics_of(api.url)
        # Evictions follow their commit by a round trip.
        await asyncio.sleep(0.3)

        async with httpx.AsyncClient(base_url=api.url, timeout=30) as client:
            # Consistency: a sample of answers, asked twice (the second may be a hit), equals the tables' own.
            sample = random.Random(83).sample(seeded + batch_ids(flowing), 60)
            questions = [(BATCH_QUERY, {"id": i}) for i in sample] + [
                (LIST_QUERY, {"userId": u, "first": 50}) for u in [*USERS, None]
            ]
            mismatches = []
            async with reference_api(engine) as reference:
                for query, variables in questions:
                    truth = (await graphql(reference, query, variables)).json()
                    for _ in range(2):
                        answer = (await graphql(client, query, variables)).json()
                        if answer.get("data") != truth["data"]:
                            mismatches.append(f"{variables}: {cache_status(answer)}")
        await consumer.stop()
        await api.stop()
    finally:
        consumer.kill()
        api.kill()

    requests = sum(len(v) for v in load.latencies.values())
    middle = {name: values[len(values) // 2] for name, values in rss.items()}
    end = {name: values[-1] for name, values in rss.items()}
    figures.report(
        scenario,
        clients=CLIENTS,
        seconds=elapsed,
        requests=requests,
        requests_per_s=round(requests / elapsed),
        cpu_s=cpu,
        outcomes=dict(load.outcomes),
        errors_seen=load.outcomes["error"],
        latency=load.percentiles(),
        events=len(flowing),
        produce_rate=round(rate),
        applied_s_after_load=behind_s,
        api_redis_errors=api_metrics.get("ras_cache_errors_total", 0),
        rss_mib={
            name: [round(v) for v in (values[0], middle[name], end[name], max(values))] for name, values in rss.items()
        },
        consistency_checked=len(questions) * 2,
        mismatches=len(mismatches),
        total_s=time.monotonic() - began,
    )
    assert load.outcomes["error"] == 0, "\n".join(load.errors)
    assert rate >= RATE * 0.9, f"the producer reached only {rate:.0f} events/s"
    assert load.outcomes["hit"] > 0 and load.outcomes["miss"] > 0, "the mix exercised the cache both ways"
    for name in rss:
        bound = middle[name] * GROWTH_FACTOR + GROWTH_SLACK_MIB
        assert end[name] <= bound, f"{name} RSS grew from {middle[name]:.0f} MiB mid-run to {end[name]:.0f} MiB"
    assert mismatches == [], mismatches[:10]
