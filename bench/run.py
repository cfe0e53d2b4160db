"""`make bench`: run the benchmark scenarios, print their table and write bench/results/latest.json.

    python -m bench.run                # every scenario
    python -m bench.run --only W1      # just W1 (several --only, or a comma-separated list, select more)

Servers come from RAS_BENCH_DATABASE_URL, RAS_BENCH_REDIS_URL and RAS_BENCH_KAFKA_BOOTSTRAP when set; otherwise
throwaway ones are started as the test suite starts them (devstack/). A scenario is a module with `NAME`,
`TITLE` and `async def run(ctx: Context) -> Result`; add it to SCENARIOS.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import capacity
from bench.common import Context, Result, Servers, table

# Scenario name → module, imported only when selected. One module may measure several rows of the table
# (W1 also reports the consumer's M1, R1 the API's; R2 also runs R3): ALIASES name those rows.
# W1 runs last: its ~700,000 row writes leave PostgreSQL checkpointing and vacuuming for a while, which doubled
# the consumer's transaction times in an F1 run right after it. W1x2 (two consumer processes) follows it: it writes as
# much, and a scenario after both would pay for twice that.
SCENARIOS: dict[str, str] = {
    "R1": "bench.r1_cached",
    "R2": "bench.r2_r3_uncached",
    "R4": "bench.r4_rest_uncached",
    "L1": "bench.l1_overload",
    "LIST": "bench.list_cached",
    "F1": "bench.f1_freshness",
    "F2": "bench.f2_freshness",
    "W1": "bench.w1_projection",
    "W1x2": "bench.w1_two_consumers",
}
ALIASES: dict[str, str] = {"R3": "R2", "M1": "W1"}
RESULTS = Path(__file__).parent / "results"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="NAME",
        help=f"scenario(s) to run: {', '.join(SCENARIOS)} (R3 runs with R2, M1 with W1 and R1)",
    )
    parser.add_argument("--repetitions", type=int, default=3, help="repetitions of every measurement (default: 3)")
    parser.add_argument("--output", type=Path, default=RESULTS / "latest.json", help="where to write the JSON")
    return parser.parse_args(argv)


def selected(only: Sequence[str]) -> list[str]:
    known = {name.upper(): name for name in [*SCENARIOS, *ALIASES]}
    asked = [known.get(n.strip().upper(), n.strip()) for item in only for n in item.split(",") if n.strip()]
    names = [ALIASES.get(n, n) for n in asked] or list(SCENARIOS)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        sys.exit(f"unknown scenario(s) {', '.join(unknown)}; known: {', '.join([*SCENARIOS, *ALIASES])}")
    return list(dict.fromkeys(names))  # in the order asked, each once


def tree() -> str:
    """The commit the bench ran on, "+dirty" when the work tree had changes (figures are cited with it)."""
    root = Path(__file__).parents[1]
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, check=True)
        status = subprocess.run(["git", "status", "--porcelain"], cwd=root, capture_output=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit.stdout.decode().strip() + ("+dirty" if status.stdout.strip() else "")


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


async def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    names = selected(args.only)
    servers = Servers()
    ctx = Context(servers, repetitions=max(1, args.repetitions))
    results: list[Result] = []
    # Other processes on the machine skew every figure; the load before and after is recorded with the results.
    load_before = [round(x, 2) for x in os.getloadavg()]
    ctx.log(f"load average before: {' '.join(map(str, load_before))} ({os.cpu_count()} CPUs)")
    started = time.perf_counter()
    try:
        for name in names:
            module = importlib.import_module(SCENARIOS[name])
            ctx.log(f"{name}: {module.TITLE}")
            begun = time.perf_counter()
            result: Result = await module.run(ctx)
            result.seconds = time.perf_counter() - begun
            results.append(result)
            ctx.log(f"{name}: done in {result.seconds:.0f}s")
    finally:
        await servers.close()
    total = time.perf_counter() - started

    print()
    print(table(results))
    for res in results:
        for note in res.notes:
            print(f"{res.scenario}: {note}")
    capacity_report = capacity.report(results)
    print()
    print(capacity.render(capacity_report))
    print(f"\n{len(results)} scenario(s), {ctx.repetitions} repetitions each, {total:.0f}s in all")
    load_after = " ".join(map(str, machine()["load_average"]))
    print(f"load average before: {' '.join(map(str, load_before))}; after: {load_after}")

    report = {
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "seconds": round(total, 1),
        "tree": tree(),
        "repetitions": ctx.repetitions,
        "machine": {**machine(), "load_average_before": load_before},
        "servers": servers.describe(),
        "scenarios": {res.scenario: res.as_json() for res in results},
        "capacity": capacity_report,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
