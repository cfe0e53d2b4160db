"""Pieces the input and security scenarios share: a real `ras serve` process and a client for it."""

from __future__ import annotations

import signal
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers.processes import RasProcess, free_port, wait_for_status

SECURITY_API_KEY = "resilience-" + uuid.uuid4().hex
SERVICE_ID = "api-gateway-service"
AUTH = {"X-Internal-API-Key": SECURITY_API_KEY, "X-Service-ID": SERVICE_ID}


@dataclass
class SecurityApi:
    """A running `ras serve` child process and an HTTP client for it."""

    process: RasProcess
    base_url: str
    cache_prefix: str
    client: httpx.AsyncClient = field(init=False)

    def __post_init__(self) -> None:
        self.client = httpx.AsyncClient(base_url=self.base_url, timeout=30)

    async def graphql(
        self,
        query: str,
        variables: Mapping[str, Any] | None = None,
        *,
        user: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        sent = dict(AUTH if headers is None else headers)
        if user is not None:
            sent["X-User-ID"] = user
        return await self.client.post(
            "/graphql", json={"query": query, "variables": dict(variables or {})}, headers=sent
        )

    async def rest(
        self,
        path: str,
        *,
        user: str | None = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        sent = dict(AUTH if headers is None else headers)
        if user is not None:
            sent["X-User-ID"] = user
        return await self.client.get("/internal/v1" + path, params=params, headers=sent)


StartSecurityApi = Callable[..., Awaitable[SecurityApi]]


@pytest.fixture
async def security_api_server(database_url: str, redis_url: str, tmp_path: Path) -> AsyncIterator[StartSecurityApi]:
    """Starts `ras serve` processes on the test's database: `await start(RAS_CACHE_ENABLED="false", ...)`.

    Production mode by default (GraphiQL and introspection off, as deployed), the cache on a private prefix of the
    test Redis; keyword arguments are extra RAS_* variables. Every process is stopped with SIGTERM at the end."""
    started: list[SecurityApi] = []

    async def start(**env: str) -> SecurityApi:
        port = free_port()
        prefix = f"sec-{uuid.uuid4().hex[:10]}"
        values = {
            "RAS_DATABASE_URL": database_url,
            "RAS_REDIS_URL": redis_url,
            "RAS_CACHE_PREFIX": prefix,
            "RAS_HOST": "127.0.0.1",
            "RAS_PORT": str(port),
            "RAS_INTERNAL_API_KEY": SECURITY_API_KEY,
            "RAS_ALLOWED_SERVICE_IDS": f"{SERVICE_ID},admin-dashboard-service",
            "RAS_ENVIRONMENT": "production",
            "RAS_SHUTDOWN_GRACE_SECONDS": "2",
            # A second, not the deployed 0.1 s: a busy test machine must not make the cache skip Redis.
            "RAS_REDIS_TIMEOUT_SECONDS": "1",
            **env,
        }
        process = RasProcess("serve", values, tmp_path / f"serve-{port}.log")
        base_url = f"http://127.0.0.1:{port}"
        api = SecurityApi(process, base_url, prefix)
        started.append(api)
        await wait_for_status(base_url + "/readyz", 200, timeout=60)
        return api

    yield start
    for api in started:
        await api.client.aclose()
        try:
            if api.process.proc.poll() is None:
                await api.process.stop(signal.SIGTERM, timeout=15)
        finally:
            api.process.kill()
