"""Load: 200 concurrent clients for 60 s against the real `ras serve`, while 1,000 events/s flow through `ras consume`.

The clients mix what callers do: the same hot queries again and again (answered from the cache until an event evicts
them), a different batch each time, the projection (never cached) and the REST shim. The promises are about
behaviour; speed is bench/'s. Every answer is correct; every refusal is the documented retryable one (HTTP 503 with
Retry-After and a SERVICE_UNAVAILABLE body: a busy machine sheds load that way, rightly); nothing else comes back.
Once the load stops the service answers normally again (how soon is reported), memory has stopped growing, and once
the stream is applied, answers equal the tables.

`RAS_RESILIENCE_LOAD_SECONDS` shortens or lengthens the run (default 60).

One module (about 490 lines) for one scenario: most of it is the truth each kind of answer is checked against, which
only this load test needs.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import statistics
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.ext.asyncio import AsyncEngine

from consumer.pure.topics import BATCH_ESSAYS_REGISTERED
from devstack.demo import Message
from tests.helpers import figures
from tests.helpers.kafka_io import Offsets, produce
from tests.helpers.stack import (
    AUTH,
    BATCH_QUERY,
    LIST_QUERY,
    Api,
    Consumer,
    PacedProducer,
    Wiring,
    announcements,
    batch_ids,
    batch_lives,
    cache_status,
    graphql,
    reference_api,
    rss_mib,
    stream,
    wait_for_announced,
    wait_for_ends,
)

SECONDS = float(os.environ.get("RAS_RESILIENCE_LOAD_SECONDS", "60"))
# The load, the seeding before it and the checks after it, on a busy machine: a hang guard, not a bound.
pytestmark = [pytest.mark.kafka, pytest.mark.slow, pytest.mark.timeout(900 + 3 * SECONDS)]

CLIENTS = 200
# A hang guard, not a bound: a request waits at most RAS_ADMISSION_WAIT_SECONDS for an execution slot before it
# is refused (an admitted one, at most the pool's timeout for a connection), and then runs one query.
CLIENT_TIMEOUT_SECONDS = 300
RATE = 1_000.0
USERS = [f"teacher-{i:02d}" for i in range(7)]
PAGE = 20
PROJECTION_QUERY = (
    "{ projection { totalLag newestEventAt quarantinedCount partitions { topic partition nextOffset } } }"
)
# Memory is bounded if the second half of the run adds little: a leak per request or per event grows steadily, and
# the second half serves as many requests and events as the first. The allowance covers allocator noise and caches
# that fill once (connection pools, compiled statements).
GROWTH_FACTOR = 1.25
GROWTH_SLACK_MIB = 40.0


@dataclass(frozen=True)
class Truth:
    """What a correct answer holds while the stream flows. The stream registers batches of its own, so the seeded
    batches never change and their answers are known exactly; a user's list and the projection only grow, from what
    the seed gave them towards what the whole stream will."""

    batches: dict[str, Any]  # BATCH_QUERY's data by seeded batch id
    statuses: dict[str, Any]  # the REST status body by seeded batch id
    seeded: Counter[str]  # seeded batches per user
    owned: dict[str, set[str]]  # every batch id of each user, seeded or streamed
    seed_ends: Offsets


def owners(messages: Sequence[Message]) -> dict[str, str]:
    """The user of every batch registered in `messages`."""
    registrations = (json.loads(m.value)["data"] for m in messages if m.topic == BATCH_ESSAYS_REGISTERED)
    return {data["entity_id"]: data["user_id"] for data in registrations}


async def known_truth(
    engine: AsyncEngine, seed: Sequence[Message], flowing: Sequence[Message], seed_ends: Offsets
) -> Truth:
    """The answers of the seeded batches, read from the tables (the seed is applied, the stream not yet begun)."""
    batches, statuses = {}, {}
    async with reference_api(engine) as reference:
        for batch_id in batch_ids(seed):
            response = await graphql(reference, BATCH_QUERY, {"id": batch_id})
            assert response.status_code == 200 and "errors" not in response.json(), response.text
            batches[batch_id] = response.json()["data"]
            response = await reference.get(f"/internal/v1/batches/{batch_id}/status", headers=AUTH)
            assert response.status_code == 200, response.text
            statuses[batch_id] = response.json()
    owned: dict[str, set[str]] = defaultdict(set)
    for batch_id, user in {**owners(seed), **owners(flowing)}.items():
        owned[user].add(batch_id)
    return Truth(batches, statuses, Counter(owners(seed).values()), dict(owned), seed_ends)


@dataclass(frozen=True)
class Request:
    """One request a client sends, and what is wrong with a 200's JSON body (None: it is right)."""

    kind: str
    send: Callable[[httpx.AsyncClient], Awaitable[httpx.Response]]
    check: Callable[[Any], str | None]

    @property
    def rest(self) -> bool:
        return self.kind == "rest"


def _graphql_data(body: Any) -> tuple[Any, str | None]:
    if not isinstance(body, dict) or "errors" in body or "data" not in body:
        return None, "not a GraphQL answer without errors"
    return body["data"], None


def batch_check(truth: Truth, batch_id: str) -> Callable[[Any], str | None]:
    def check(body: Any) -> str | None:
        data, problem = _graphql_data(body)
        return problem or (None if data == truth.batches[batch_id] else f"batch {batch_id} differs from the tables")

    return check


def list_check(truth: Truth, user: str) -> Callable[[Any], str | None]:
    def check(body: Any) -> str | None:
        data, problem = _graphql_data(body)
        if problem:
            return problem
        total, ids = data["batches"]["totalCount"], [node["id"] for node in data["batches"]["nodes"]]
        if not truth.seeded[user] <= total <= len(truth.owned[user]):
            return f"{user} has {total} batches, outside {truth.seeded[user]}..{len(truth.owned[user])}"
        if len(ids) != min(PAGE, total) or not set(ids) <= truth.owned[user]:
            return f"{user}'s first page holds {len(ids)} batches of {total}, or batches of someone else"
        return None

    return check


def projection_check(truth: Truth) -> Callable[[Any], str | None]:
    def check(body: Any) -> str | None:
        data, problem = _graphql_data(body)
        if problem:
            return problem
        projection = data["projection"]
        at = {(p["topic"], p["partition"]): p["nextOffset"] for p in projection["partitions"]}
        behind = [tp for tp, end in truth.seed_ends.items() if at.get(tp, 0) < end]
        if behind or projection["quarantinedCount"] != 0:
            return f"positions behind the applied seed {behind[:3]} or records quarantined"
        return None

    return check


def status_check(truth: Truth, batch_id: str) -> Callable[[Any], str | None]:
    def check(body: Any) -> str | None:
        return None if body == truth.statuses[batch_id] else f"REST status of {batch_id} differs from the tables"

    return check


def rest_list_check(truth: Truth, user: str, offset: int) -> Callable[[Any], str | None]:
    def check(body: Any) -> str | None:
        pagination, batches = body["pagination"], body["batches"]
        total = pagination["total"]
        if (pagination["limit"], pagination["offset"]) != (PAGE, offset):
            return f"pagination {pagination} for limit {PAGE}, offset {offset}"
        if not truth.seeded[user] <= total <= len(truth.owned[user]):
            return f"{user} has {total} batches, outside {truth.seeded[user]}..{len(truth.owned[user])}"
        if len(batches) != max(0, min(PAGE, total - offset)):
            return f"{len(batches)} batches on the page at {offset} of {total}"
        if any(b["user_id"] != user or b["batch_id"] not in truth.owned[user] for b in batches):
            return f"a batch of someone else in {user}'s list"
        return None

    return check


def request_kinds(truth: Truth, rng: random.Random) -> list[Callable[[], Request]]:
    """What a client picks from, each drawing its own arguments. Hot ones repeat (the cache's case), the rest vary."""
    seeded = list(truth.batches)
    hot = seeded[:8]

    def batch(kind: str, ids: list[str]) -> Callable[[], Request]:
        def make() -> Request:
            batch_id = rng.choice(ids)
            return Request(
                kind, lambda client: graphql(client, BATCH_QUERY, {"id": batch_id}), batch_check(truth, batch_id)
            )

        return make

    def user_list() -> Request:
        user = rng.choice(USERS)
        variables = {"userId": user, "first": PAGE}
        return Request("hot list", lambda client: graphql(client, LIST_QUERY, variables), list_check(truth, user))

    def projection() -> Request:
        return Request("projection", lambda client: graphql(client, PROJECTION_QUERY), projection_check(truth))

    def rest_status() -> Request:
        batch_id = rng.choice(seeded)
        path = f"/internal/v1/batches/{batch_id}/status"
        return Request("rest", lambda client: client.get(path, headers=AUTH), status_check(truth, batch_id))

    def rest_list() -> Request:
        user, offset = rng.choice(USERS), rng.randrange(0, 40)
        path, params = f"/internal/v1/batches/user/{user}", {"limit": PAGE, "offset": offset}
        return Request(
            "rest", lambda client: client.get(path, params=params, headers=AUTH), rest_list_check(truth, user, offset)
        )

    return [
        batch("hot batch", hot),
        batch("hot batch", hot),
        user_list,
        batch("any batch", seeded),
        projection,
        rest_status,
        rest_list,
    ]


def refusal_problem(request: Request, response: httpx.Response, body: Any) -> str | None:
    """What a 503 lacks of the documented refusal (docs/rest.md, docs/runbook.md), or None."""
    if not response.headers.get("Retry-After", "").isdigit():
        return "a 503 without Retry-After"
    if request.rest:
        documented = isinstance(body, dict) and body.get("error") == "Service unavailable"
        documented = documented and body.get("error_code") == "SERVICE_UNAVAILABLE"
        documented = documented and bool(body.get("message")) and bool(body.get("correlation_id"))
    else:
        errors = body.get("errors") if isinstance(body, dict) else None
        documented = bool(errors) and all(
            e.get("extensions", {}).get("code") == "SERVICE_UNAVAILABLE" and e.get("message") for e in errors or ()
        )
    return None if documented else "a 503 without the documented SERVICE_UNAVAILABLE body"


class Load:
    """What the clients saw: outcomes, refusals by message, and latencies by kind of request."""

    def __init__(self) -> None:
        self.latencies: dict[str, list[float]] = defaultdict(list)
        self.outcomes: Counter[str] = Counter()
        self.refusals: Counter[str] = Counter()
        self.problems: list[str] = []

    @property
    def wrong(self) -> int:
        return self.outcomes["wrong"]

    def record(self, request: Request, seconds: float, response: httpx.Response) -> str:
        """Classify one answer; returns its outcome (`wrong` for anything but a right answer or a refusal)."""
        self.latencies[request.kind].append(seconds)
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code == 503:
            problem = refusal_problem(request, response, body)
            if problem is None:
                message = body["message"] if request.rest else body["errors"][0]["message"]
                self.refusals[message] += 1
                return self._count("refused (503)")
        elif response.status_code == 200:
            problem = request.check(body) if body is not None else "not JSON"
            if problem is None:
                status = None if request.rest else cache_status(body)
                return self._count(status or ("rest" if request.rest else "uncacheable"))
        else:
            problem = "neither an answer nor the documented refusal"
        self._wrong(f"{request.kind}: {problem}: HTTP {response.status_code} {response.text[:300]}")
        return "wrong"

    def failure(self, request: Request, exc: Exception) -> None:
        self._wrong(f"{request.kind}: {type(exc).__name__}: {exc} (from {exc.__cause__!r})")

    def _count(self, outcome: str) -> str:
        self.outcomes[outcome] += 1
        return outcome

    def _wrong(self, problem: str) -> None:
        self.outcomes["wrong"] += 1
        if len(self.problems) < 20:
            self.problems.append(problem)

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


async def client_loop(url: str, load: Load, deadline: float, seed: int, truth: Truth) -> None:
    """One caller with its own keep-alive connection, asking as fast as it is answered until the deadline.

    A client of its own rather than one shared pool of 200: httpx's pool does work in proportion to its size on every
    request, and with one shared pool this process answered for half the requests per second (measured)."""
    rng = random.Random(seed)
    kinds = request_kinds(truth, rng)
    async with httpx.AsyncClient(base_url=url, timeout=CLIENT_TIMEOUT_SECONDS) as client:
        while time.monotonic() < deadline:
            request = rng.choice(kinds)()
            started = time.monotonic()
            try:
                response = await request.send(client)
            except httpx.HTTPError as exc:
                load.failure(request, exc)
                continue
            load.record(request, time.monotonic() - started, response)


async def recover(url: str, load: Load, truth: Truth) -> tuple[float, int]:
    """Ask one request of every kind, again and again, until a whole round is answered without a refusal: the
    service answers normally again. Returns how long that took after the load stopped, and the rounds asked. Wrong
    answers and failed requests are recorded in `load` like the load's own."""
    stopped = time.monotonic()
    kinds = request_kinds(truth, random.Random(84))
    rounds = 0
    async with httpx.AsyncClient(base_url=url, timeout=CLIENT_TIMEOUT_SECONDS) as client, asyncio.timeout(300):
        while True:
            rounds += 1
            outcomes = []
            for make in kinds:
                request = make()
                started = time.monotonic()
                try:
                    response = await request.send(client)
                except httpx.HTTPError as exc:
                    load.failure(request, exc)
                    continue
                outcomes.append(load.record(request, time.monotonic() - started, response))
            if "refused (503)" not in outcomes:
                return time.monotonic() - stopped, rounds
            await asyncio.sleep(0.1)


async def metrics_of(url: str) -> dict[str, float]:
    """The process's Prometheus counters summed over their labels."""
    async with httpx.AsyncClient(timeout=10) as client:
        text = (await client.get(url + "/metrics", headers=AUTH)).text
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
    after = Load()
    rss: dict[str, list[float]] = defaultdict(list)
    try:
        async with announcements(wiring, redis_url) as announced:
            ends = await produce(kafka_bootstrap, seed_events)
            await wait_for_ends(engine, ends, 120, consumer)
            truth = await known_truth(engine, seed_events, flowing, ends)
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
                await asyncio.gather(*(client_loop(api.url, load, deadline, i, truth) for i in range(CLIENTS)))
                elapsed = time.monotonic() - started
                cpu = {name: round(cpu_seconds(p) - cpu_before[name]) for name, p in processes.items()}
                recovery_s, recovery_rounds = await recover(api.url, after, truth)
                rate = await producing
            sampler.cancel()
            await asyncio.gather(sampler, return_exceptions=True)
            ends = {**ends, **producer.ends}
            finished = time.monotonic()
            await wait_for_ends(engine, ends, 300, consumer)
            behind_s = time.monotonic() - finished
            api_metrics = await metrics_of(api.url)
            await wait_for_announced(announced, producer.ends, 120)  # the last commit's eviction is done

            async with httpx.AsyncClient(base_url=api.url, timeout=30) as client:
                # Consistency: a sample of answers, asked twice (the second may be a hit), equals the tables' own.
                sample = random.Random(83).sample(seeded + batch_ids(flowing), 60)
                questions = [(BATCH_QUERY, {"id": i}) for i in sample] + [
                    (LIST_QUERY, {"userId": u, "first": 50}) for u in [*USERS, None]
                ]
                mismatches = []
                repeated: Counter[str] = Counter()  # how the second asks were answered
                async with reference_api(engine) as reference:
                    for query, variables in questions:
                        truth_now = (await graphql(reference, query, variables)).json()
                        for ask in range(2):
                            answer = (await graphql(client, query, variables)).json()
                            if answer.get("data") != truth_now["data"]:
                                mismatches.append(f"{variables}: {cache_status(answer)}")
                            repeated[str(cache_status(answer))] += ask
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
        refusals=dict(load.refusals),
        wrong_answers=load.wrong,
        latency=load.percentiles(),
        recovery_s=recovery_s,
        recovery_rounds=recovery_rounds,
        events=len(flowing),
        produce_rate=round(rate),
        applied_s_after_load=behind_s,
        api_redis_errors=api_metrics.get("ras_cache_errors_total", 0),
        rss_mib={
            name: [round(v) for v in (values[0], middle[name], end[name], max(values))] for name, values in rss.items()
        },
        consistency_checked=len(questions) * 2,
        mismatches=len(mismatches),
        repeated_asks=dict(repeated),
        total_s=time.monotonic() - began,
    )
    assert load.wrong == 0, "\n".join(load.problems)
    assert after.wrong == 0, "after the load: " + "\n".join(after.problems)
    # Under the load a starved process may find Redis too slow and go without the cache (fail-open, counted in
    # `outcomes`); once it is quiet, questions asked again are answered from it.
    assert repeated["hit"] > 0, "the cache answered the repeated questions"
    for name in rss:
        bound = middle[name] * GROWTH_FACTOR + GROWTH_SLACK_MIB
        assert end[name] <= bound, f"{name} RSS grew from {middle[name]:.0f} MiB mid-run to {end[name]:.0f} MiB"
    assert mismatches == [], mismatches[:10]
