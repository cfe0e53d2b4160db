"""Many instances, one answer: three `ras consume` and three `ras serve` processes against 12-partition topics.

Two consumers start the group; a third joins while events flow, one of the first two is SIGKILLed mid-stream and a
fourth is started in its place. Clients ask the three API instances round-robin all the while, so the shared cache
fills with answers that every commit must evict, and each instance holds `batchProgress` subscriptions.

Once every partition has been read to its end and the last commit's eviction is announced:
- every question asked during the stream, asked again on every instance (twice: the second may be a hit), gets the
  answer the tables give now: no cache entry outlived its eviction, whichever instance wrote it and whichever
  consumer (the killed one included) committed the change;
- every subscription on every instance has received the batch's final state;
- nothing is quarantined or stored twice, and the tables equal a clean single-consumer application of the same events
  in event order, row for row (`check_tables`).
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from consumer.pure.topics import ALL_TOPICS
from devstack.demo import Message
from tests.app.live.conftest import BATCH_PROGRESS, GraphQLWs, ws_client
from tests.helpers import figures
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
    cache_status,
    check_tables,
    committed,
    duplicate_keys,
    graphql,
    owned_broker,
    reference_api,
    stream,
    until,
    wait_for_announced,
    wait_for_ends,
)

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

EVENTS = 8_000
RATE = 250.0  # events/s: the stream lasts ~33 s, long enough for a join, a kill and a replacement inside it
PARTITIONS_PER_TOPIC = 12
PARTITIONS = PARTITIONS_PER_TOPIC * len(ALL_TOPICS)
USERS = [f"teacher-{i:02d}" for i in range(7)]  # stream()'s users
WATCHED = 3  # batches each API instance holds a subscription to
PROGRESS_QUERY = """
query Progress($id: ID!) { batch(id: $id) { id userId statusCode essayCount essays { totalCount } } }
"""
Question = tuple[str, dict[str, Any]]


class RoundRobin:
    """One client over several API instances, each request to the next one in turn, as a load balancer does."""

    def __init__(self, urls: Sequence[str]) -> None:
        self.clients = [httpx.AsyncClient(base_url=url, timeout=30) for url in urls]
        self._turn = 0

    async def ask(self, query: str, variables: Mapping[str, Any]) -> httpx.Response:
        client = self.clients[self._turn % len(self.clients)]
        self._turn += 1
        return await graphql(client, query, variables)

    async def aclose(self) -> None:
        for client in self.clients:
            await client.aclose()


@dataclass
class Asked:
    """The distinct questions asked during the stream, and how they were answered."""

    questions: dict[str, Question] = field(default_factory=dict)
    statuses: Counter[str] = field(default_factory=Counter)
    requests: int = 0


async def keep_asking(api: RoundRobin, producer: PacedProducer, messages: Sequence[Message], asked: Asked) -> None:
    """Ask about batches already sent (and users' lists), round-robin, until cancelled."""
    rng = random.Random(93)
    while True:
        ids = batch_ids(messages[: producer.sent])
        if ids and rng.random() < 0.8:
            question: Question = (BATCH_QUERY, {"id": rng.choice(ids)})
        else:
            question = (LIST_QUERY, {"userId": rng.choice(USERS), "first": 50})
        response = await api.ask(*question)
        assert response.status_code == 200, response.text
        asked.questions[json.dumps(question, sort_keys=True)] = question
        asked.statuses[str(cache_status(response.json()))] += 1
        asked.requests += 1
        await asyncio.sleep(0.01)


class Watcher:
    """Reads one WebSocket's `next` messages as they come and keeps the latest value of each subscription."""

    def __init__(self, ws: GraphQLWs) -> None:
        self.ws = ws
        self.latest: dict[str, Any] = {}
        self.updates = 0
        self.problems: list[dict[str, Any]] = []

    async def run(self) -> None:
        while True:
            message = await self.ws.receive(timeout=3600)
            if message.get("type") == "next":
                self.latest[str(message["id"])] = message["payload"]["data"]["batchProgress"]
                self.updates += 1
            else:
                self.problems.append(message)


def closing_round(messages: Sequence[Message]) -> list[tuple[Message, int]]:
    """A re-send of each topic's last event to every partition of that topic.

    Sent once the group is final, it makes a live member commit, evict and announce on every partition again: a
    partition whose last commit was the killed member's would otherwise never announce its end."""
    last = {m.topic: m for m in messages}
    return [(m.resent(timedelta(seconds=1)), p) for m in last.values() for p in range(PARTITIONS_PER_TOPIC)]


def split(members: Sequence[Consumer]) -> list[int]:
    """Each member's partitions in its latest assignment (0 if none yet)."""
    return [(m.assignments() or [0])[-1] for m in members]


async def test_three_consumers_and_three_apis_give_the_single_consumer_answer(
    engine: AsyncEngine, database_url: str, redis_url: str, tmp_path: Path
) -> None:
    scenario = "many instances"
    began = time.monotonic()
    messages = stream(EVENTS, seed=91)
    closing = closing_round(messages)
    watched = batch_ids(messages)[-WATCHED:]  # among the last to change, so their updates come late in the stream
    async with owned_broker(PARTITIONS_PER_TOPIC) as broker:
        wiring = Wiring(database_url, broker.bootstrap).with_cache(redis_url)
        group = f"many-{random.Random(91).getrandbits(32):08x}"

        started: list[Consumer] = []  # every member ever started, the killed one included, for the clean-up

        def member(name: str) -> Consumer:
            started.append(Consumer(wiring, tmp_path / f"consume-{name}.log", group=group, max_batch_records=500))
            return started[-1]

        apis = [Api(wiring, tmp_path / f"serve-{i}.log") for i in range(3)]
        members = [member("a"), member("b")]
        round_robin = RoundRobin([api.url for api in apis])
        asked = Asked()
        tasks: list[asyncio.Task[None]] = []
        try:
            async with AsyncExitStack() as stack:
                announced = await stack.enter_async_context(announcements(wiring, redis_url))
                watchers = []
                for api in apis:
                    await api.ready()
                    ws = await stack.enter_async_context(ws_client(api.url.replace("http", "ws") + "/graphql", AUTH))
                    for batch in watched:
                        await ws.subscribe(batch, BATCH_PROGRESS, {"id": batch})
                        assert (await ws.next_payload(batch))["data"]["batchProgress"] is None, "not sent yet"
                    watchers.append(Watcher(ws))
                tasks += [asyncio.create_task(w.run()) for w in watchers]

                async with PacedProducer(broker.bootstrap) as producer:
                    sending = asyncio.create_task(producer.paced(messages, rate=RATE))
                    tasks.append(asyncio.create_task(keep_asking(round_robin, producer, messages, asked)))
                    joined = await until(
                        "a and b share the partitions",
                        lambda: sum(split(members)) == PARTITIONS and all(split(members)),
                        90,
                    )

                    # A third member joins once the stream is being applied.
                    await until("a sixth of the stream sent", lambda: producer.sent >= len(messages) // 6, 120)
                    members.append(member("c"))
                    three = await until(
                        "three members share the partitions",
                        lambda: sum(split(members)) == PARTITIONS and all(split(members)),
                        120,
                    )
                    split_of_three = split(members)

                    # Mid-stream, one of the first two is killed and a fourth takes its place.
                    await until("half the stream sent", lambda: producer.sent >= len(messages) // 2, 120)
                    victim = members.pop(random.Random(92).randrange(2))
                    assert victim.alive() and split([victim])[0] > 0, "the victim owned partitions"
                    rejoins_before = [len(m.assignments()) for m in members]
                    victim.kill()
                    killed = time.monotonic()
                    committed_at_kill, sent_at_kill = await committed(engine), producer.sent
                    assert not sending.done(), "the kill lands inside the stream"
                    members.append(member("d"))

                    def replaced() -> bool:
                        counts = split(members)
                        moved = all(len(m.assignments()) > n for m, n in zip(members, rejoins_before, strict=False))
                        return moved and sum(counts) == PARTITIONS and all(counts)

                    takeover = await until("b/c and the new member share every partition", replaced, 120)
                    split_final = split(members)
                    rate = await sending
                    await producer.send_to(closing)
                    positions = await wait_for_ends(engine, producer.ends, 240, *members)
                    caught_up = time.monotonic() - killed
                    ends = dict(producer.ends)
                assert positions == ends, "every partition ends exactly at its produced end"
                tasks[-1].cancel()  # the round-robin asking
                await wait_for_announced(announced, ends, 120)  # the last commit's eviction is done

                mismatches, final_statuses = await ask_everything_everywhere(engine, round_robin, asked)
                subscribed_s = await wait_for_final_state(engine, watchers, watched)
                problems = [p for w in watchers for p in w.problems]
                assert problems == [], problems[:3]
            for consumer in members:
                assert await consumer.stop() == 0, "graceful stop on SIGTERM"
            for api in apis:
                await api.stop()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await round_robin.aclose()
            for consumer in started:
                consumer.kill()
            for api in apis:
                api.kill()
    assert mismatches == [], mismatches[:10]
    assert await duplicate_keys(engine) == 0
    counts = await check_tables(engine, [*messages, *(m for m, _ in closing)])
    figures.report(
        scenario,
        events=len(messages),
        partitions=PARTITIONS,
        produce_rate=round(rate),
        joined_s=joined,
        third_joined_s=three,
        split_of_three=split_of_three,
        sent_at_kill=sent_at_kill,
        committed_at_kill=committed_at_kill,
        takeover_s=takeover,
        split_after=split_final,
        caught_up_after_kill_s=caught_up,
        requests_during=asked.requests,
        statuses_during=dict(asked.statuses),
        questions=len(asked.questions),
        final_asks=sum(final_statuses.values()),
        final_statuses=dict(final_statuses),
        stale=len(mismatches),
        subscription_updates=[w.updates for w in watchers],
        final_state_s=subscribed_s,
        rows=counts,
        total_s=time.monotonic() - began,
    )


async def ask_everything_everywhere(
    engine: AsyncEngine, round_robin: RoundRobin, asked: Asked
) -> tuple[list[str], Counter[str]]:
    """Every question asked during the stream, twice on every instance, against what the tables say now."""
    mismatches = []
    statuses: Counter[str] = Counter()
    async with reference_api(engine) as reference:
        for query, variables in asked.questions.values():
            truth = (await graphql(reference, query, variables)).json()
            for _ in range(2):
                for instance, client in enumerate(round_robin.clients):
                    answer = (await graphql(client, query, variables)).json()
                    statuses[str(cache_status(answer))] += 1
                    if answer.get("data") != truth["data"]:
                        mismatches.append(f"instance {instance} {variables}: {cache_status(answer)}")
    return mismatches, statuses


async def wait_for_final_state(engine: AsyncEngine, watchers: Sequence[Watcher], watched: Sequence[str]) -> float:
    """Until every subscription on every instance has received its batch as the tables hold it now."""
    async with reference_api(engine) as reference:
        final = {b: (await graphql(reference, PROGRESS_QUERY, {"id": b})).json()["data"]["batch"] for b in watched}
    assert all(final.values()), "the watched batches exist"
    return await until(
        "every subscription received its batch's final state",
        lambda: all(w.latest.get(b) == final[b] for w in watchers for b in watched),
        60,
    )
