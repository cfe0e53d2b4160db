"""W1 projection throughput, and M1 memory of the consumer.

The stream: 2,100 batches of 25 essays each through spellcheck and CJ assessment, both contract generations
(one batch in three is gen 1), some essays failing, 5 % outbox re-sends; batches start 30 s apart, so about
seventeen are in flight at any time and their events interleave on the topics (~122,000 events). It is produced
onto a fresh broker (4 partitions per topic) before anything is timed.

Each repetition runs the real `ras consume` as a subprocess against a fresh database and a fresh consumer group
and polls the positions table, which the projection writes in the same transaction as the rows: the stream is
consumed when every partition's stored position reaches the end offset. Reported per repetition:

- end to end: process start (imports, connections, group join included) → last position committed;
- group join: process start → the consumer's "partitions assigned" log line (Tansu takes seconds to form a group);
- apply phase: first committed position → last; its events/s is what the targets compare;
- capacity (bench/capacity.py): events per CPU-second of the consumer process (user + system) and of the
  PostgreSQL server (all its processes, when it runs on this machine) over the apply phase, and the read-model
  tables' size on disk per batch and per essay after the stream.

The final rows of every repetition must be identical (a fingerprint of the four read-model tables), so a faster
consumer cannot pass by writing something else.

Baselines, measured in the same run:
(a) `bench.baseline_per_event`: one event per transaction and an offset commit per event, as the original
    service did, over a 90-batch slice of the same kind of stream (~5,200 events; it is slow);
(b) PostgreSQL `COPY FROM` of the final rows W1 produced (dumped with `COPY TO` into memory) into empty tables of
    the same schema, indexes included; events/s equivalent = number of events / COPY time.

M1: peak RSS of the consumer process, sampled every 20 ms, for the whole stream and for streams of half and twice as
many batches: it must not grow with the event count (full / half and double / full at most 1.1×).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import math
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import asyncpg
import orjson
import psutil

from bench import baseline_per_event
from bench.capacity import (
    W1_APPLY_RATE,
    W1_EVENTS_PER_BATCH,
    W1_EVENTS_PER_CPU,
    W1_PG_BYTES_PER_BATCH,
    W1_PG_BYTES_PER_ESSAY,
    W1_PG_EVENTS_PER_CPU,
    per_cpu_second,
)
from bench.common import MIB, PARTITIONS, Context, PeakRss, Result, asyncpg_dsn, ratios
from bench.cpu import cpu_seconds, postgres_server, server_cpu_seconds
from bench.data import API_KEY
from devstack.demo import EPOCH, Message, batch_life, with_resends
from devstack.produce import Offsets
from devstack.produce import send_all as produce

NAME = "W1"
TITLE = "projection throughput (+ M1 consumer memory)"

BATCHES = 2_100
ESSAYS = 25
BASELINE_BATCHES = 90
RESEND_RATE = 0.05
FAIL_RATES = (0.0, 0.0, 0.1, 0.3)
READ_MODEL = {
    "batches": "batch_id",
    "batch_facts": "batch_id, kind, digest",
    "essays": "essay_id",
    "phase_results": "essay_id, phase",
}
CONSUME_TIMEOUT = 600.0


def stream(batches: int, seed: int = 2025) -> list[Message]:
    """`batches` batch lives, both generations, interleaved in event-time order, with outbox re-sends."""
    rng = random.Random(seed)
    messages: list[Message] = []
    for i in range(batches):
        gen = "gen1" if i % 3 == 0 else "gen2"
        start = EPOCH + timedelta(seconds=30 * i)
        messages += batch_life(rng, gen, f"teacher-{i % 60:02d}", ESSAYS, rng.choice(FAIL_RATES), start)
    return sorted(with_resends(rng, messages, RESEND_RATE), key=lambda m: m.at)


@dataclass
class ConsumerRun:
    events: int
    seconds: float  # process start → last position committed
    joined: float  # process start → partitions assigned (to the last process to get any)
    first_commit: float  # process start → first position committed
    first_events: int  # events covered by the first commit
    peak_rss: int  # the largest process's
    cpu_seconds: list[float]  # each process's user + system time, start → last position committed
    apply_cpu: float  # all processes' CPU time from the first position committed to the last
    postgres_apply_cpu: float  # the PostgreSQL server's (all its processes'), over the same span

    @property
    def apply_rate(self) -> float:
        return (self.events - self.first_events) / (self.seconds - self.first_commit)

    @property
    def end_to_end_rate(self) -> float:
        return self.events / self.seconds

    @property
    def events_per_cpu_second(self) -> float:
        return per_cpu_second(self.events - self.first_events, self.apply_cpu)

    @property
    def postgres_events_per_cpu_second(self) -> float:
        return per_cpu_second(self.events - self.first_events, self.postgres_apply_cpu)


def _assigned_at(log: Path) -> float | None:
    """Wall-clock time of the consumer's "partitions assigned" line (structlog JSON, ISO UTC stamp)."""
    for line in log.read_text(errors="replace").splitlines():
        with contextlib.suppress(orjson.JSONDecodeError):
            entry = orjson.loads(line)
            if isinstance(entry, dict) and entry.get("event") == "partitions assigned":
                return datetime.fromisoformat(entry["timestamp"]).timestamp()
    return None


async def _start_consumer(env: dict[str, str], log: Path) -> asyncio.subprocess.Process:
    with log.open("wb") as err:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "ras.cli",
            "consume",
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )


async def run_ras_consume(
    database_url: str, bootstrap: str, redis_url: str, ends: Offsets, processes: int = 1
) -> ConsumerRun:
    """Run `processes` × `ras consume` (as deployed: cache eviction on) in one new consumer group until the stored
    positions reach `ends`, then SIGTERM them."""
    env = {
        **os.environ,
        "RAS_DATABASE_URL": database_url,
        "RAS_ENVIRONMENT": "production",
        "RAS_INTERNAL_API_KEY": API_KEY,  # read (and checked in production) by every command, though unused here
        "RAS_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "RAS_REDIS_URL": redis_url,
        "RAS_KAFKA_GROUP_ID": f"bench-{uuid.uuid4().hex[:8]}",
        "RAS_LOG_LEVEL": "INFO",
        "RAS_CONSUMER_METRICS_PORT": "0",
    }
    total = sum(ends.values())
    poll = await asyncpg.connect(asyncpg_dsn(database_url))
    postmaster = await postgres_server(poll)
    with tempfile.TemporaryDirectory(prefix="ras-bench-") as tmp:
        logs = [Path(tmp) / f"consumer-{i}.log" for i in range(processes)]
        wall_start, started = time.time(), time.perf_counter()
        procs = [await _start_consumer(env, log) for log in logs]
        meters = [psutil.Process(proc.pid) for proc in procs]
        first: tuple[float, int, float, float] | None = None  # time, events, consumers' CPU, server's CPU
        try:
            with contextlib.ExitStack() as stack:
                rss = [stack.enter_context(PeakRss(proc.pid)) for proc in procs]
                async with asyncio.timeout(CONSUME_TIMEOUT):
                    while True:
                        rows = await poll.fetch("SELECT topic, partition, next_offset FROM consumer_positions")
                        now = time.perf_counter() - started
                        positions = {(r["topic"], r["partition"]): r["next_offset"] for r in rows}
                        if first is None and positions:
                            cpu = sum(cpu_seconds(m) for m in meters)
                            first = (now, sum(positions.values()), cpu, server_cpu_seconds(postmaster))
                        if all(positions.get(tp, 0) >= end for tp, end in ends.items()):
                            break
                        for proc, log in zip(procs, logs, strict=True):
                            if proc.returncode is not None:
                                tail = log.read_text()[-3000:]
                                raise RuntimeError(f"ras consume exited with {proc.returncode}:\n{tail}")
                        await asyncio.sleep(0.01)
                consumer_cpu = [cpu_seconds(m) for m in meters]
                server_cpu = server_cpu_seconds(postmaster)
        finally:
            for proc in procs:
                if proc.returncode is None:
                    proc.send_signal(signal.SIGTERM)
            for proc in procs:
                await asyncio.wait_for(proc.wait(), 30)
            await poll.close()
        assigned = [_assigned_at(log) for log in logs]
    assert first is not None
    joined = max((a - wall_start) if a is not None else math.nan for a in assigned)
    return ConsumerRun(
        events=total,
        seconds=now,
        joined=joined,
        first_commit=first[0],
        first_events=first[1],
        peak_rss=max(r.peak for r in rss),
        cpu_seconds=consumer_cpu,
        apply_cpu=sum(consumer_cpu) - first[2],
        postgres_apply_cpu=server_cpu - first[3],
    )


async def fingerprint(database_url: str) -> dict[str, tuple[int, str]]:
    """Row count and md5 of each read-model table's rows in key order: equal fingerprints, equal tables."""
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        out = {}
        for table, order in READ_MODEL.items():
            row = await conn.fetchrow(
                f"SELECT count(*) AS n, md5(coalesce(string_agg(t::text, E'\\n' ORDER BY {order}), '')) AS h"  # noqa: S608
                f" FROM {table} AS t"
            )
            out[table] = (row["n"], row["h"])
        quarantined = await conn.fetchval("SELECT count(*) FROM quarantine")
        if quarantined:
            raise RuntimeError(f"{quarantined} records were quarantined; the generated stream should be clean")
        return out
    finally:
        await conn.close()


async def read_model_bytes(database_url: str) -> int:
    """On-disk size of the read-model tables with their indexes and TOAST, as the stream left them (dead row
    versions of the upserts included: a live database carries them too until vacuum reuses the space)."""
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        sizes = [await conn.fetchval("SELECT pg_total_relation_size($1::regclass)", table) for table in READ_MODEL]
        return int(sum(sizes))
    finally:
        await conn.close()


async def dump_rows(database_url: str) -> dict[str, bytes]:
    """The read-model tables as binary COPY data, in memory."""
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        dumps = {}
        for table in READ_MODEL:
            buffer = io.BytesIO()
            await conn.copy_from_table(table, output=buffer, format="binary")
            dumps[table] = buffer.getvalue()
        return dumps
    finally:
        await conn.close()


async def copy_rows(database_url: str, dumps: dict[str, bytes]) -> float:
    """Seconds to COPY the dumped rows into the empty tables of `database_url`, in one committed transaction."""
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        started = time.perf_counter()
        async with conn.transaction():
            for table, data in dumps.items():
                await conn.copy_to_table(table, source=io.BytesIO(data), format="binary")
        return time.perf_counter() - started
    finally:
        await conn.close()


async def consume_stream(
    ctx: Context, messages: list[Message], label: str, partitions: int = PARTITIONS, processes: int = 1
) -> tuple[list[ConsumerRun], str]:
    """Produce `messages` onto a fresh broker (`partitions` per topic) once, then consume them `ctx.repetitions`
    times into fresh databases with `processes` × `ras consume` in one group.

    Returns the runs and the database of the last one (the caller drops it).
    """
    runs = []
    url = ""
    prints: dict[str, tuple[int, str]] | None = None
    async with ctx.servers.broker(partitions) as bootstrap:
        started = time.perf_counter()
        ends = await produce(bootstrap, messages)
        ctx.log(f"{label}: produced {sum(ends.values()):,} events in {time.perf_counter() - started:.1f}s")
        for rep in range(ctx.repetitions):
            url = await ctx.servers.fresh_database()
            run = await run_ras_consume(url, bootstrap, await ctx.servers.redis_url(), ends, processes)
            runs.append(run)
            cpu = " + ".join(f"{seconds:.1f}" for seconds in run.cpu_seconds)
            ctx.log(
                f"{label} #{rep + 1}: {run.seconds:.1f}s end to end, joined at {run.joined:.1f}s, first commit "
                f"at {run.first_commit:.1f}s; {run.apply_rate:,.0f} events/s applying, "
                f"peak RSS {run.peak_rss / MIB:.0f} MiB, consumer CPU {cpu} s"
            )
            current = await fingerprint(url)
            if prints is not None and current != prints:
                raise RuntimeError(f"{label}: repetition {rep + 1} wrote different rows: {current} != {prints}")
            prints = current
            if rep < ctx.repetitions - 1:
                await ctx.servers.drop_database(url)
    return runs, url


async def run(ctx: Context) -> Result:
    result = Result(NAME, TITLE)

    messages = stream(BATCHES)
    full, final_rows = await consume_stream(ctx, messages, "W1 full stream")
    events = full[0].events
    counts = await fingerprint(final_rows)
    stored = await read_model_bytes(final_rows)
    dumps = await dump_rows(final_rows)
    await ctx.servers.drop_database(final_rows)
    result.notes.append(
        f"{BATCHES:,} batches × {ESSAYS} essays, {events:,} events → "
        + ", ".join(f"{n:,} {table}" for table, (n, _) in counts.items())
    )

    half, half_rows = await consume_stream(ctx, stream(BATCHES // 2), "M1 half stream")
    await ctx.servers.drop_database(half_rows)
    double, double_rows = await consume_stream(ctx, stream(BATCHES * 2), "M1 double stream")
    await ctx.servers.drop_database(double_rows)

    # (a) the per-event consumer, on a slice of the same kind of stream.
    baseline_messages = stream(BASELINE_BATCHES, seed=7)
    per_event = []
    async with ctx.servers.broker() as bootstrap:
        ends = await produce(bootstrap, baseline_messages)
        for rep in range(ctx.repetitions):
            url = await ctx.servers.fresh_database()
            pe = await baseline_per_event.consume(url, bootstrap, sum(ends.values()))
            per_event.append(pe)
            ctx.log(f"(a) per-event #{rep + 1}: {pe.events:,} events, {pe.apply_rate:,.0f} events/s")
            await ctx.servers.drop_database(url)

    # (b) COPY of the same final rows into empty tables of the same schema.
    copy_seconds = []
    for rep in range(ctx.repetitions):
        url = await ctx.servers.fresh_database()
        copy_seconds.append(await copy_rows(url, dumps))
        ctx.log(f"(b) COPY #{rep + 1}: {copy_seconds[-1]:.2f}s")
        await ctx.servers.drop_database(url)

    apply_rates = [r.apply_rate for r in full]
    per_event_rates = [r.apply_rate for r in per_event]
    copy_rates = [events / s for s in copy_seconds]
    result.figure(W1_APPLY_RATE, "events/s", apply_rates)
    result.figure(
        "W1 events/s, end to end (process start → last commit)", "events/s", [r.end_to_end_rate for r in full]
    )
    result.figure("W1 end to end", "s", [r.seconds for r in full])
    result.figure(W1_EVENTS_PER_CPU, "events/CPU-s", [r.events_per_cpu_second for r in full], "consumer user + system")
    result.figure(
        W1_PG_EVENTS_PER_CPU,
        "events/CPU-s",
        [r.postgres_events_per_cpu_second for r in full],
        "every process of the server (NaN when it is not on this machine)",
    )
    batches, essays = counts["batches"][0], counts["essays"][0]
    result.figure(W1_EVENTS_PER_BATCH, "events", [events / batches])
    result.figure(W1_PG_BYTES_PER_BATCH, "B", [stored / batches], f"{stored / MIB:,.0f} MiB for {batches:,} batches")
    result.figure(W1_PG_BYTES_PER_ESSAY, "B", [stored / essays], f"{essays:,} essays")
    result.figure("W1 group join (process start → partitions assigned)", "s", [r.joined for r in full])
    result.figure("W1 first commit (process start → first position)", "s", [r.first_commit for r in full])
    result.figure("(a) per-event consumer", "events/s", per_event_rates, f"{per_event[0].events:,} events")
    result.figure("(b) COPY of the final rows", "events/s", copy_rates, "events / COPY seconds")
    result.figure("(b) COPY time", "s", copy_seconds)
    result.figure("M1 consumer peak RSS, full stream", "MiB", [r.peak_rss / MIB for r in full], f"{events:,} events")
    result.figure(
        "M1 consumer peak RSS, half stream", "MiB", [r.peak_rss / MIB for r in half], f"{half[0].events:,} events"
    )
    result.figure(
        "M1 consumer peak RSS, double stream",
        "MiB",
        [r.peak_rss / MIB for r in double],
        f"{double[0].events:,} events",
    )
    result.target("W1 / (a) per-event consumer", ratios(apply_rates, per_event_rates), 20.0)
    result.target("W1 / (b) COPY of the same rows", ratios(apply_rates, copy_rates), 0.3)
    # Twice the events must show about the same peak; 1.1× leaves room for the run-to-run spread of a peak on a
    # shared 2-core machine.
    peaks = {name: [r.peak_rss for r in runs] for name, runs in (("half", half), ("full", full), ("double", double))}
    result.target("M1 peak RSS full / half stream", ratios(peaks["full"], peaks["half"]), 1.1, at_most=True)
    result.target("M1 peak RSS double / full stream", ratios(peaks["double"], peaks["full"]), 1.1, at_most=True)
    return result
