"""The capacity section of `make bench`: per-CPU-second and per-batch figures taken from the scenarios' results,
and what they imply at 10×, 100× and 1,000× the demo load (docs/scaling.md reads its tables from this section).

The scenarios report the raw figures under the names below (this module owns them: the scenarios import the
constants); `section` picks their medians out of the results that ran and `plan` turns them into process counts.
A figure whose scenario did not run is left out, and so is every plan row that needs it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bench.common import Result, fmt

# Figure names, by the scenario that reports them.
W1_EVENTS_PER_CPU = "W1 events per consumer CPU-second, apply phase"
W1_PG_EVENTS_PER_CPU = "W1 events per PostgreSQL CPU-second, apply phase"
W1_PG_BYTES_PER_BATCH = "W1 PostgreSQL bytes per batch (read-model tables, indexes included)"
W1_PG_BYTES_PER_ESSAY = "W1 PostgreSQL bytes per essay"
W1_EVENTS_PER_BATCH = "W1 events per batch (re-sends included)"
W1_APPLY_RATE = "W1 events/s, apply phase (first → last commit)"
W1X2_APPLY_RATE = "W1x2 events/s, apply phase (first → last commit)"
R1_CACHED_PER_CPU = "R1 GraphQL from cache per API CPU-second"
R1_CACHED_GZIP_PER_CPU = "R1 GraphQL gzip from cache per API CPU-second"
R1_REDIS_PER_CPU = "R1 GraphQL from cache per Redis CPU-second"
R1_REDIS_BYTES_PER_ENTRY = "R1 Redis bytes per cached entry (entry, tag sets)"
R4_STATUS_PER_CPU = "R4 REST batch status uncached per API CPU-second"
R4_LIST_PER_CPU = "R4 REST user list uncached per API CPU-second"
R4_PG_STATUS_PER_CPU = "R4 REST batch status uncached per PostgreSQL CPU-second"
R4_PG_LIST_PER_CPU = "R4 REST user list uncached per PostgreSQL CPU-second"
R2_PER_CPU = "R2 GraphQL 1,000 essays uncached per API CPU-second"
R3_PER_CPU = "R3 GraphQL 100 batches uncached per API CPU-second"

# Capacity key (as written to latest.json's "capacity" → "figures") → (scenario, figure name, unit).
SOURCES: dict[str, tuple[str, str, str]] = {
    "consumer_events_per_cpu_second": ("W1", W1_EVENTS_PER_CPU, "events/CPU-s"),
    "postgres_events_per_cpu_second": ("W1", W1_PG_EVENTS_PER_CPU, "events/CPU-s"),
    "postgres_bytes_per_batch": ("W1", W1_PG_BYTES_PER_BATCH, "B"),
    "postgres_bytes_per_essay": ("W1", W1_PG_BYTES_PER_ESSAY, "B"),
    "events_per_batch": ("W1", W1_EVENTS_PER_BATCH, "events"),
    "consumer_events_per_second": ("W1", W1_APPLY_RATE, "events/s"),
    "two_consumers_events_per_second": ("W1x2", W1X2_APPLY_RATE, "events/s"),
    "api_cached_requests_per_cpu_second": ("R1", R1_CACHED_PER_CPU, "req/CPU-s"),
    "api_cached_gzip_requests_per_cpu_second": ("R1", R1_CACHED_GZIP_PER_CPU, "req/CPU-s"),
    "redis_cached_requests_per_cpu_second": ("R1", R1_REDIS_PER_CPU, "req/CPU-s"),
    "redis_bytes_per_entry": ("R1", R1_REDIS_BYTES_PER_ENTRY, "B"),
    "api_uncached_status_requests_per_cpu_second": ("R4", R4_STATUS_PER_CPU, "req/CPU-s"),
    "api_uncached_list_requests_per_cpu_second": ("R4", R4_LIST_PER_CPU, "req/CPU-s"),
    "postgres_uncached_status_requests_per_cpu_second": ("R4", R4_PG_STATUS_PER_CPU, "req/CPU-s"),
    "postgres_uncached_list_requests_per_cpu_second": ("R4", R4_PG_LIST_PER_CPU, "req/CPU-s"),
    "api_uncached_large_batch_requests_per_cpu_second": ("R2", R2_PER_CPU, "req/CPU-s"),
    "api_uncached_batch_list_requests_per_cpu_second": ("R2", R3_PER_CPU, "req/CPU-s"),
}

# The demo load, per second: `ras produce-demo` sends its stream as fast as it can, so the unit is the steady load the
# benchmarks drive the demo stack with: F1's 1,000 events/s of batch lives, and as many reads, 9 in 10 of them cache
# hits (a teacher's screen of a batch that is not changing; the tenth asks for one an event just evicted).
DEMO_EVENTS_PER_SECOND = 1_000.0
DEMO_READS_PER_SECOND = 1_000.0
DEMO_HIT_SHARE = 0.9
FACTORS = (1, 10, 100, 1_000)
# Plan every process for half a core: the other half absorbs bursts, and a consumer that fell behind catches up
# at the rate it falls behind.
UTILISATION = 0.5


def per_cpu_second(count: float, cpu_seconds: float) -> float:
    """`count` over the CPU seconds it took; NaN when no CPU time was measured (a process that did nothing)."""
    return count / cpu_seconds if cpu_seconds > 0 else math.nan


def ratio_or_none(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or denominator == 0:
        return None
    return numerator / denominator


def section(results: Sequence[Result]) -> dict[str, float]:
    """The median of every capacity figure whose scenario ran, by capacity key."""
    medians = {(r.scenario, f.name): f.median for r in results for f in r.figures}
    found = {key: (scenario, name) for key, (scenario, name, _) in SOURCES.items() if (scenario, name) in medians}
    return {key: medians[source] for key, source in found.items()}


@dataclass(frozen=True)
class Step:
    """What `factor` × the demo load needs, by the measured per-CPU-second figures."""

    factor: int
    events_per_second: float
    reads_per_second: float
    consumer_processes: int | None
    partitions: int | None
    api_processes: int | None
    postgres_write_cores: float | None
    postgres_read_cores: float | None
    redis_cores: float | None
    postgres_gib_per_hour: float | None


def processes(load: float, per_cpu: float | None) -> int | None:
    """Processes of one core each, run at UTILISATION, that carry `load` at `per_cpu` per CPU-second."""
    if per_cpu is None or not per_cpu > 0:
        return None
    return max(1, math.ceil(load / (per_cpu * UTILISATION)))


def cores(load: float, per_cpu: float | None) -> float | None:
    """CPU cores (unrounded) that `load` keeps busy at `per_cpu` per CPU-second."""
    if per_cpu is None or not per_cpu > 0:
        return None
    return load / per_cpu


def api_cpu_per_read(figures: Mapping[str, float], hit_share: float = DEMO_HIT_SHARE) -> float | None:
    """API CPU seconds per read of the demo mix: hits at R1's cost, misses at R4's uncached 25-essay batch's."""
    cached = figures.get("api_cached_requests_per_cpu_second")
    uncached = figures.get("api_uncached_status_requests_per_cpu_second")
    if not cached or not uncached:
        return None
    return hit_share / cached + (1 - hit_share) / uncached


def plan(figures: Mapping[str, float], factors: Sequence[int] = FACTORS) -> list[Step]:
    steps = []
    read_cpu = api_cpu_per_read(figures)
    bytes_per_batch = figures.get("postgres_bytes_per_batch")
    events_per_batch = figures.get("events_per_batch")
    for factor in factors:
        events = DEMO_EVENTS_PER_SECOND * factor
        reads = DEMO_READS_PER_SECOND * factor
        consumers = processes(events, figures.get("consumer_events_per_cpu_second"))
        per_hour = None
        if bytes_per_batch is not None and events_per_batch:
            per_hour = events / events_per_batch * bytes_per_batch * 3_600 / 2**30
        steps.append(
            Step(
                factor=factor,
                events_per_second=events,
                reads_per_second=reads,
                consumer_processes=consumers,
                # Twice the consumers: the group can double without re-partitioning the topics.
                partitions=None if consumers is None else max(3, 2 * consumers),
                api_processes=None if read_cpu is None else processes(reads, 1 / read_cpu),
                postgres_write_cores=cores(events, figures.get("postgres_events_per_cpu_second")),
                postgres_read_cores=cores(
                    reads * (1 - DEMO_HIT_SHARE), figures.get("postgres_uncached_status_requests_per_cpu_second")
                ),
                redis_cores=cores(reads * DEMO_HIT_SHARE, figures.get("redis_cached_requests_per_cpu_second")),
                postgres_gib_per_hour=per_hour,
            )
        )
    return steps


def report(results: Sequence[Result]) -> dict[str, Any]:
    """The capacity section of latest.json."""
    figures = section(results)
    return {
        "figures": figures,
        "units": {key: SOURCES[key][2] for key in figures},
        "two_consumers_over_one": ratio_or_none(
            figures.get("two_consumers_events_per_second"), figures.get("consumer_events_per_second")
        ),
        "demo_load": {
            "events_per_second": DEMO_EVENTS_PER_SECOND,
            "reads_per_second": DEMO_READS_PER_SECOND,
            "hit_share": DEMO_HIT_SHARE,
            "utilisation": UTILISATION,
        },
        "plan": [step.__dict__ for step in plan(figures)],
    }


def _cell(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "—"
    return f"{value:,}" if isinstance(value, int) else fmt(value)


def render(capacity: Mapping[str, Any]) -> str:
    """The capacity section as printed after the figures: the per-unit figures, then the plan."""
    figures: Mapping[str, float] = capacity["figures"]
    if not figures:
        return "capacity: no capacity figure (run W1, W1x2, R1, R2 or R4)"
    lines = ["capacity (latest.json → capacity):"]
    width = max(len(key) for key in figures)
    for key, value in figures.items():
        lines.append(f"  {key.ljust(width)}  {_cell(value)} {capacity['units'][key]}")
    if capacity["two_consumers_over_one"] is not None:
        lines.append(f"  two consumers / one (W1x2 / W1 events/s): {fmt(capacity['two_consumers_over_one'])}×")
    demo = capacity["demo_load"]
    lines.append(
        f"plan at {UTILISATION:.0%} of a core per process; demo load {fmt(demo['events_per_second'])} events/s and "
        f"{fmt(demo['reads_per_second'])} reads/s ({demo['hit_share']:.0%} hits):"
    )
    rows = [
        (
            "load",
            "consumers",
            "partitions",
            "API processes",
            "PG write cores",
            "PG read cores",
            "Redis cores",
            "PG GiB/hour",
        )
    ]
    for step in capacity["plan"]:
        rows.append(
            (
                f"{step['factor']}×",
                _cell(step["consumer_processes"]),
                _cell(step["partitions"]),
                _cell(step["api_processes"]),
                _cell(step["postgres_write_cores"]),
                _cell(step["postgres_read_cores"]),
                _cell(step["redis_cores"]),
                _cell(step["postgres_gib_per_hour"]),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines += ["  " + "  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(lines)
