"""F1 freshness: from an event's produce call to the first GraphQL answer that reflects it, at 1,000 events/s.

The deployed shape: `ras consume` and `ras serve` (cache on, sharing Redis, so every answer below goes through the
cache and depends on the consumer's evictions) run as subprocesses against a fresh broker and database. This
process produces batch lives (both generations, 25 essays, ~55 events each) at a steady 1,000 events/s, paced in
10 ms ticks, for `ctx.repetitions` windows of WINDOW_SECONDS (one repetition per window).

Sampled events: batch registrations (answer: `batch(id)` is no longer null) and the spellcheck result of each
batch's 13th essay (answer: `essay(id).spellcheck.statusCode` is there) — about one event in 28, of which those
produced while fewer than WATCHERS (2) are being watched. A watcher started at the produce call asks the API every
POLL_SECONDS until the answer reflects the event; the latency is produce call → that answer's arrival. A poll
before the event is applied is answered from the cache (an entry the consumer must evict when it applies the
event), so the figure includes eviction, not just the projection. Measurement resolution: the poll interval (2 ms)
plus one request (reported).

Reported per window: p50 and p99 latency and the event rate achieved; target p99 < 100 ms. Also noted, to explain
the figure: the stages (bench/freshness_stages.py: per sample, the broker's acknowledgement and the consumer's
positions message; per transaction, the consumer's record-age histogram at fetched, committed and announced), the
consumer's transactions (rate, size, time; from its /metrics), the API's polls (cache share, server time) and each
process's CPU. `measure` is shared with F2 (bench/f2_freshness.py), which adds readers. The consumer's fetch timeout
(RAS_KAFKA_FETCH_TIMEOUT_MS) is left at its default: at this rate a fetch finds records waiting and returns at once
(0.6 ms mean, measured), so the timeout never runs out.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import orjson
import psutil
from aiokafka import AIOKafkaProducer
from aiokafka.structs import RecordMetadata
from websockets.asyncio.client import ClientConnection, connect
from websockets.typing import Subprotocol

from bench.common import Context, Result
from bench.cpu import cpu_seconds
from bench.data import HEADERS, server_env
from bench.freshness_stages import PositionsListener, percentile, sample_stages, transaction_stages
from bench.r1_cached import QUERY as SCREEN_QUERY
from bench.r1_cached import Load, LoadGenerator
from consumer.pure import topics
from devstack.demo import Message, batch_life
from devstack.process import free_port

NAME = "F1"
TITLE = "freshness: produce call → GraphQL answer reflecting the event, at 1,000 events/s"

RATE = 1_000  # events/s
TICK = 0.01  # s: RATE * TICK events per tick
WINDOW_SECONDS = 8.0
POLL_SECONDS = 0.002
# Samples watched at once. Each watcher polls every 2 ms; more of them at once (a sample every ~28 events is ~10
# in flight) flood a 2-core machine with ~5,000 polls/s, and then they measure their own queueing. A sampled event
# produced while WATCHERS are busy is skipped; the stream is steady, so which events get watched is unbiased.
WATCHERS = 2
ESSAYS = 25
WATCHED_ESSAY = 12  # index of the essay whose spellcheck result is sampled
READY_TIMEOUT = 90.0
SAMPLE_TIMEOUT = 30.0  # a sample not reflected by then fails the run

BATCH_QUERY = "query($id: ID!) { batch(id: $id) { id } }"
ESSAY_QUERY = "query($id: ID!) { essay(id: $id) { spellcheck { statusCode } } }"
LIVE_QUERY = (
    "subscription($id: ID!) { batchProgress(batchId: $id) "
    f"{{ id essays(first: {ESSAYS}) {{ nodes {{ id spellcheck {{ statusCode }} }} }} }} }}"
)


@dataclass(frozen=True)
class Sample:
    message: Message
    query: str
    entity_id: str
    batch_id: str

    def reflected(self, data: dict[str, object]) -> bool:
        if self.query is BATCH_QUERY:
            return data.get("batch") is not None
        essay = data.get("essay")
        return isinstance(essay, dict) and essay.get("spellcheck") is not None

    def pushed(self, batch: dict[str, Any] | None) -> bool:
        """Whether a value of LIVE_QUERY's subscription (the sample's batch) reflects the event."""
        if batch is None or self.query is BATCH_QUERY:
            return batch is not None
        return any(e["id"] == self.entity_id and e["spellcheck"] for e in batch["essays"]["nodes"])


def batches(rng: random.Random, count: int, start: datetime) -> list[tuple[Message, Sample | None]]:
    """`count` batch lives back to back, each message with its sample (registration, one spellcheck) or None."""
    out: list[tuple[Message, Sample | None]] = []
    for i in range(count):
        gen = "gen1" if i % 3 == 0 else "gen2"
        life = batch_life(rng, gen, f"teacher-f1-{i % 40:02d}", ESSAYS, 0.04, start + timedelta(minutes=i))
        batch_id = life[0].key.decode()
        spellchecks = [m for m in life if m.topic in (topics.ESSAY_SPELLCHECK_COMPLETED, topics.SPELLCHECK_RESULTS)]
        watched = spellchecks[WATCHED_ESSAY] if len(spellchecks) > WATCHED_ESSAY else None
        for message in life:
            sample = None
            if message is life[0]:
                sample = Sample(message, BATCH_QUERY, batch_id, batch_id)
            elif message is watched:
                sample = Sample(message, ESSAY_QUERY, message.key.decode(), batch_id)
            out.append((message, sample))
    return out


class Watcher:
    """Polls the API for samples; one task per sample, sharing keep-alive connections. `watching` is told the
    samples being watched whenever a watch begins or ends, unless none is left."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        live: LiveWatcher | None = None,
        watching: Callable[[list[Sample]], None] | None = None,
    ) -> None:
        self._client = client
        self._live = live
        self._watching = watching
        self._failure: BaseException | None = None
        self.refused = 0  # polls the API refused at its execution limit (retryable), polled again
        self._watched: dict[asyncio.Task[None], Sample] = {}
        self.latencies: list[tuple[float, float]] = []  # (produced at, latency)
        # produced at → (the broker's acknowledgement, topic, partition, offset), for the stage split
        self.acks: dict[float, tuple[float, str, int, int]] = {}
        self.round_trips: list[float] = []
        self.skipped = 0
        self._tasks: set[asyncio.Task[None]] = set()

    def watch(self, sample: Sample, produced_at: float) -> None:
        if len(self._tasks) >= WATCHERS:
            self.skipped += 1
            return
        task = asyncio.create_task(self._watch(sample, produced_at))
        self._tasks.add(task)
        self._watched[task] = sample
        task.add_done_callback(self._done)
        self._tell()
        if self._live is not None:
            self._live.watch(sample, produced_at)

    def _done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None and self._failure is None:
            self._failure = task.exception()
        self._tasks.discard(task)
        self._watched.pop(task, None)
        self._tell()

    def _tell(self) -> None:
        if self._watching is not None and self._watched:
            self._watching(list(self._watched.values()))

    async def _watch(self, sample: Sample, produced_at: float) -> None:
        body = orjson.dumps({"query": sample.query, "variables": {"id": sample.entity_id}})
        while True:
            sent = time.perf_counter()
            response = await self._client.post("/graphql", content=body, headers=HEADERS)
            arrived = time.perf_counter()
            self.round_trips.append(arrived - sent)
            answer = orjson.loads(response.content)
            if response.status_code == 503 and "Retry-After" in response.headers:
                self.refused += 1  # the execution limit (app/admission.py): a screen asks again
            elif response.status_code != 200 or "errors" in answer:
                raise RuntimeError(f"F1 poll failed: {response.status_code} {response.text[:300]}")
            elif sample.reflected(answer["data"]):
                self.latencies.append((produced_at, arrived - produced_at))
                return
            if arrived - produced_at > SAMPLE_TIMEOUT:
                raise RuntimeError(f"F1: {sample.query.split('{')[1].strip()} {sample.entity_id} never appeared")
            await asyncio.sleep(POLL_SECONDS)

    def acked(self, produced_at: float, ack: asyncio.Future[RecordMetadata]) -> None:
        if not ack.cancelled() and ack.exception() is None:
            meta = ack.result()
            self.acks[produced_at] = (time.perf_counter(), meta.topic, meta.partition, meta.offset)

    async def drain(self) -> None:
        while self._tasks:
            await asyncio.gather(*list(self._tasks))
        if self._failure is not None:
            raise self._failure


class LiveWatcher:
    """Watches the same samples as a teacher's open screen learns of a change: through the API's live updates, no
    polling. One WebSocket connection (graphql-transport-ws), a `batchProgress` subscription per sample on the
    sample's batch, ended once a pushed value reflects the event; the latency is produce call → that push."""

    def __init__(self, url: str) -> None:
        self._url = url
        self.latencies: list[tuple[float, float]] = []  # (produced at, latency)
        self._watching: dict[str, tuple[Sample, float]] = {}
        self._ids = itertools.count()
        self._socket: ClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._sends: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._socket = socket = await connect(self._url, subprotocols=[Subprotocol("graphql-transport-ws")])
        await socket.send(orjson.dumps({"type": "connection_init", "payload": HEADERS}).decode())
        ack = orjson.loads(await socket.recv())
        if ack.get("type") != "connection_ack":
            raise RuntimeError(f"F1: the live-update connection was refused: {ack}")
        self._reader = asyncio.create_task(self._read(socket))

    def watch(self, sample: Sample, produced_at: float) -> None:
        key = str(next(self._ids))
        self._watching[key] = (sample, produced_at)
        payload = {"query": LIVE_QUERY, "variables": {"id": sample.batch_id}}
        self._send({"id": key, "type": "subscribe", "payload": payload})

    def _send(self, message: dict[str, object]) -> None:
        if self._socket is not None:
            task = asyncio.create_task(self._socket.send(orjson.dumps(message).decode()))
            self._sends.add(task)
            task.add_done_callback(self._sends.discard)

    async def _read(self, socket: ClientConnection) -> None:
        async for text in socket:
            arrived = time.perf_counter()
            message = orjson.loads(text)
            if message.get("type") == "ping":
                self._send({"type": "pong"})
            key = message.get("id")
            if key not in self._watching:
                continue
            sample, produced_at = self._watching[key]
            if message.get("type") != "next" or message["payload"].get("errors"):
                raise RuntimeError(f"F1: a subscription failed: {str(message)[:300]}")
            if sample.pushed(message["payload"]["data"]["batchProgress"]):
                self.latencies.append((produced_at, arrived - produced_at))
                del self._watching[key]
                self._send({"id": key, "type": "complete"})

    async def drain(self) -> None:
        async with asyncio.timeout(SAMPLE_TIMEOUT):
            while self._watching:
                if self._reader is None or self._reader.done():
                    raise RuntimeError(f"F1: the live-update connection ended: {self._reader}")
                await asyncio.sleep(0.01)

    async def stop(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        if self._socket is not None:
            await self._socket.close()


async def _produce(
    producer: AIOKafkaProducer, stream: Sequence[tuple[Message, Sample | None]], watcher: Watcher | None
) -> tuple[float, float]:
    """Send `stream` paced at RATE; start a watcher per sample at its produce call. (first send, last send) times."""
    per_tick = max(1, round(RATE * TICK))
    started = time.perf_counter()
    last = started
    for i in range(0, len(stream), per_tick):
        due = started + (i // per_tick) * TICK
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        for message, sample in stream[i : i + per_tick]:
            produced_at = time.perf_counter()
            acked = await producer.send(message.topic, message.value, key=message.key)
            if sample is not None and watcher is not None:
                watcher.watch(sample, produced_at)
                acked.add_done_callback(partial(watcher.acked, produced_at))
        last = time.perf_counter()
    await producer.flush()
    return started, last


_METRICS = (
    "ras_consumer_transactions_total",
    "ras_consumer_transaction_seconds_sum",
    "ras_consumer_transaction_records_sum",
    'ras_api_request_duration_seconds_sum{endpoint="graphql",operation="anonymous"}',
    'ras_api_request_duration_seconds_count{endpoint="graphql",operation="anonymous"}',
    'ras_cache_requests_total{result="hit"}',
    'ras_cache_requests_total{result="miss"}',
    'ras_cache_requests_total{result="coalesced"}',
    'ras_cache_requests_total{result="bypass"}',
)


def _metrics(*texts: str) -> dict[str, float]:
    """The consumer's transaction counters and the API's request times, to explain the latency."""
    values = {}
    for text in texts:
        for line in text.splitlines():
            name, _, value = line.rpartition(" ")
            if name in _METRICS:
                values[name] = float(value)
    return values


def _cpu(pids: Sequence[int]) -> list[float]:
    """CPU seconds (user + system) used so far by each process."""
    return [cpu_seconds(psutil.Process(pid)) for pid in pids]


async def _wait_visible(client: httpx.AsyncClient, sample: Sample, procs: Sequence[asyncio.subprocess.Process]) -> None:
    body = orjson.dumps({"query": sample.query, "variables": {"id": sample.entity_id}})
    async with asyncio.timeout(READY_TIMEOUT):
        while True:
            for proc in procs:
                if proc.returncode is not None:
                    raise RuntimeError(f"a ras process exited with {proc.returncode} before F1 began")
            try:
                response = await client.post("/graphql", content=body, headers=HEADERS)
                if response.status_code == 200 and sample.reflected(orjson.loads(response.content)["data"]):
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.05)


async def run(ctx: Context) -> Result:
    return await measure(ctx, Result(NAME, TITLE), readers=0)


@dataclass
class Measured:
    """What one freshness run observed, for `_report`."""

    watcher: Watcher
    live: LiveWatcher
    announced: PositionsListener
    events: int
    first: float
    last: float
    before: str  # the consumer's and the API's /metrics before the stream …
    after: str  # … and after it
    cpu: list[float]
    readers: Load | None


async def measure(ctx: Context, result: Result, readers: int) -> Result:
    """Run the freshness measurement into `result`, with `readers` closed-loop readers (R1's load generator) running
    against the same API meanwhile (none for F1), asking for the batch screens of the samples being watched."""
    url = await ctx.servers.fresh_database()
    redis_url = await ctx.servers.redis_url()
    rng = random.Random(99)
    start = datetime.now(UTC).replace(microsecond=0)
    windows = ctx.repetitions
    per_window = int(RATE * WINDOW_SECONDS)
    stream = batches(rng, per_window * windows // 50 + 2, start)
    warmup, stream = stream[:60], stream[60 : 60 + per_window * windows]
    port = free_port()
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    env = {
        **server_env(url, redis_url, port, prefix),
        "RAS_KAFKA_GROUP_ID": f"bench-f1-{uuid.uuid4().hex[:8]}",
        "RAS_CONSUMER_METRICS_PORT": str(free_port()),
        "RAS_METRICS_PORT": str(free_port()),
    }
    name = result.scenario
    async with ctx.servers.broker() as bootstrap:
        env["RAS_KAFKA_BOOTSTRAP_SERVERS"] = bootstrap
        with tempfile.TemporaryDirectory(prefix="ras-bench-f1-") as tmp:
            procs = []
            for command in ("consume", "serve"):
                with (Path(tmp) / f"{command}.log").open("wb") as out:
                    procs.append(
                        await asyncio.create_subprocess_exec(
                            sys.executable,
                            "-m",
                            "ras.cli",
                            command,
                            env=env,
                            stdin=subprocess.DEVNULL,
                            stdout=out,
                            stderr=out,
                        )
                    )
            producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
            limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
            announced = PositionsListener(redis_url, prefix)
            try:
                await producer.start()
                # A poll waits as long as a sample may take (F2's readers can hold the API up for seconds).
                base = f"http://127.0.0.1:{port}"
                async with httpx.AsyncClient(base_url=base, timeout=SAMPLE_TIMEOUT, limits=limits) as client:
                    # Warm-up: one batch life, then wait until the API shows it (process starts and group join).
                    ready_at = time.perf_counter()
                    await _produce(producer, warmup, None)
                    last_sample = next(s for _, s in reversed(warmup) if s is not None)
                    await _wait_visible(client, last_sample, procs)
                    ctx.log(f"{name}: consumer and API up, warm-up visible after {time.perf_counter() - ready_at:.1f}s")
                    consumer_url = f"http://127.0.0.1:{env['RAS_CONSUMER_METRICS_PORT']}/metrics"
                    api_url = f"http://127.0.0.1:{env['RAS_METRICS_PORT']}/metrics"
                    await announced.start()
                    load, watching = None, None
                    if readers:
                        ids = list(dict.fromkeys(s.batch_id for _, s in warmup + stream if s is not None))
                        generator = LoadGenerator(
                            port, [screen(i) for i in ids], HEADERS, Path(tmp), readers, follow=True
                        )
                        watching = partial(_read_watched, generator, {batch_id: i for i, batch_id in enumerate(ids)})
                        load = asyncio.create_task(generator.run("/graphql", len(stream) / RATE + 1))
                        await asyncio.sleep(0.5)  # the readers connected and busy before the stream starts
                    before = (await client.get(consumer_url)).text + (await client.get(api_url)).text
                    cpu_before = _cpu([p.pid for p in procs] + [os.getpid()])
                    live = LiveWatcher(f"ws://127.0.0.1:{port}/graphql")
                    await live.start()
                    watcher = Watcher(client, live, watching)
                    first, last = await _produce(producer, stream, watcher)
                    await watcher.drain()
                    await live.drain()
                    await live.stop()
                    after = (await client.get(consumer_url)).text + (await client.get(api_url)).text
                    cpu = [b - a for a, b in zip(cpu_before, _cpu([p.pid for p in procs] + [os.getpid()]), strict=True)]
                    loaded = await load if load is not None else None
            finally:
                await announced.stop()
                await producer.stop()
                for proc in procs:
                    if proc.returncode is None:
                        proc.terminate()
                for proc in procs:
                    try:
                        await asyncio.wait_for(proc.wait(), 30)
                    except TimeoutError:
                        proc.kill()
                        await proc.wait()
    await ctx.servers.drop_database(url)
    _report(ctx, result, Measured(watcher, live, announced, len(stream), first, last, before, after, cpu, loaded))
    return result


def _read_watched(generator: LoadGenerator, index: dict[str, int], watched: list[Sample]) -> None:
    """The readers ask for the screens of the batches being watched."""
    generator.show(sorted({index[sample.batch_id] for sample in watched}))


def screen(batch_id: str) -> bytes:
    """The gateway's batch screen (R1's query) of `batch_id`, as a request body."""
    return orjson.dumps({"query": SCREEN_QUERY, "variables": {"batchId": batch_id, "first": ESSAYS}})


def _windows(
    ctx: Context, name: str, m: Measured, latencies: Sequence[tuple[float, float]], kind: str
) -> tuple[list[float], list[float]]:
    """p50s and p99s (ms) of `latencies` (produced at, latency) per window of the stream, each logged."""
    p50s, p99s = [], []
    span = (m.last - m.first) / ctx.repetitions
    for w in range(ctx.repetitions):
        begin, end = m.first + w * span, m.first + (w + 1) * span
        window = [latency * 1000 for at, latency in latencies if begin <= at < end]
        p50s.append(percentile(window, 50))
        p99s.append(percentile(window, 99))
        ctx.log(
            f"{name} window {w + 1} ({kind}): {len(window)} samples, p50 {p50s[-1]:.1f} ms, p99 {p99s[-1]:.1f} ms, "
            f"max {max(window, default=float('nan')):.1f} ms"
        )
    return p50s, p99s


def _report(ctx: Context, result: Result, m: Measured) -> None:
    name, windows, watcher = result.scenario, ctx.repetitions, m.watcher
    span = (m.last - m.first) / windows
    rates = [m.events / windows / span] * windows
    p50s, p99s = _windows(ctx, name, m, watcher.latencies, "polled")
    live50s, live99s = _windows(ctx, name, m, m.live.latencies, "subscription")
    result.figure(f"{name} p50 produce → answer reflecting it", "ms", p50s, f"{len(watcher.latencies):,} samples")
    result.figure(f"{name} p99 produce → answer reflecting it", "ms", p99s)
    result.figure(f"{name} p50 produce → pushed update reflecting it (subscription)", "ms", live50s)
    result.figure(f"{name} p99 produce → pushed update reflecting it (subscription)", "ms", live99s)
    result.figure(f"{name} event rate achieved", "events/s", rates, f"{m.events:,} events")
    result.figure(
        f"{name} poll round trip (resolution: + 2 ms interval)", "ms", [statistics.median(watcher.round_trips) * 1000]
    )
    result.target(f"{name} p99 freshness", p99s, 100.0, at_most=True, unit="ms")
    result.notes.append(sample_stages(watcher.latencies, watcher.acks, m.announced))
    result.notes.append("subscription: " + sample_stages(m.live.latencies, watcher.acks, m.announced, "push"))
    result.notes.append(transaction_stages(m.before, m.after))
    delta = {key: value - _metrics(m.before).get(key, 0.0) for key, value in _metrics(m.after).items()}
    transactions = max(delta.get(_METRICS[0], 0.0), 1.0)
    seconds = m.last - m.first
    result.notes.append(
        f"consumer: {transactions / seconds:.1f} transactions/s, "
        f"{delta.get(_METRICS[2], 0.0) / transactions:.0f} records and "
        f"{delta.get(_METRICS[1], 0.0) / transactions * 1000:.1f} ms per transaction "
        f"(a fetch → commit cycle every {seconds / transactions * 1000:.1f} ms)"
    )
    polls = max(delta.get(_METRICS[4], 0.0), 1.0)
    cached = max(sum(delta.get(key, 0.0) for key in _METRICS[5:]), 1.0)
    result.notes.append(
        f"API: {polls:,.0f} polls, {delta.get(_METRICS[3], 0.0) / polls * 1000:.1f} ms mean in the server; "
        f"{delta.get(_METRICS[5], 0.0) / cached * 100:.0f} % of all {cached:,.0f} GraphQL answers from cache; "
        f"{watcher.refused:,} polls refused at the execution limit (asked again)"
    )
    if m.readers is not None:
        r = m.readers
        result.figure(f"{name} readers' batch screens", "req/s", [r.rate], f"{r.errors} errors")
        result.notes.append(f"readers: {r.rate:,.0f} req/s, p50 {r.p50_ms:.1f} ms, p99 {r.p99_ms:.1f} ms")
    names = ("consumer", "API", "bench")
    busy = ", ".join(f"{n} {secs / seconds * 100:.0f} %" for n, secs in zip(names, m.cpu, strict=True))
    result.notes.append(f"CPU while producing (of one core): {busy}")
    result.notes.append(
        f"{m.events / seconds:,.0f} events/s over {seconds:.1f} s; samples: batch registrations and one spellcheck "
        f"result per batch, at most {WATCHERS} at a time ({watcher.skipped:,} skipped), polled every "
        f"{POLL_SECONDS * 1000:g} ms through the cache"
    )
