"""A real `ras serve` for a test (the command as deployed, on a free port of 127.0.0.1), and reading its /metrics."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers.processes import RasProcess, free_port, wait_for_status


@asynccontextmanager
async def ras_serve(database_url: str, log: Path, *, key: str, service: str, **variables: str) -> AsyncIterator[str]:
    """`ras serve` on this database accepting `key` from `service`, with no cache and no live updates unless
    `variables` (further RAS_* values) say otherwise; yields its base URL once /healthz answers, and kills it at the
    end."""
    port = free_port()
    env: Mapping[str, str] = {
        "RAS_DATABASE_URL": database_url,
        "RAS_INTERNAL_API_KEY": key,
        "RAS_ALLOWED_SERVICE_IDS": service,
        "RAS_CACHE_ENABLED": "false",
        "RAS_LIVE_UPDATES_ENABLED": "false",
        "RAS_HOST": "127.0.0.1",
        "RAS_PORT": str(port),
        **variables,
    }
    process = RasProcess("serve", dict(env), log)
    try:
        base_url = f"http://127.0.0.1:{port}"
        await wait_for_status(f"{base_url}/healthz", 200)
        yield base_url
    finally:
        process.kill()


async def metric(client: httpx.AsyncClient, auth: Mapping[str, str], name: str, **labels: str) -> float:
    """The value of one sample of the server's /metrics, asked with the credentials `auth` (0 when it has none yet)."""
    response = await client.get("/metrics", headers=auth)
    assert response.status_code == 200, response.text
    text = response.text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


async def until(condition: Callable[[], Awaitable[bool]], what: str, timeout: float = 30) -> None:
    """Poll `condition` until it holds (`timeout`: only a hang guard, naming `what` was awaited)."""
    try:
        async with asyncio.timeout(timeout):
            while not await condition():
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"still not true after {timeout} s: {what}") from None
