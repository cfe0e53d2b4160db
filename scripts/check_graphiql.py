"""Check that GraphiQL renders and runs a query in a real browser, offline: headless Chromium over DevTools.

Starts the API with uvicorn on a free local port, opens /graphql in Debian's `chromium`, enters the auth headers
in GraphiQL's headers editor, runs the first example query (a teacher's batch list) and reads the response pane.
It fails when the page asked for anything from another origin, when the console reports an error (a Content
Security Policy violation, say), or when the query did not return data.

    .venv/bin/python -m scripts.check_graphiql --database-url postgresql+asyncpg://… [--screenshot graphiql.png]

Needs `apt-get install chromium`. The database must be migrated (`ras migrate`); its contents are only read.
"""

from __future__ import annotations

import argparse
import base64
import itertools
import json
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import uvicorn
from pydantic import SecretStr
from websockets.sync.client import ClientConnection, connect

from app.main import create_app
from infra.settings import Settings

API_KEY = "graphiql-check-key"
SERVICE_ID = "admin-dashboard-service"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--remote-allow-origins=*",
    "--window-size=1400,900",
]

# Run in the page: GraphiQL 2 keeps a CodeMirror 5 instance on each editor's `.CodeMirror` element.
_EDITORS = "Array.from(document.querySelectorAll('.CodeMirror')).map(e => e.CodeMirror)"
_READY = "document.querySelector('.graphiql-execute-button') !== null"
_SET_HEADERS = f"""(() => {{
  const isHeaders = cm => {{
    try {{ return 'X-Internal-API-Key' in JSON.parse(cm.getValue()); }} catch (e) {{ return false; }}
  }};
  const editor = {_EDITORS}.find(isHeaders);
  editor.setValue(JSON.stringify({{'X-Internal-API-Key': '{API_KEY}', 'X-Service-ID': '{SERVICE_ID}'}}));
  return true;
}})()"""
_RUN = "document.querySelector('.graphiql-execute-button').click(), true"
_RESPONSE = (
    "(() => { const r = document.querySelector('.graphiql-response .CodeMirror'); "
    "return r ? r.CodeMirror.getValue() : ''; })()"
)


@dataclass
class CheckResult:
    response: str = ""
    foreign_requests: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    screenshot: Path | None = None

    @property
    def ok(self) -> bool:
        return '"data"' in self.response and not self.foreign_requests and not self.console_errors


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def _serving(database_url: str) -> Iterator[str]:
    """The API on a free local port, in a thread; yields its base URL."""
    settings = Settings(
        database_url=database_url,
        internal_api_key=SecretStr(API_KEY),
        allowed_service_ids=(SERVICE_ID,),
        environment="development",
    )
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the API did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


class _DevTools:
    """A minimal Chrome DevTools Protocol client: commands by id, events kept for inspection."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.ids = itertools.count(1)
        self.events: list[dict[str, Any]] = []

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        call_id = next(self.ids)
        self.ws.send(json.dumps({"id": call_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv(timeout=30))
            if message.get("id") == call_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                result: dict[str, Any] = message.get("result", {})
                return result
            self.events.append(message)

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result.get("result", {}).get("value")

    def wait_for(self, expression: str, accept: Callable[[Any], bool], seconds: float = 30) -> Any:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if accept(value):
                return value
            time.sleep(0.2)
        raise TimeoutError(f"page never satisfied: {expression}")


def _page_socket(debug_port: int) -> str:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{debug_port}/json/list", timeout=2) as response:
                pages = [t for t in json.load(response) if t.get("type") == "page"]
            if pages:
                return str(pages[0]["webSocketDebuggerUrl"])
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError("chromium's DevTools endpoint did not come up")


def _inspect(devtools: _DevTools, origin: str, result: CheckResult) -> None:
    for event in devtools.events:
        params = event.get("params", {})
        if event.get("method") == "Network.requestWillBeSent":
            url = params["request"]["url"]
            if not url.startswith((origin, "data:")):
                result.foreign_requests.append(url)
        elif event.get("method") == "Log.entryAdded" and params["entry"]["level"] == "error":
            result.console_errors.append(params["entry"]["text"])
        elif event.get("method") == "Runtime.exceptionThrown":
            result.console_errors.append(params["exceptionDetails"].get("text", "exception"))


def _changed(before: Any, value: Any) -> bool:
    return bool(value) and value != before


def _run_query(devtools: _DevTools, attempts: int = 5) -> str:
    """Click run until the response pane shows the query's answer rather than the page's own hint.

    GraphiQL takes an editor's text into its state after a debounce, so a click right after the headers were
    entered can still send none; the page's fetcher then answers with its "enter the headers" hint.
    """
    response = ""
    for _ in range(attempts):
        time.sleep(1)
        before = devtools.evaluate(_RESPONSE)
        devtools.evaluate(_RUN)
        response = str(devtools.wait_for(_RESPONSE, partial(_changed, before)))
        if '"data"' in response:
            break
    return response


def check(database_url: str, screenshot: Path | None = None) -> CheckResult:
    chromium = shutil.which("chromium")
    if chromium is None:
        raise RuntimeError("chromium is not installed: apt-get install chromium")
    result = CheckResult()
    # Chromium helper processes may still write to the profile as it exits; leftovers are harmless.
    with _serving(database_url) as origin, tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as profile:
        debug_port = _free_port()
        flags = [*CHROMIUM_FLAGS, f"--remote-debugging-port={debug_port}", f"--user-data-dir={profile}"]
        browser = subprocess.Popen(
            [chromium, *flags, "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            with connect(_page_socket(debug_port), max_size=None) as ws:
                devtools = _DevTools(ws)
                for domain in ("Page", "Runtime", "Network", "Log"):
                    devtools.call(f"{domain}.enable")
                devtools.call("Page.navigate", url=f"{origin}/graphql")
                devtools.wait_for(_READY, bool)
                devtools.evaluate(_SET_HEADERS)
                result.response = _run_query(devtools)
                time.sleep(0.5)  # let the schema refetch and late console messages arrive
                if screenshot is not None:
                    image = devtools.call("Page.captureScreenshot", format="png")["data"]
                    screenshot.write_bytes(base64.b64decode(image))
                    result.screenshot = screenshot
                devtools.call("Runtime.evaluate", expression="1")  # drain pending events
                _inspect(devtools, origin, result)
        finally:
            browser.terminate()
            browser.wait(timeout=10)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", required=True, help="SQLAlchemy URL of a migrated RAS database")
    parser.add_argument("--screenshot", type=Path, help="save a PNG of the page after the query ran")
    args = parser.parse_args()
    result = check(args.database_url, args.screenshot)
    print(f"response: {result.response[:400]}")
    print(f"requests to other origins: {result.foreign_requests or 'none'}")
    print(f"console errors: {result.console_errors or 'none'}")
    if result.screenshot:
        print(f"screenshot: {result.screenshot}")
    print("GraphiQL check passed" if result.ok else "GraphiQL check FAILED")
    return 0 if result.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
