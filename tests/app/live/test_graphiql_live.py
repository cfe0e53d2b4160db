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
from scripts.check_graphiql import _EDITORS, _READY, _RESPONSE, _RUN, CHROMIUM_FLAGS, _DevTools, _free_port, _inspect
from scripts.check_graphiql import _page_socket as page_socket
from tests.app.graphql.conftest import API_KEY, SERVICE_ID
from tests.app.live.conftest import live_api, live_settings
from tests.helpers.events import EPOCH, project, registered, slot_assigned

pytestmark = pytest.mark.skipif(shutil.which("chromium") is None, reason="needs chromium (apt-get install chromium)")

_QUERY_TEXT = "document.querySelector('.graphiql-query-editor .CodeMirror').CodeMirror.getValue()"


def _set_editors(query: str) -> str:
    return f"""(() => {{
  const editors = {_EDITORS};
  const headers = editors.find(cm => {{ try {{ return 'X-Internal-API-Key' in JSON.parse(cm.getValue()); }}
                                         catch (e) {{ return false; }} }});
  headers.setValue(JSON.stringify({{'X-Internal-API-Key': '{API_KEY}', 'X-Service-ID': '{SERVICE_ID}'}}));
  document.querySelector('.graphiql-query-editor .CodeMirror').CodeMirror.setValue({query!r});
  return true;
}})()"""


@dataclass
class _Problems:
    foreign_requests: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)


def _response_shows(devtools: _DevTools, text: str, seconds: float = 15) -> str:
    return str(devtools.wait_for(_RESPONSE, lambda value: bool(value) and text in value, seconds))


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
    """Open GraphiQL, enter the headers and the subscription, run it; returns the first value shown."""
    for domain in ("Page", "Runtime", "Network", "Log"):
        devtools.call(f"{domain}.enable")
    devtools.call("Page.navigate", url=f"{origin}/graphql")
    devtools.wait_for(_READY, bool)
    devtools.evaluate(_set_editors(query))
    for _ in range(5):  # GraphiQL takes editor text in after a debounce: click until the subscription ran
        time.sleep(1)
        devtools.evaluate(_RUN)
        try:
            return _response_shows(devtools, '"totalCount": 0', 3)
        except TimeoutError:
            continue
    raise AssertionError(f"no first value; response {devtools.evaluate(_RESPONSE)!r}, {_problems(devtools, origin)}")


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
