"""GraphiQL runs a subscription in a real browser (headless Chromium) and shows the update pushed after a commit,
over a same-origin WebSocket its Content-Security-Policy allows, with the credentials of its Headers tab."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass, field

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from websockets.sync.client import connect

from consumer.notify import Publisher
from scripts.check_graphiql import (
    _QUERY,
    _READY,
    _RESPONSE,
    _RUN,
    CHROMIUM_FLAGS,
    _DevTools,
    _free_port,
    _inspect,
    _paste_headers,
)
from scripts.check_graphiql import _page_socket as page_socket
from tests.app.graphql.conftest import API_KEY, SERVICE_ID
from tests.app.live.conftest import live_api, live_settings
from tests.helpers.events import EPOCH, project, registered, slot_assigned

pytestmark = pytest.mark.skipif(shutil.which("chromium") is None, reason="needs chromium (apt-get install chromium)")


def _set_query(query: str) -> str:
    return f"document.querySelector('.graphiql-query-editor .CodeMirror').CodeMirror.setValue({query!r}), true"


@dataclass
class _Problems:
    foreign_requests: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)


def _response_shows(devtools: _DevTools, text: str) -> str:
    return str(devtools.wait_for(_RESPONSE, lambda value: bool(value) and text in value))


def _problems(devtools: _DevTools, origin: str) -> _Problems:
    devtools.call("Runtime.evaluate", expression="1")  # collect pending events
    found = _Problems()
    _inspect(devtools, origin, found)  # type: ignore[arg-type]
    found.console_errors += [
        e["params"]["exceptionDetails"].get("exception", {}).get("description", "")[:300]
        for e in devtools.events
        if e.get("method") == "Runtime.exceptionThrown"
    ]
    return found


def _subscribe(devtools: _DevTools, origin: str, query: str) -> str:
    """Open GraphiQL, paste the headers, enter the subscription, run it; returns the first value shown. (The page
    reads the editors when run is pressed, so one press is enough.)"""
    for domain in ("Page", "Runtime", "Network", "Log"):
        devtools.call(f"{domain}.enable")
    devtools.call("Page.navigate", url=f"{origin}/graphql")
    devtools.wait_for(_READY, bool)
    devtools.evaluate(_paste_headers({"X-Internal-API-Key": API_KEY, "X-Service-ID": SERVICE_ID}))
    devtools.evaluate(_set_query(query))
    devtools.wait_for(_QUERY, lambda text: text == query)
    devtools.evaluate(_RUN)
    return _response_shows(devtools, '"totalCount": 0')


async def test_graphiql_shows_a_pushed_update(
    database_url: str, redis_url: str, prefix: str, engine: AsyncEngine
) -> None:
    settings = live_settings(database_url, redis_url, prefix)
    publisher = Publisher.from_settings(settings, engine)
    batch, essay = str(uuid.uuid4()), str(uuid.uuid4())
    await publisher.publish(await project(engine, [registered("gen2", batch, "teacher-a", [essay], EPOCH)]))
    query = f'subscription {{ batchProgress(batchId: "{batch}") {{ id essays {{ totalCount }} }} }}'
    chromium = shutil.which("chromium") or "chromium"
    try:
        async with live_api(settings, engine) as api:
            with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as profile:  # Chromium may still write
                port = _free_port()
                flags = [*CHROMIUM_FLAGS, f"--remote-debugging-port={port}", f"--user-data-dir={profile}"]
                browser = await asyncio.create_subprocess_exec(
                    chromium,
                    *flags,
                    "about:blank",
                    stdout=asyncio.subprocess.DEVNULL,
                    stderr=asyncio.subprocess.DEVNULL,
                )
                try:
                    socket_url = await asyncio.to_thread(page_socket, port)
                    with connect(socket_url, max_size=None) as ws:
                        devtools = _DevTools(ws)
                        first = await asyncio.to_thread(_subscribe, devtools, api.http_url, query)
                        assert batch in first
                        started = time.perf_counter()
                        await publisher.publish(await project(engine, [slot_assigned("gen2", batch, essay, EPOCH)]))
                        pushed = await asyncio.to_thread(_response_shows, devtools, '"totalCount": 1')
                        print(f"GraphiQL showed the pushed update {time.perf_counter() - started:.2f} s after commit")
                        assert batch in pushed
                        problems = await asyncio.to_thread(_problems, devtools, api.http_url)
                    # A CSP violation (the WebSocket refused) would be a console error.
                    assert problems.console_errors == []
                    assert [u for u in problems.foreign_requests if not u.startswith("ws://127.0.0.1")] == []
                finally:
                    browser.terminate()
                    await browser.wait()
    finally:
        await publisher.aclose()
