"""The capacity section's arithmetic (bench/capacity.py) and W1x2's CPU split, on made-up figures: no server, no
timing. What the figures are on a real machine is `make bench`'s business."""

from __future__ import annotations

import importlib
import math

import pytest

from bench import capacity
from bench.common import Result
from bench.run import SCENARIOS, selected
from bench.w1_two_consumers import shares


def results() -> list[Result]:
    w1 = Result("W1", "")
    w1.figure(capacity.W1_EVENTS_PER_CPU, "events/CPU-s", [10_000, 12_000, 8_000])
    w1.figure(capacity.W1_APPLY_RATE, "events/s", [8_000])
    w1.figure(capacity.W1_EVENTS_PER_BATCH, "events", [50])
    w1.figure(capacity.W1_PG_BYTES_PER_BATCH, "B", [100_000])
    w1.figure(capacity.W1_PG_EVENTS_PER_CPU, "events/CPU-s", [20_000])
    w1x2 = Result("W1x2", "")
    w1x2.figure(capacity.W1X2_APPLY_RATE, "events/s", [10_000])
    r1 = Result("R1", "")
    r1.figure(capacity.R1_CACHED_PER_CPU, "req/CPU-s", [5_000])
    r1.figure(capacity.R1_REDIS_PER_CPU, "req/CPU-s", [45_000])
    r4 = Result("R4", "")
    r4.figure(capacity.R4_STATUS_PER_CPU, "req/CPU-s", [500])
    r4.figure(capacity.R4_PG_STATUS_PER_CPU, "req/CPU-s", [2_000])
    return [w1, w1x2, r1, r4]


def test_per_cpu_second_is_nan_without_cpu_time() -> None:
    assert capacity.per_cpu_second(300, 1.5) == 200
    assert math.isnan(capacity.per_cpu_second(300, 0.0))


def test_section_takes_the_median_of_the_scenarios_that_ran() -> None:
    figures = capacity.section(results())
    assert figures["consumer_events_per_cpu_second"] == 10_000
    assert figures["two_consumers_events_per_second"] == 10_000
    assert "api_uncached_large_batch_requests_per_cpu_second" not in figures  # R2 did not run


def test_a_read_of_the_demo_mix_costs_hits_and_misses_in_proportion() -> None:
    figures = {"api_cached_requests_per_cpu_second": 5_000.0, "api_uncached_status_requests_per_cpu_second": 500.0}
    # 0.9 / 5,000 + 0.1 / 500 CPU seconds per read
    assert capacity.api_cpu_per_read(figures) == pytest.approx(0.00038)
    assert capacity.api_cpu_per_read({"api_cached_requests_per_cpu_second": 5_000.0}) is None


def test_the_plan_counts_half_a_core_per_process() -> None:
    steps = {step.factor: step for step in capacity.plan(capacity.section(results()))}
    # 10,000 events/s at 10,000 events per CPU-second, each process at half a core: 2 processes, 4 partitions.
    assert (steps[10].consumer_processes, steps[10].partitions) == (2, 4)
    assert (steps[1].consumer_processes, steps[1].partitions) == (1, 3)  # never fewer than compose's 3
    # 1,000 reads/s × 0.00038 CPU-s = 0.38 cores, at half a core each: 1 process; 1,000× that: 760.
    assert steps[1].api_processes == 1
    assert steps[1_000].api_processes == 760
    assert steps[100].postgres_write_cores == pytest.approx(5.0)
    assert steps[1].redis_cores == pytest.approx(0.02)  # 900 hits/s at 45,000 per CPU-second
    assert steps[10].postgres_read_cores == pytest.approx(0.5)  # 1,000 misses/s at 2,000 per CPU-second
    # 1,000 events/s = 20 batches/s of 100,000 B, for an hour.
    assert steps[1].postgres_gib_per_hour == pytest.approx(20 * 100_000 * 3_600 / 2**30)


def test_a_missing_figure_leaves_its_columns_empty() -> None:
    step = capacity.plan({})[0]
    assert step.consumer_processes is None
    assert step.partitions is None
    assert step.api_processes is None
    assert step.postgres_gib_per_hour is None
    assert step.postgres_read_cores is None


def test_report_and_render() -> None:
    report = capacity.report(results())
    assert report["two_consumers_over_one"] == pytest.approx(1.25)
    assert [step["factor"] for step in report["plan"]] == [1, 10, 100, 1_000]
    printed = capacity.render(report)
    assert "consumer_events_per_cpu_second" in printed
    assert "1.25×" in printed
    assert capacity.render(capacity.report([])).startswith("capacity: no capacity figure")


def test_cpu_shares_of_the_two_consumers() -> None:
    assert shares([3.0, 1.0]) == [0.75, 0.25]
    assert shares([0.0, 0.0]) == [0.5, 0.5]


def test_w1x2_is_a_scenario_and_selected_by_any_case() -> None:
    assert selected(["w1x2,W1"]) == ["W1x2", "W1"]
    module = importlib.import_module(SCENARIOS["W1x2"])
    assert module.NAME == "W1x2"
