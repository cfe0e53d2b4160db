"""`ras dev` end to end: a fresh stack comes up, serves the demo through GraphQL, and SIGINT leaves nothing behind."""

from __future__ import annotations

import asyncio
import os
import shlex
import signal
import subprocess
import sys
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
        assert_the_banner_points_other_commands_at_the_stack(dev.output())
        listening = {c.laddr.ip for c in psutil.Process(dev.proc.pid).net_connections("tcp") if c.laddr.port == port}
        assert listening == {"127.0.0.1"}, "`ras dev` binds the loopback address unless told otherwise"
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


def assert_the_banner_points_other_commands_at_the_stack(output: str) -> None:
    """The banner's `export RAS_…=` lines, pasted into a shell, point `ras quarantine list` at this stack."""
    exported: dict[str, str] = {}
    for line in output.splitlines():
        if line.strip().startswith("export "):
            name, _, value = shlex.split(line)[1].partition("=")
            exported[name] = value
    wanted = {"RAS_DATABASE_URL", "RAS_REDIS_URL", "RAS_KAFKA_BOOTSTRAP_SERVERS", "RAS_ENVIRONMENT"}
    assert exported.keys() == wanted, exported
    assert exported["RAS_ENVIRONMENT"] == "development"
    for command in ("ras quarantine list", "ras produce-demo --batches 5", "psql postgresql://"):
        assert command in output, f"the banner shows `{command}`"
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("RAS_")} | exported
    listed = subprocess.run(
        [sys.executable, "-m", "ras.cli", "quarantine", "list"], env=env, capture_output=True, text=True, timeout=120
    )
    assert listed.returncode == 0, listed.stdout + listed.stderr
    assert listed.stdout.rstrip().endswith("record(s)"), listed.stdout
