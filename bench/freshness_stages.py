"""Where F1's and F2's latency goes: the stages between an event's produce call and the answer reflecting it.

Two sources, both outside the code measured:

- The consumer's `ras_consumer_record_age_seconds` histogram (consumer/metrics.py): per transaction, the age of its
  oldest record (since its Kafka timestamp, which the producer stamps at the send call) when the client handed the
  fetch over, when the transaction committed and when its eviction and publication were done. The difference
  between two stages of one transaction is the time it spent between them; read before and after the measured
  window, the quantiles come from the bucket counts (interpolated within a bucket, so they are approximate).
- The live-update positions channel (consumer/notify.py), which the consumer publishes after each transaction's
  eviction: this process subscribes to it and, for each sampled event, notes when the first message covering the
  event's offset arrived. So each sample splits exactly into produce call → publication seen → answer.
"""

from __future__ import annotations

import asyncio
import bisect
import math
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import orjson
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis
from redis.asyncio.client import PubSub

from infra.cache_keys import CacheLayout

AGE_METRIC = "ras_consumer_record_age_seconds"
STAGES = ("fetched", "committed", "announced")


def age_buckets(exposition: str) -> dict[str, list[tuple[float, float]]]:
    """Per stage, the cumulative (upper bound, count) buckets of the consumer's record-age histogram."""
    out: dict[str, list[tuple[float, float]]] = {}
    for family in text_string_to_metric_families(exposition):
        if family.name != AGE_METRIC:
            continue
        for sample in family.samples:
            if sample.name == f"{AGE_METRIC}_bucket":
                out.setdefault(sample.labels["stage"], []).append((float(sample.labels["le"]), float(sample.value)))
    return {stage: sorted(buckets) for stage, buckets in out.items()}


def bucket_quantile(before: Sequence[tuple[float, float]], after: Sequence[tuple[float, float]], q: float) -> float:
    """The q-quantile (0–1) of what was observed between two scrapes of one histogram, interpolated linearly
    within its bucket; NaN when nothing was."""
    counts = dict(before)
    deltas = [(bound, count - counts.get(bound, 0.0)) for bound, count in after]
    total = deltas[-1][1] if deltas else 0.0
    if total <= 0:
        return math.nan
    rank = q * total
    lower, below = 0.0, 0.0
    for bound, cumulative in deltas:
        if cumulative >= rank:
            if math.isinf(bound):
                return lower
            share = (rank - below) / (cumulative - below) if cumulative > below else 1.0
            return lower + (bound - lower) * share
        lower, below = bound, cumulative
    return lower


@dataclass
class PositionsListener:
    """Arrival times of the consumer's positions messages, to find when each sampled event was announced."""

    redis_url: str
    cache_prefix: str
    arrivals: list[float] = field(default_factory=list)  # perf_counter at arrival, ascending
    positions: list[dict[tuple[str, int], int]] = field(default_factory=list)
    _task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        redis = Redis.from_url(self.redis_url)
        pubsub = redis.pubsub()
        await pubsub.subscribe(CacheLayout(self.cache_prefix).positions_channel)
        self._task = asyncio.create_task(self._listen(redis, pubsub))

    async def _listen(self, redis: Redis, pubsub: PubSub) -> None:
        try:
            async for message in pubsub.listen():
                if message["type"] != "message":
                    continue
                body = orjson.loads(message["data"])
                self.arrivals.append(time.perf_counter())
                self.positions.append({(t, p): n for t, p, n in body.get("positions", [])})
        finally:
            await pubsub.aclose()  # type: ignore[no-untyped-call]
            await redis.aclose()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def announced(self, produced_at: float, topic: str, partition: int, offset: int) -> float | None:
        """When the first message committing past `offset` of that partition arrived after `produced_at`."""
        for i in range(bisect.bisect_left(self.arrivals, produced_at), len(self.arrivals)):
            if self.positions[i].get((topic, partition), -1) > offset:
                return self.arrivals[i]
        return None


def percentile(values: Sequence[float], q: int) -> float:
    if len(values) < 2:
        return values[0] if values else float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def sample_stages(
    latencies: Sequence[tuple[float, float]],
    acks: dict[float, tuple[float, str, int, int]],
    announced: PositionsListener,
    answer: str = "answer",
) -> str:
    """Each sample (produced at, latency) split at the broker's acknowledgement (`acks`: produced at → (acked at,
    topic, partition, offset)) and at the arrival of the positions message announcing it; `answer` names what ends
    a sample (an answer polled for, or a push)."""
    to_ack, to_announced, to_answer = [], [], []
    for at, latency in latencies:
        if at not in acks:
            continue
        acked, topic, partition, offset = acks[at]
        to_ack.append((acked - at) * 1000)
        seen = announced.announced(at, topic, partition, offset)
        if seen is not None:
            to_announced.append((seen - at) * 1000)
            to_answer.append((at + latency - seen) * 1000)
    parts = [
        ("produce call → broker ack", to_ack),
        ("produce call → positions message seen (committed, evicted, published)", to_announced),
        (f"positions message → {answer} reflecting it", to_answer),
    ]
    spans = "; ".join(f"{what} p50 {percentile(v, 50):.1f} / p99 {percentile(v, 99):.1f} ms" for what, v in parts)
    return f"stages per sample: {spans}"


def transaction_stages(before: str, after: str) -> str:
    """The consumer's record-age histogram over the window: per transaction, its oldest record's age per stage."""
    was, now = age_buckets(before), age_buckets(after)
    spans = []
    for stage in STAGES:
        if stage in now:
            cuts = [bucket_quantile(was.get(stage, []), now[stage], q) * 1000 for q in (0.5, 0.99)]
            spans.append(f"{stage} p50 {cuts[0]:.1f} / p99 {cuts[1]:.1f} ms")
    return "stages per transaction, age of its oldest record since produced: " + "; ".join(spans)
