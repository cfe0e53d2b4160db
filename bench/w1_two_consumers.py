"""W1x2: W1's stream applied by two `ras consume` processes in one consumer group, on topics of 2 partitions each.

The same 2,100 batches as W1 (bench/w1_projection.py: its stream, its producer, its polling of the stored
positions, its check that every repetition writes the same rows), produced onto a fresh broker whose eight topics
have 2 partitions, so each process gets one partition of every topic. Both processes start at once with the same
group id; the apply phase runs from the first position committed to the last, as in W1.

Figures only, no target: on a 2-core machine the two consumers share the cores with PostgreSQL, Redis, the broker
and the bench itself, so this cannot show linear scaling. Each process's CPU seconds say whether both did a share of
the work; the ratio to W1's single process (in the capacity section, when W1 ran in the same run) says how much
a second process bought on this machine.
"""

from __future__ import annotations

from bench.capacity import W1X2_APPLY_RATE, per_cpu_second
from bench.common import MIB, Context, Result
from bench.w1_projection import BATCHES, consume_stream, stream

NAME = "W1x2"
TITLE = "projection throughput, 2 consumer processes on 2 partitions per topic (figures only)"

PARTITIONS = 2
PROCESSES = 2


def shares(cpu_seconds: list[float]) -> list[float]:
    """Each process's part of the processes' CPU time (they sum to 1; equal parts when none was measured)."""
    total = sum(cpu_seconds)
    if total <= 0:
        return [1 / len(cpu_seconds)] * len(cpu_seconds)
    return [seconds / total for seconds in cpu_seconds]


async def run(ctx: Context) -> Result:
    result = Result(NAME, TITLE)
    runs, rows = await consume_stream(ctx, stream(BATCHES), "W1x2", partitions=PARTITIONS, processes=PROCESSES)
    await ctx.servers.drop_database(rows)
    result.figure(W1X2_APPLY_RATE, "events/s", [r.apply_rate for r in runs])
    result.figure(
        "W1x2 events/s, end to end (process start → last commit)", "events/s", [r.end_to_end_rate for r in runs]
    )
    result.figure("W1x2 group join (process start → both assigned)", "s", [r.joined for r in runs])
    for i in range(PROCESSES):
        result.figure(
            f"W1x2 consumer {i + 1} CPU, start → last commit", "s", [r.cpu_seconds[i] for r in runs], "user + system"
        )
    result.figure(
        "W1x2 events per consumer CPU-second, apply phase",
        "events/CPU-s",
        [per_cpu_second(r.events - r.first_events, r.apply_cpu) for r in runs],
        "both processes' CPU",
    )
    result.figure("W1x2 consumer peak RSS (larger process)", "MiB", [r.peak_rss / MIB for r in runs])
    split = " / ".join(f"{share:.0%}" for share in shares(runs[-1].cpu_seconds))
    result.notes.append(
        f"W1x2: {runs[0].events:,} events, {PARTITIONS} partitions per topic, {PROCESSES} processes in one group; "
        f"CPU split between them {split} (last repetition). Figures only: 2 shared cores cannot show linear scaling"
    )
    return result
