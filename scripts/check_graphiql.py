"""Check GraphiQL in a real browser, offline: headless Chromium over the DevTools protocol.

Starts the API with uvicorn on a free local port, asks it for a batch, an essay and their teacher, and gives those
ids to the page as `ras dev` gives the demo's (app.graphiql.Prefill). Then it opens /graphql in Debian's
`chromium` and checks what a developer sees:

* the Docs explorer shows the schema without ⟳ being pressed: at once when the page carries the API key (as under
  `ras dev`); with `--enter-key` (as under `ras serve`, whose page leaves the key out) the Docs wait for it rather
  than fail, the key is entered once in the first tab's Headers editor, and the schema then arrives by itself;
* every example tab shows X-Internal-API-Key and X-Service-ID in its Headers editor and real ids in its Variables
  editor, and running it gives data, with no error (the subscription's first value, then it is stopped; with
  `--redis-url` only, since the API serves subscriptions through Redis: without it they are left out);
* no request left the origin, and the console logged no error (a Content-Security-Policy violation would).

    .venv/bin/python -m scripts.check_graphiql --database-url postgresql+asyncpg://… [--redis-url redis://…]
        [--enter-key] [--screenshots DIR]    # PNGs of the Docs and of each tab (Variables, then Headers)
    .venv/bin/python -m scripts.check_graphiql --url http://127.0.0.1:4003/graphql [--screenshots DIR]

`--url` checks a running service instead (`ras dev`: its page must carry the key and the demo's ids).

Needs `apt-get install chromium`. The database must be migrated (`ras migrate`) and hold at least one batch with an
essay (`ras dev` or `ras produce-demo` with `ras consume` make some); it is only read.
"""

from __future__ import annotations

import argparse
import base64
import itertools
import json
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import uvicorn
from graphql import OperationDefinitionNode, OperationType, parse
from pydantic import SecretStr
from starlette.applications import Starlette
from websockets.sync.client import ClientConnection, connect

from app.graphiql import KEY_HEADER, PREFILL_STATE, SERVICE_HEADER, Prefill
from app.live import EventHub
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
# A condition the page does not reach in this long has failed: a bound on a wait, never on how fast anything is.
PATIENCE_SECONDS = 60

# Run in the page. GraphiQL 4 keeps a CodeMirror 5 instance on each editor's `.CodeMirror` element; the section
# below the query editor holds the Variables editor, then the Headers editor.
_EDITORS = "Array.from(document.querySelectorAll('.CodeMirror')).map(e => e.CodeMirror)"
_TOOLS = "Array.from(document.querySelectorAll('.graphiql-editor-tool .CodeMirror')).map(e => e.CodeMirror)"
_VARIABLES = f"{_TOOLS}[0].getValue()"
_HEADERS = f"{_TOOLS}[1].getValue()"
_QUERY = "document.querySelector('.graphiql-query-editor .CodeMirror').CodeMirror.getValue()"
_READY = f"document.querySelector('.graphiql-execute-button') !== null && {_TOOLS}.length === 2"
_TABS = "Array.from(document.querySelectorAll('.graphiql-tab .graphiql-tab-button')).map(t => t.textContent.trim())"
_ACTIVE_TAB = "Array.from(document.querySelectorAll('.graphiql-tab')).findIndex(t => t.matches('.graphiql-tab-active'))"
_RUN = "document.querySelector('.graphiql-execute-button').click(), true"
_RESPONSE = (
    "(() => { const r = document.querySelector('.graphiql-response .CodeMirror'); "
    "return r ? r.CodeMirror.getValue() : ''; })()"
)
_RUNNING = "document.querySelector('.graphiql-execute-button[aria-label^=\"Stop\"]') !== null"
_CONFIG_HEADERS = "JSON.parse(document.getElementById('ras-graphiql-config').textContent).headers"
_DOCS_BUTTON = "document.querySelector('.graphiql-sidebar button[aria-label$=\"Documentation Explorer\"]')"
# What the Docs explorer shows: the schema's root types, an error, a spinner while the schema is on its way.
_DOCS = """(() => {
  const docs = document.querySelector('.graphiql-doc-explorer');
  if (!docs) { return {state: 'closed'}; }
  if (docs.querySelector('.graphiql-doc-explorer-error')) {
    return {state: 'error', text: docs.querySelector('.graphiql-doc-explorer-error').textContent};
  }
  const roots = Array.from(docs.querySelectorAll('.graphiql-doc-explorer-root-type')).map(e => e.textContent);
  if (roots.length) { return {state: 'schema', roots: roots}; }
  return {state: docs.querySelector('.graphiql-spinner') ? 'waiting' : 'empty'};
})()"""


def _paste_headers(headers: dict[str, str]) -> str:
    """Replace the Headers editor's text as pasting does (a change of origin 'paste', not a setValue)."""
    text = json.dumps(json.dumps(headers, indent=2))
    return (
        f"(() => {{ const cm = {_TOOLS}[1]; cm.execCommand('selectAll'); "
        f"cm.replaceSelection({text}, 'end', 'paste'); return true; }})()"
    )


def _click_tab(index: int) -> str:
    return f"document.querySelector('#graphiql-session-tab-{index}').click(), true"


def _show_tool(name: str) -> str:
    return f"document.querySelector('.graphiql-editor-tools button[data-name=\"{name}\"]').click(), true"


@dataclass
class TabResult:
    title: str
    expected: dict[str, Any]  # the credentials every tab must show
    headers: dict[str, Any]
    variables: dict[str, Any]
    response: str
    screenshots: list[Path] = field(default_factory=list)
    skipped: str = ""  # why the example was not run

    @property
    def problems(self) -> list[str]:
        found = []
        if not self.expected.get(KEY_HEADER) or self.headers != self.expected:
            found.append(f"{self.title}: Headers editor shows {self.headers}, not {self.expected}")
        if any(isinstance(v, str) and v.startswith("<") for v in self.variables.values()):
            found.append(f"{self.title}: Variables editor shows placeholders {self.variables}")
        try:
            answer = json.loads(self.response)
        except ValueError:
            answer = None
        if self.skipped:
            return found
        if not isinstance(answer, dict) or not answer.get("data") or answer.get("errors"):
            found.append(f"{self.title}: the example did not give data: {self.response[:300]!r}")
        return found


@dataclass
class CheckResult:
    docs_before_key: str = ""  # with --enter-key: what the Docs showed before the key was entered
    docs: dict[str, Any] = field(default_factory=dict)
    tabs: list[TabResult] = field(default_factory=list)
    foreign_requests: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    screenshots: list[Path] = field(default_factory=list)

    @property
    def response(self) -> str:
        """The first example's answer."""
        return self.tabs[0].response if self.tabs else ""

    @property
    def problems(self) -> list[str]:
        found = [p for tab in self.tabs for p in tab.problems]
        if not self.tabs:
            found.append("no tab was checked")
        if self.docs.get("state") != "schema" or "query" not in self.docs.get("roots", []):
            found.append(f"the Docs did not show the schema: {self.docs}")
        if self.docs_before_key not in ("", "waiting"):
            found.append(f"before the key was entered the Docs showed {self.docs_before_key!r}, not a wait")
        found += [f"request to another origin: {url}" for url in self.foreign_requests]
        found += [f"console error: {text}" for text in self.console_errors]
        return found

    @property
    def ok(self) -> bool:
        return not self.problems


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def _serving(database_url: str, redis_url: str | None) -> Iterator[tuple[str, Starlette]]:
    """The API on a free local port, in a thread (with subscriptions when given Redis); yields its URL and app."""
    live: dict[str, Any] = {"redis_url": redis_url, "cache_prefix": f"ras-graphiql-check-{uuid.uuid4().hex[:8]}"}
    settings = Settings(
        database_url=database_url,
        internal_api_key=SecretStr(API_KEY),
        allowed_service_ids=(SERVICE_ID,),
        environment="development",
        **(live if redis_url else {}),
    )
    port = _free_port()
    app = create_app(settings, events=EventHub.from_settings(settings) if redis_url else None)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + PATIENCE_SECONDS
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the API did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}", app
    finally:
        server.should_exit = True
        thread.join(timeout=PATIENCE_SECONDS)


def _post(origin: str, query: str) -> Any:
    request = urllib.request.Request(  # noqa: S310 (our own server, http://127.0.0.1)
        f"{origin}/graphql",
        data=json.dumps({"query": query}).encode(),
        headers={"Content-Type": "application/json", KEY_HEADER: API_KEY, SERVICE_HEADER: SERVICE_ID},
    )
    with urllib.request.urlopen(request, timeout=PATIENCE_SECONDS) as response:  # noqa: S310 (our own origin)
        return json.load(response)


def discover_ids(origin: str) -> dict[str, object]:
    """A batch that has an essay, the essay and the batch's teacher: what the examples' variables ask for."""
    answer = _post(origin, "{ batches(first: 50) { nodes { id userId essays(first: 1) { nodes { id } } } } }")
    for batch in answer["data"]["batches"]["nodes"]:
        if batch["essays"]["nodes"]:
            return {"batchId": batch["id"], "userId": batch["userId"], "essayId": batch["essays"]["nodes"][0]["id"]}
    raise RuntimeError("the database holds no batch with an essay: project some events first (ras dev)")


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
            message = json.loads(self.ws.recv(timeout=PATIENCE_SECONDS))
            if message.get("id") == call_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                result: dict[str, Any] = message.get("result", {})
                return result
            self.events.append(message)

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression[:80]}…: {result['exceptionDetails'].get('text')}")
        return result.get("result", {}).get("value")

    def wait_for(self, expression: str, accept: Callable[[Any], bool], seconds: float = PATIENCE_SECONDS) -> Any:
        """Evaluate until `accept` takes the value; `seconds` only ends a wait for something that never came."""
        deadline = time.monotonic() + seconds
        while True:
            value = self.evaluate(expression)
            if accept(value):
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"page never satisfied: {expression[:120]}; last value {value!r}"[:600])
            time.sleep(0.1)

    def screenshot(self, path: Path) -> Path:
        path.write_bytes(base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"]))
        return path


def _page_socket(debug_port: int) -> str:
    deadline = time.monotonic() + PATIENCE_SECONDS
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
            same_origin = url.startswith((origin, "data:", origin.replace("http://", "ws://", 1)))
            if not same_origin:
                result.foreign_requests.append(url)
        elif event.get("method") == "Log.entryAdded" and params["entry"]["level"] == "error":
            result.console_errors.append(params["entry"]["text"])
        elif event.get("method") == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            result.console_errors.append(details.get("exception", {}).get("description", details.get("text", "")))


@contextmanager
def browser(url: str) -> Iterator[_DevTools]:
    """Headless Chromium on a fresh profile, at `url`, with the page's events recorded."""
    chromium = shutil.which("chromium")
    if chromium is None:
        raise RuntimeError("chromium is not installed: apt-get install chromium")
    # Chromium helper processes may still write to the profile as it exits; leftovers are harmless.
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as profile:
        debug_port = _free_port()
        flags = [*CHROMIUM_FLAGS, f"--remote-debugging-port={debug_port}", f"--user-data-dir={profile}"]
        process = subprocess.Popen(
            [chromium, *flags, "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            with connect(_page_socket(debug_port), max_size=None) as ws:
                devtools = _DevTools(ws)
                for domain in ("Page", "Runtime", "Network", "Log"):
                    devtools.call(f"{domain}.enable")
                devtools.call("Page.navigate", url=url)
                devtools.wait_for(_READY, bool)
                yield devtools
        finally:
            process.terminate()
            process.wait(timeout=PATIENCE_SECONDS)


def _docs_settled(value: Any) -> bool:
    return isinstance(value, dict) and value.get("state") in ("schema", "error")


def _changed(before: Any, value: Any) -> bool:
    return bool(value) and value != before


def _json_object(text: Any) -> dict[str, Any]:
    try:
        value = json.loads(text or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _shot_name(index: int, title: str) -> str:
    return f"tab-{index + 1}-{re.sub(r'[^A-Za-z0-9]+', '-', title).strip('-') or 'untitled'}"


def check_docs(devtools: _DevTools, result: CheckResult, enter_key: bool, screenshots: Path | None) -> None:
    """Open the Docs and wait for the schema, never pressing ⟳; with `enter_key`, enter the key in between."""
    devtools.evaluate(f"{_DOCS_BUTTON}.click(), true")
    if enter_key:
        before = devtools.wait_for(_DOCS, lambda value: value.get("state") not in ("closed", "empty"))
        result.docs_before_key = str(before["state"])
        if screenshots is not None:
            result.screenshots.append(devtools.screenshot(screenshots / "docs-waiting-for-key.png"))
        devtools.evaluate(_paste_headers({KEY_HEADER: API_KEY, SERVICE_HEADER: SERVICE_ID}))
    result.docs = devtools.wait_for(_DOCS, _docs_settled)
    if screenshots is not None:
        result.screenshots.append(devtools.screenshot(screenshots / "docs.png"))
    devtools.evaluate(f"{_DOCS_BUTTON}.click(), true")  # closed again: more room for the editors


def _is_subscription(query: str) -> bool:
    operations = [d for d in parse(query).definitions if isinstance(d, OperationDefinitionNode)]
    return any(op.operation == OperationType.SUBSCRIPTION for op in operations)


def _screenshots(devtools: _DevTools, tab: TabResult, index: int, folder: Path | None) -> None:
    """The tab with its Variables and answer, then with its Headers."""
    if folder is None:
        return
    name = _shot_name(index, tab.title)
    tab.screenshots.append(devtools.screenshot(folder / f"{name}.png"))
    devtools.evaluate(_show_tool("headers"))
    tab.screenshots.append(devtools.screenshot(folder / f"{name}-headers.png"))
    devtools.evaluate(_show_tool("variables"))


def check_tab(
    devtools: _DevTools, index: int, title: str, expected: dict[str, Any], screenshots: Path | None, live: bool
) -> TabResult:
    """Open tab `index`, read its Headers and Variables, run its example and read the answer."""
    devtools.evaluate(_click_tab(index))
    devtools.wait_for(_ACTIVE_TAB, lambda active: active == index)
    # The page gives the tab its headers as it becomes active: wait until the editor shows credentials.
    headers = _json_object(devtools.wait_for(_HEADERS, lambda text: bool(_json_object(text).get(KEY_HEADER))))
    tab = TabResult(title, expected, headers, _json_object(devtools.evaluate(_VARIABLES)), "")
    if not live and _is_subscription(devtools.evaluate(_QUERY)):
        tab.skipped = "a subscription: the API serves them only with Redis (--redis-url)"
    else:
        before = devtools.evaluate(_RESPONSE)
        devtools.evaluate(_RUN)
        tab.response = str(devtools.wait_for(_RESPONSE, partial(_changed, before)))
        if devtools.evaluate(_RUNNING):  # a subscription: its first value is in, stop it
            devtools.evaluate(_RUN)
            devtools.wait_for(_RUNNING, lambda running: not running)
    _screenshots(devtools, tab, index, screenshots)
    return tab


def _check_page(
    devtools: _DevTools,
    result: CheckResult,
    expected: dict[str, Any],
    screenshots: Path | None,
    live: bool,
    enter_key: bool = False,
) -> None:
    check_docs(devtools, result, enter_key, screenshots)
    titles = devtools.evaluate(_TABS)
    result.tabs = [check_tab(devtools, i, title, expected, screenshots, live) for i, title in enumerate(titles)]
    result.screenshots += [shot for tab in result.tabs for shot in tab.screenshots]


def check(
    database_url: str, redis_url: str | None = None, screenshots: Path | None = None, enter_key: bool = False
) -> CheckResult:
    """Everything the module's doc lists; `enter_key` leaves the key out of the page, as `ras serve` does."""
    result = CheckResult()
    if screenshots is not None:
        screenshots.mkdir(parents=True, exist_ok=True)
    with _serving(database_url, redis_url) as (origin, app):
        ids = discover_ids(origin)
        setattr(app.state, PREFILL_STATE, Prefill(api_key="" if enter_key else API_KEY, variables=ids))
        with browser(f"{origin}/graphql") as devtools:
            expected = {KEY_HEADER: API_KEY, SERVICE_HEADER: SERVICE_ID}
            _check_page(devtools, result, expected, screenshots, redis_url is not None, enter_key)
            devtools.evaluate("1")  # collect the events still pending
            _inspect(devtools, origin, result)
    return result


def check_url(url: str, screenshots: Path | None = None) -> CheckResult:
    """The same checks of a running service's page (`ras dev`), which must carry the key and the ids itself."""
    result = CheckResult()
    if screenshots is not None:
        screenshots.mkdir(parents=True, exist_ok=True)
    origin = re.sub(r"^(https?://[^/]+).*$", r"\1", url)
    with browser(url) as devtools:
        expected = _json_object(devtools.evaluate(_CONFIG_HEADERS))
        _check_page(devtools, result, expected, screenshots, live=True)
        devtools.evaluate("1")
        _inspect(devtools, origin, result)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--database-url", help="SQLAlchemy URL of a migrated RAS database")
    target.add_argument("--url", help="the GraphiQL page of a running service (ras dev)")
    parser.add_argument("--redis-url", help="Redis for subscriptions (without it the subscription tab is not run)")
    parser.add_argument("--enter-key", action="store_true", help="leave the key out of the page and enter it")
    parser.add_argument("--screenshots", type=Path, help="save PNGs of the Docs and of each tab in this folder")
    args = parser.parse_args()
    if args.url:
        result = check_url(args.url, args.screenshots)
    else:
        result = check(args.database_url, args.redis_url, args.screenshots, args.enter_key)
    if result.docs_before_key:
        print(f"Docs before the key was entered: {result.docs_before_key}")
    print(f"Docs: {result.docs}")
    for tab in result.tabs:
        answer = f"not run: {tab.skipped}" if tab.skipped else f"response {tab.response[:120]!r}"
        print(f"{tab.title}: headers {tab.headers}, variables {tab.variables}, {answer}")
    print(f"requests to other origins: {result.foreign_requests or 'none'}")
    print(f"console errors: {result.console_errors or 'none'}")
    for path in result.screenshots:
        print(f"screenshot: {path}")
    for problem in result.problems:
        print(f"PROBLEM: {problem}")
    print("GraphiQL check passed" if result.ok else "GraphiQL check FAILED")
    return 0 if result.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
