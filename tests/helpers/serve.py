"""A real `ras serve` for a test: the command as deployed, on a free port of 127.0.0.1."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path

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
