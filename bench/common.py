"""Shared pieces of the benchmark harness: servers, repetitions, figures, targets, the table and peak RSS.

A scenario module (`bench/w1_projection.py` …) exposes `NAME`, `TITLE` and `async def run(ctx: Context) ->
Result`. It measures each figure `ctx.repetitions` times and reports the median with the spread (min–max) of the
repetitions. Every target is a ratio against a baseline measured in the same run, never an absolute number
from another machine; absolute figures are reported beside the ratios.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import threading
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import psutil

from consumer.pure.topics import ALL_TOPICS

DATABASE_URL_ENV = "RAS_BENCH_DATABASE_URL"
REDIS_URL_ENV = "RAS_BENCH_REDIS_URL"
KAFKA_BOOTSTRAP_ENV = "RAS_BENCH_KAFKA_BOOTSTRAP"
PARTITIONS = 4


# --------------------------------------------------------------------------------------------------------------
# Figures and targets
# --------------------------------------------------------------------------------------------------------------


@dataclass
class Figure:
    """One measured quantity: a sample per repetition, reported as the median and the min–max spread."""

    scenario: str
    name: str
    unit: str
    samples: list[float]
    note: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def low(self) -> float:
        return min(self.samples)

    @property
    def high(self) -> float:
        return max(self.samples)

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "unit": self.unit,
            "median": self.median,
            "min": self.low,
            "max": self.high,
            "samples": self.samples,
            "note": self.note,
        }


@dataclass
class Target:
    """A figure that must reach `threshold`, judged on its median: by default a ratio against a same-run baseline
    (median of the per-repetition ratios) that must be at least the threshold. `at_most` turns it into an upper
    bound (a slowdown against the baseline, or a latency without baseline: then `unit` is not "×")."""

    scenario: str
    name: str
    ratio: Figure
    threshold: float
    at_most: bool = False

    @property
    def met(self) -> bool:
        if self.at_most:
            return self.ratio.median <= self.threshold
        return self.ratio.median >= self.threshold

    @property
    def condition(self) -> str:
        unit = self.ratio.unit
        spaced = unit if unit == "×" else f" {unit}"
        return f"{'≤' if self.at_most else '≥'} {fmt(self.threshold)}{spaced}"

    def as_json(self) -> dict[str, Any]:
        return {
            **self.ratio.as_json(),
            "name": self.name,
            "threshold": self.threshold,
            "condition": "at most" if self.at_most else "at least",
            "met": self.met,
        }


def ratios(numerators: Sequence[float], denominators: Sequence[float]) -> list[float]:
    """Per-repetition ratios, pairing the i-th measurement of each side (their counts may differ)."""
    count = min(len(numerators), len(denominators))
    return [numerators[i] / denominators[i] for i in range(count)]


@dataclass
class Result:
    """What one scenario reports."""

    scenario: str
    title: str
    figures: list[Figure] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def figure(self, name: str, unit: str, samples: Sequence[float], note: str = "") -> Figure:
        fig = Figure(self.scenario, name, unit, list(samples), note)
        self.figures.append(fig)
        return fig

    def target(
        self, name: str, samples: Sequence[float], threshold: float, at_most: bool = False, unit: str = "×"
    ) -> Target:
        tgt = Target(self.scenario, name, Figure(self.scenario, name, unit, list(samples)), threshold, at_most)
        self.targets.append(tgt)
        return tgt

    def as_json(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "seconds": round(self.seconds, 1),
            "figures": [f.as_json() for f in self.figures],
            "targets": [t.as_json() for t in self.targets],
            "notes": self.notes,
        }


def fmt(value: float) -> str:
    """A number as people read one: thousands separated, three significant digits for small values."""
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def table(results: Sequence[Result]) -> str:
    """The figures and targets of every scenario as two plain-text tables."""
    rows = [("scenario", "figure", "median", "spread (min–max)", "unit", "n")]
    for res in results:
        for f in res.figures:
            rows.append((f.scenario, f.name, fmt(f.median), f"{fmt(f.low)}–{fmt(f.high)}", f.unit, str(len(f.samples))))
    targets = [("scenario", "target", "median", "spread (min–max)", "threshold", "met")]
    for res in results:
        for t in res.targets:
            r = t.ratio
            met = "yes" if t.met else "NO"
            unit = r.unit if r.unit == "×" else f" {r.unit}"
            targets.append(
                (t.scenario, t.name, f"{fmt(r.median)}{unit}", f"{fmt(r.low)}–{fmt(r.high)}{unit}", t.condition, met)
            )
    return _render(rows) + "\n\n" + _render(targets)


def _render(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    numeric = {2, 3}
    lines = []
    for n, row in enumerate(rows):
        cells = [
            c.rjust(w) if i in numeric and n else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------------------
# Peak RSS
# --------------------------------------------------------------------------------------------------------------


class PeakRss:
    """Samples the resident set size of a process every `interval` seconds on a thread and keeps the peak.

    Use as a context manager around the process's run; `peak` is in bytes. A process that has exited keeps the
    last peak seen.
    """

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        self._process = psutil.Process(pid)
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name=f"rss-{pid}", daemon=True)
        self.peak = 0
        self.samples = 0

    def _sample(self) -> None:
        while not self._stop.is_set():
            try:
                rss = self._process.memory_info().rss
            except psutil.Error:
                return
            self.peak = max(self.peak, rss)
            self.samples += 1
            self._stop.wait(self._interval)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


MIB = 1024 * 1024


# --------------------------------------------------------------------------------------------------------------
# Servers
# --------------------------------------------------------------------------------------------------------------


def asyncpg_dsn(sqlalchemy_url: str) -> str:
    return sqlalchemy_url.replace("postgresql+asyncpg://", "postgresql://", 1)


def _with_database(sqlalchemy_url: str, database: str) -> str:
    base, _, _ = sqlalchemy_url.rpartition("/")
    return f"{base}/{database}"


def _env(name: str) -> str | None:
    value = os.environ.get(name, "").strip()
    return value or None


class Servers:
    """PostgreSQL, Redis and a Kafka-protocol broker for one bench run, as the test suite gets them.

    Each comes from its `RAS_BENCH_*` variable when set, otherwise a throwaway server is started (devstack/)
    the first time a scenario asks for it. Databases are copies of one migrated template; a broker handed out by
    `broker()` has the eight topics empty (a configured broker has them deleted and recreated, so do not point
    it at a shared cluster).
    """

    def __init__(self) -> None:
        self._owned: list[Any] = []
        self._server_url: str | None = _env(DATABASE_URL_ENV)
        self._redis_url: str | None = _env(REDIS_URL_ENV)
        self._kafka: str | None = _env(KAFKA_BOOTSTRAP_ENV)
        self._template: str | None = None
        self._databases: list[str] = []

    def describe(self) -> dict[str, str]:
        return {
            "postgres": "configured" if _env(DATABASE_URL_ENV) else "embedded",
            "redis": "configured" if _env(REDIS_URL_ENV) else "embedded",
            "kafka": "configured" if _env(KAFKA_BOOTSTRAP_ENV) else "embedded (Tansu)",
        }

    async def server_url(self) -> str:
        if self._server_url is None:
            from devstack.postgres import PostgresProcess

            server = PostgresProcess()
            self._owned.append(server)
            await asyncio.to_thread(server.start)
            self._server_url = server.url_for("postgres")
        return self._server_url

    async def redis_url(self) -> str:
        if self._redis_url is None:
            from devstack.redis import RedisProcess

            server = RedisProcess()
            self._owned.append(server)
            await asyncio.to_thread(server.start)
            self._redis_url = server.url
        return self._redis_url

    async def _admin(self, sql: str) -> None:
        conn = await asyncpg.connect(asyncpg_dsn(await self.server_url()))
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    async def fresh_database(self) -> str:
        """SQLAlchemy URL of a new, migrated, empty database (dropped at close)."""
        from db.migrate import upgrade_async

        server = await self.server_url()
        if self._template is None:
            name = f"ras_bench_tpl_{uuid.uuid4().hex[:8]}"
            await self._admin(f'CREATE DATABASE "{name}"')
            self._databases.append(name)
            await upgrade_async(_with_database(server, name))
            self._template = name
        name = f"ras_bench_{uuid.uuid4().hex[:10]}"
        await self._admin(f'CREATE DATABASE "{name}" TEMPLATE "{self._template}"')
        self._databases.append(name)
        return _with_database(server, name)

    async def drop_database(self, url: str) -> None:
        name = url.rpartition("/")[2]
        await self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if name in self._databases:
            self._databases.remove(name)

    @contextlib.asynccontextmanager
    async def broker(self, partitions: int = PARTITIONS) -> AsyncIterator[str]:
        """Bootstrap address of a broker whose eight topics exist and are empty."""
        if self._kafka is not None:
            await _recreate_topics(self._kafka, partitions)
            yield self._kafka
            return
        from devstack.kafka import KafkaProcess
        from devstack.topics import create_topics

        server = KafkaProcess()
        await asyncio.to_thread(server.start)
        try:
            await create_topics(server.bootstrap, ALL_TOPICS, partitions)
            yield server.bootstrap
        finally:
            await asyncio.to_thread(server.close)

    async def close(self) -> None:
        for name in list(self._databases):
            with contextlib.suppress(Exception):
                await self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        for server in reversed(self._owned):
            await asyncio.to_thread(server.close)


async def _recreate_topics(bootstrap: str, partitions: int) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        async with asyncio.timeout(60):
            existing = set(await admin.list_topics()) & set(ALL_TOPICS)
            if existing:
                await admin.delete_topics(sorted(existing))
            # Kafka deletes asynchronously: creating too early reports "already exists".
            while set(await admin.list_topics()) & set(ALL_TOPICS):  # noqa: ASYNC110 - polling the broker
                await asyncio.sleep(0.2)
            response = await admin.create_topics([NewTopic(t, partitions, 1) for t in ALL_TOPICS])
            failed = [(t, code) for t, code, *_ in response.topic_errors if code != 0]
            if failed:
                raise RuntimeError(f"could not create topics on {bootstrap}: {failed}")
    finally:
        await admin.close()


# --------------------------------------------------------------------------------------------------------------
# Context handed to scenarios
# --------------------------------------------------------------------------------------------------------------


@dataclass
class Context:
    servers: Servers
    repetitions: int = 3
    log_lines: list[str] = field(default_factory=list)

    def log(self, message: str) -> None:
        """Progress on stderr-like output while a scenario runs (the table comes at the end)."""
        line = f"[{time.strftime('%H:%M:%S')}] {message}"
        self.log_lines.append(line)
        print(line, flush=True)
