"""`ras dev` end to end: a fresh stack comes up, serves the demo through GraphQL, and SIGINT leaves nothing behind."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import httpx
import psutil
import pytest

from tests.helpers.processes import RasProcess, free_port

pytestmark = pytest.mark.kafka

QUERY = "{ batches(first: 50) { totalCount edges { node { id clientStatus essays(first: 1) { totalCount } } } } }"
HEADERS = {"X-Internal-API-Key": "dev-internal-api-key", "X-Service-ID": "api-gateway-service"}


async def test_dev_stack_serves_the_demo_and_stops_cleanly(tmp_path: Path) -> None:
    # Nothing configured: every server is embedded, as on a fresh machine.
    env = {k: "" for k in ("RAS_DATABASE_URL", "RAS_REDIS_URL", "RAS_KAFKA_BOOTSTRAP_SERVERS") if k in os.environ}
    port = free_port()
    dev = RasProcess.with_args(
        ["dev", "--port", str(port), "--batches", "6", "--no-progress"], env, tmp_path / "dev.log"
    )
    try:
        await dev.wait_for_output("demo: produced", timeout=120)
        assert f"GraphiQL:  http://127.0.0.1:{port}/graphql" in dev.output()
        children = psutil.Process(dev.proc.pid).children(recursive=True)
        assert len(children) >= 3, "embedded PostgreSQL, Redis and broker run as children"

        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            page = await client.get("/graphql", headers={"Accept": "text/html"})
            assert page.status_code == 200 and "graphiql" in page.text.lower()
            async with asyncio.timeout(60):
                while True:
                    body = (await client.post("/graphql", json={"query": QUERY}, headers=HEADERS)).json()
                    if body["data"]["batches"]["totalCount"] == 6:
                        break
                    await asyncio.sleep(0.2)
        assert all(edge["node"]["essays"]["totalCount"] > 0 for edge in body["data"]["batches"]["edges"])

        assert await dev.stop(signal.SIGINT, timeout=60) == 0
        assert "stopped" in dev.output()
        still_running = [c.pid for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
        assert still_running == [], "Ctrl-C stops every server the stack started"
    finally:
        dev.kill()
