"""Who reads the API's /metrics (app/metrics_access.py), against a real `ras serve`: on the API port only a service
with the key, for itself; on RAS_METRICS_PORT anyone who reaches it (Prometheus), and nothing else is served there."""

from __future__ import annotations

import signal
from pathlib import Path

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.app.graphql.conftest import API_KEY, AUTH, FIXTURE_BATCH, SERVICE_ID
from tests.helpers.events import fixture_messages, project
from tests.helpers.processes import RasProcess, free_port, wait_for_status

SAMPLE = "ras_api_requests_total"
BATCH = "query MetricsProbe($id: ID!) { batch(id: $id) { id } }"


async def test_metrics_need_the_key_on_the_api_port_and_nothing_on_their_own(
    database_url: str, engine: AsyncEngine, tmp_path: Path
) -> None:
    await project(engine, fixture_messages("gen2"))
    port, metrics_port = free_port(), free_port()
    env = {
        "RAS_DATABASE_URL": database_url,
        "RAS_ENVIRONMENT": "development",
        "RAS_INTERNAL_API_KEY": API_KEY,
        "RAS_ALLOWED_SERVICE_IDS": SERVICE_ID,
        "RAS_CACHE_ENABLED": "false",
        "RAS_LIVE_UPDATES_ENABLED": "false",
        "RAS_HOST": "127.0.0.1",
        "RAS_PORT": str(port),
        "RAS_METRICS_PORT": str(metrics_port),
    }
    process = RasProcess("serve", env, tmp_path / "serve.log")
    try:
        await wait_for_status(f"http://127.0.0.1:{port}/healthz", 200)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as api:
            answered = await api.post(
                "/graphql",
                json={"query": BATCH, "operationName": "MetricsProbe", "variables": {"id": FIXTURE_BATCH}},
                headers=AUTH,
            )
            assert answered.json()["data"]["batch"]["id"] == FIXTURE_BATCH
            refusals = {
                "no credentials": ({}, 401),
                "a wrong key": ({**AUTH, "X-Internal-API-Key": API_KEY + "x"}, 401),
                "a service not allowed": ({**AUTH, "X-Service-ID": "someone-else"}, 401),
                "for a user": ({**AUTH, "X-User-ID": "teacher-3f9a"}, 403),
            }
            for what, (headers, status) in refusals.items():
                refused = await api.get("/metrics", headers=headers)
                assert refused.status_code == status, what
                assert SAMPLE not in refused.text, what
                assert refused.json()["errors"][0]["extensions"]["code"] in ("UNAUTHENTICATED", "FORBIDDEN"), what
            twice = await api.get("/metrics", headers=[*AUTH.items(), ("X-Internal-API-Key", API_KEY)])
            assert twice.status_code == 400 and SAMPLE not in twice.text
            served = await api.get("/metrics", headers=AUTH)
            assert served.status_code == 200 and 'operation="MetricsProbe"' in served.text

        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{metrics_port}", timeout=30) as scraper:
            scraped = await scraper.get("/metrics")
            assert scraped.status_code == 200 and 'operation="MetricsProbe"' in scraped.text
            for path in ("/graphql", "/healthz", f"/internal/v1/batches/{FIXTURE_BATCH}/status"):
                assert (await scraper.get(path, headers=AUTH)).status_code == 404, path
        # The listener stops with the API (uvicorn re-raises the SIGTERM it handled once it has shut down).
        assert await process.stop(signal.SIGTERM) in (0, -signal.SIGTERM), process.output()[-2000:]
        assert '"level": "error"' not in process.output()
    finally:
        process.kill()
