"""An API server process for the load scenarios (L1, LIST): `python -m bench.r1_app` (the app `ras serve` builds, in
one process) on a free port, started, waited for and stopped; its counters read from /metrics."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
from prometheus_client.parser import text_string_to_metric_families

from bench.data import HEADERS, server_env
from devstack.process import free_port


@dataclass(frozen=True)
class ApiProcess:
    base: str
    port: int
    pid: int

    async def counters(self) -> dict[str, dict[str, float]]:
        """Every sample of /metrics by name, then by its labels' values joined with commas ("" without labels)."""
        async with httpx.AsyncClient(timeout=30) as client:
            text = (await client.get(f"{self.base}/metrics", headers=HEADERS)).text
        found: dict[str, dict[str, float]] = defaultdict(dict)
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                found[sample.name][",".join(sample.labels.values())] = sample.value
        return found


@contextlib.asynccontextmanager
async def api_process(database_url: str, redis_url: str, workdir: Path, **settings: str) -> AsyncIterator[ApiProcess]:
    """The server with bench/data.py's settings (cache on) and `settings` (RAS_* variables) on top."""
    port = free_port()
    env = {**server_env(database_url, redis_url, port, f"bench-{uuid.uuid4().hex[:8]}"), **settings}
    log = workdir / f"server-{port}.log"
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.r1_app", env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out
        )
    base = f"http://127.0.0.1:{port}"
    try:
        await wait_ready(base, proc, log)
        yield ApiProcess(base, port, proc.pid)
    finally:
        await stop_process(proc)


async def stop_process(proc: asyncio.subprocess.Process) -> None:
    """SIGTERM, then SIGKILL if it has not exited within 30 s."""
    if proc.returncode is None:
        proc.terminate()
    try:
        await asyncio.wait_for(proc.wait(), 30)
    except TimeoutError:
        proc.kill()
        await proc.wait()


async def wait_ready(base: str, proc: asyncio.subprocess.Process, log: Path, name: str = "the API server") -> None:
    """Until `base`'s /readyz answers 200; the tail of `log` if the process exits first."""
    async with httpx.AsyncClient(timeout=2) as client, asyncio.timeout(120):
        while True:
            if proc.returncode is not None:
                tail = (await asyncio.to_thread(log.read_text))[-3000:]
                raise RuntimeError(f"{name} exited ({proc.returncode}):\n{tail}")
            try:
                if (await client.get(f"{base}/readyz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)


async def mixed_load(port: int, spec: Path, connections: int, end_at: float) -> dict[str, Any]:
    """bench/mixed_load.py in its own process until `end_at` (Unix time); its report."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.mixed_load",
        f"--port={port}",
        f"--spec={spec}",
        f"--connections={connections}",
        f"--end-at={end_at}",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = await proc.communicate()
    lines = [line for line in out.decode().splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(
            f"bench.mixed_load failed ({proc.returncode}): {out.decode()[-2000:]} {err.decode()[-2000:]}"
        )
    report: dict[str, Any] = orjson.loads(lines[-1])
    return report
