"""GraphiQL for developers, served wholly by this service: no CDN, nothing fetched at run time.

GraphiQL 4.1.2, React 18.3.1 and ReactDOM 18.3.1 (all MIT-licensed) are the npm releases' single-file UMD builds,
vendored in app/static/vendor/ with their licences (GraphiQL 5 ships ES modules only and React 19 no UMD build, so
these are the newest lines a page can load as plain files). `scripts/update_graphiql.py` downloads a newer release
with npm, checks it and rewrites the pins below; docs/graphql.md says how. Each file is pinned by SHA-256: a
missing or changed one stops start-up (`assets()`, called by `create_app`), and the page loads them with
Subresource Integrity, so the browser refuses a changed file too.

The page (app/static/graphiql.html, ras-graphiql.js) opens one tab per example query in app/static/examples, every
tab with the service's headers (X-Internal-API-Key and X-Service-ID) and the example's variables filled in; the key
is only filled in when the app was given it (`Prefill`, which `ras dev` passes with the ids of the demo it
produced), never from the settings of `ras serve`.

The files go gzipped to a browser that asks for it (`asset_endpoint`), each compressed once per process.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import hashlib
import html
import json
import re
import threading
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from importlib.resources.abc import Traversable

from graphql import NamedTypeNode, NonNullTypeNode, OperationDefinitionNode, TypeNode, parse
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response

from app.compression import ASSET_LEVEL, GZIP, Compression
from app.metrics import GZIP_COMPRESSIONS
from infra.settings import Settings

ASSET_PATH = "/graphiql"
KEY_HEADER = "X-Internal-API-Key"
SERVICE_HEADER = "X-Service-ID"
# The attribute of the Starlette app's state that holds the page's `Prefill` (set by `create_app`).
PREFILL_STATE = "graphiql_prefill"

# BEGIN vendor pins (scripts/update_graphiql.py --write rewrites this block)
VENDOR_VERSIONS = {"graphiql": "4.1.2", "react": "18.3.1", "react-dom": "18.3.1"}
VENDOR_SHA256 = {
    "graphiql.min.js": "hnImuor1znlJkD/FOTL3jayfS/xsyNoP04abi8bFJWs=",
    "graphiql.min.css": "MEh+B2NdMSpj9kexQNN3QKc8UzMrCXW/Sx/phcpuyIU=",
    "react.production.min.js": "2Unxw2h67a3O2shSYYZfKbF80nOZfn9rK/xTsvnUxN0=",
    "react-dom.production.min.js": "NfT5dPSyvNRNpzljNH+JUuNB+DkJ5EmCJ9Tia5j2bw0=",
}
# END vendor pins
OWN_ASSETS = ("ras-graphiql.js", "ras-graphiql.css")

# Only this origin: GraphiQL's editor sets inline style attributes, everything else is a file from this service.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "font-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_MEDIA_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}


class AssetError(RuntimeError):
    """A GraphiQL asset is missing or differs from its pinned digest."""


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    media_type: str
    sri: str

    @property
    def version(self) -> str:
        """A short token of the content, in the page's URLs: a browser's cached copy of an older file is not used
        (its Subresource Integrity check would refuse it)."""
        return self.sri.removeprefix("sha256-")[:12].replace("+", "-").replace("/", "_")


@dataclass(frozen=True, slots=True)
class Prefill:
    """What the page fills in beyond the service's own headers.

    `api_key` goes into every tab's X-Internal-API-Key (`ras dev` gives the key its banner prints; `ras serve` none,
    so the page leaves it for the developer). `variables` fill the examples' variables by name (say batchId), and
    `operations` by operation name and then variable name, over `variables` (LiveBatchProgress's batchId, say).
    """

    api_key: str = ""
    variables: Mapping[str, object] = field(default_factory=dict)
    operations: Mapping[str, Mapping[str, object]] = field(default_factory=dict)


def _static() -> Traversable:
    return resources.files("app") / "static"


def _vendor_dir() -> Traversable:
    return _static() / "vendor"


def _digest(body: bytes) -> str:
    return base64.b64encode(hashlib.sha256(body).digest()).decode()


def _vendor(name: str) -> Asset:
    try:
        body = (_vendor_dir() / name).read_bytes()
    except OSError as exc:
        raise AssetError(f"GraphiQL asset {name} is missing from app/static/vendor: reinstall the package") from exc
    digest = _digest(body)
    if digest != VENDOR_SHA256[name]:
        raise AssetError(
            f"GraphiQL asset {name} has SHA-256 {digest}, not the pinned {VENDOR_SHA256[name]} "
            "(scripts/update_graphiql.py replaces the files and their pins together)"
        )
    return Asset(body, _MEDIA_TYPES[name[name.rindex(".") :]], f"sha256-{digest}")


def _own(name: str) -> Asset:
    body = (_static() / name).read_bytes()
    return Asset(body, _MEDIA_TYPES[name[name.rindex(".") :]], f"sha256-{_digest(body)}")


@cache
def assets() -> dict[str, Asset]:
    """Every file the page loads, read and checked once."""
    found = {name: _vendor(name) for name in VENDOR_SHA256}
    found.update((name, _own(name)) for name in OWN_ASSETS)
    return found


@cache
def example_queries() -> tuple[tuple[str, str], ...]:
    """(name, query) of every example, in file-name order."""
    examples = sorted((p for p in (_static() / "examples").iterdir() if p.name.endswith(".graphql")), key=str)
    return tuple((p.name.removesuffix(".graphql"), p.read_text(encoding="utf-8")) for p in examples)


def _operations(query: str) -> list[OperationDefinitionNode]:
    return [d for d in parse(query).definitions if isinstance(d, OperationDefinitionNode)]


@cache
def example_operation_names() -> frozenset[str]:
    """The operation names the examples use: the documents the gateway and developers start from."""
    return frozenset(
        op.name.value for _, query in example_queries() for op in _operations(query) if op.name is not None
    )


def _placeholder(name: str, type_: TypeNode) -> object:
    """What a required variable without a prefilled value shows: `<batch id>` for $batchId, so it is plain what to
    fill in (an empty string would look like a value); null for a type a string cannot stand for."""
    named = type_.type if isinstance(type_, NonNullTypeNode) else type_
    if isinstance(named, NamedTypeNode) and named.name.value in ("ID", "String"):
        return "<" + re.sub(r"(?<=[a-z0-9])([A-Z])", r" \1", name).lower() + ">"
    return None


def example_variables(query: str, prefill: Prefill) -> dict[str, object]:
    """The example's variables: each one the prefill has a value for, and a placeholder for each other required
    one (optional ones without a value keep their defaults)."""
    variables: dict[str, object] = {}
    for op in _operations(query):
        given = {**prefill.variables, **(prefill.operations.get(op.name.value, {}) if op.name else {})}
        for var in op.variable_definitions or ():
            name = var.variable.name.value
            if name in given:
                variables[name] = given[name]
            elif isinstance(var.type, NonNullTypeNode) and var.default_value is None:
                variables[name] = _placeholder(name, var.type)
    return variables


def page_config(endpoint: str, service_id: str, prefill: Prefill) -> dict[str, object]:
    """What ras-graphiql.js starts GraphiQL with."""
    headers = json.dumps({KEY_HEADER: prefill.api_key, SERVICE_HEADER: service_id}, indent=2)
    tabs = [
        {"query": query, "variables": json.dumps(example_variables(query, prefill), indent=2), "headers": headers}
        for _, query in example_queries()
    ]
    return {
        "endpoint": endpoint,
        "keyHeader": KEY_HEADER,
        "serviceHeader": SERVICE_HEADER,
        "headers": headers,
        "tabs": tabs,
    }


def page(endpoint: str, service_id: str, prefill: Prefill | None = None) -> str:
    """The GraphiQL page; `service_id` prefills X-Service-ID, `prefill` the key and the examples' variables."""
    config = json.dumps(page_config(endpoint, service_id, prefill or Prefill()))
    # Inside <script>, "</" would end the element: escape "<" as JSON allows.
    text = (_static() / "graphiql.html").read_text(encoding="utf-8")
    text = text.replace("{{config}}", config.replace("<", "\\u003c"))
    for name, asset in assets().items():
        text = text.replace("{{src:" + name + "}}", html.escape(f"{ASSET_PATH}/{name}?v={asset.version}"))
        text = text.replace("{{sri:" + name + "}}", html.escape(asset.sri))
    return text


def page_response(request: Request, settings: Settings) -> HTMLResponse:
    """The page for a browser's GET of the GraphQL endpoint: X-Service-ID is the first allowed service id, the rest
    comes from the app's `Prefill` (`create_app(graphiql_prefill=…)`), if any."""
    service_ids = settings.allowed_service_ids
    prefill = getattr(request.app.state, PREFILL_STATE, None)
    body = page(str(request.url.path), service_ids[0] if service_ids else "", prefill)
    headers = {
        "Content-Security-Policy": CONTENT_SECURITY_POLICY,
        "X-Content-Type-Options": "nosniff",
        # It may carry `ras dev`'s key: not for any cache.
        "Cache-Control": "no-store",
    }
    return HTMLResponse(body, headers=headers)


def asset_endpoint(compression: Compression) -> Callable[[Request], Awaitable[Response]]:
    """The endpoint of the page's files: gzipped (once per file and process, in a worker thread) where the request
    prefers it."""

    async def endpoint(request: Request) -> Response:
        name = request.path_params["name"]
        asset = assets().get(name)
        if asset is None:
            return PlainTextResponse("Not Found", status_code=404)
        # The page names each file with its content's version (?v=…), so a cached copy is never stale.
        headers = {"Cache-Control": "public, max-age=86400", "X-Content-Type-Options": "nosniff"}
        if not compression.enabled:
            return Response(asset.body, media_type=asset.media_type, headers=headers)
        headers["Vary"] = "Accept-Encoding"
        if len(asset.body) < compression.min_bytes or not compression.wanted(request.headers.get("accept-encoding")):
            return Response(asset.body, media_type=asset.media_type, headers=headers)
        body = _gzipped.get(name) or await asyncio.to_thread(gzipped, name)
        headers["Content-Encoding"] = GZIP
        return Response(body, media_type=asset.media_type, headers=headers)

    return endpoint


_gzipped: dict[str, bytes] = {}
_gzipping = threading.Lock()


def gzipped(name: str) -> bytes:
    """The gzip form of the page's file `name`, compressed on the first call only (the lock keeps two first
    requests from compressing it twice)."""
    with _gzipping:
        found = _gzipped.get(name)
        if found is None:
            found = _gzipped[name] = gzip.compress(assets()[name].body, ASSET_LEVEL, mtime=0)
            GZIP_COMPRESSIONS.labels("asset").inc()
        return found
