"""GraphiQL for developers, served wholly by this service: no CDN, nothing fetched at run time.

GraphiQL 2.4.7, React 17.0.2 and ReactDOM 17.0.2 (all MIT-licensed) come from the PyPI package
`graphene-django-graphiql-static` (pinned in pyproject.toml), which ships the upstream npm builds; only its static
files are read, none of its (Django) code is imported. The files are pinned by SHA-256 below, which are those of the
official npm releases (the package appends a final newline to the GraphiQL files, nothing else), and the page loads
them with Subresource Integrity, so a changed file is refused both here and by the browser.

The page itself opens one tab per example query in app/static/examples and shows the headers editor, where a
developer enters X-Internal-API-Key and X-Service-ID (never stored by the browser).
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from importlib.resources.abc import Traversable

from graphql import NonNullTypeNode, OperationDefinitionNode, parse
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response

ASSET_PATH = "/graphiql"
VENDOR_PACKAGE = "graphene_django_graphiql_static"

# name → SHA-256 (base64) of the vendor files as verified against the npm releases listed in the module doc.
VENDOR_SHA256 = {
    "graphiql.min.js": "xWTeBbldGE4sW6XOryY1gh9r+S8tV3e3TZEAT/a1kdE=",
    "graphiql.min.css": "xs1Lg/AcXh/0l113vJVxhNzm3sAVX7+cxNkZDrqKe50=",
    "react.production.min.js": "Ipu/TQ50iCCVZBUsZyNJfxrDk0E2yhaEIz0vqI+kFG8=",
    "react-dom.production.min.js": "nbMykgB6tsOFJ7OdVmPpdqMFVk4ZsqWocT6issAPUF0=",
}
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


def _static() -> Traversable:
    return resources.files("app") / "static"


def _vendor(name: str) -> Asset:
    path = resources.files(VENDOR_PACKAGE) / "static" / VENDOR_PACKAGE / name
    try:
        body = path.read_bytes()
    except OSError as exc:
        raise AssetError(f"GraphiQL asset {name} is missing: is {VENDOR_PACKAGE} installed?") from exc
    digest = base64.b64encode(hashlib.sha256(body).digest()).decode()
    if digest != VENDOR_SHA256[name]:
        raise AssetError(f"GraphiQL asset {name} has SHA-256 {digest}, not the pinned {VENDOR_SHA256[name]}")
    return Asset(body, _MEDIA_TYPES[name[name.rindex(".") :]], f"sha256-{digest}")


def _own(name: str) -> Asset:
    body = (_static() / name).read_bytes()
    digest = base64.b64encode(hashlib.sha256(body).digest()).decode()
    return Asset(body, _MEDIA_TYPES[name[name.rindex(".") :]], f"sha256-{digest}")


@cache
def assets() -> dict[str, Asset]:
    """Every file the page loads, read and checked once."""
    found = {name: _vendor(name) for name in VENDOR_SHA256}
    found.update((name, _own(name)) for name in OWN_ASSETS)
    return found


def _required_variables(query: str) -> dict[str, str]:
    """An empty value for each required variable of the example, so its Variables tab shows what to fill in."""
    variables: dict[str, str] = {}
    for definition in parse(query).definitions:
        if isinstance(definition, OperationDefinitionNode):
            for var in definition.variable_definitions or ():
                if isinstance(var.type, NonNullTypeNode) and var.default_value is None:
                    variables[var.variable.name.value] = ""
    return variables


@cache
def example_queries() -> tuple[tuple[str, str], ...]:
    """(name, query) of every example, in file-name order."""
    examples = sorted((p for p in (_static() / "examples").iterdir() if p.name.endswith(".graphql")), key=str)
    return tuple((p.name.removesuffix(".graphql"), p.read_text(encoding="utf-8")) for p in examples)


def example_operation_names() -> set[str]:
    """The operation names the examples use: the documents the gateway and developers start from."""
    return {
        definition.name.value
        for _, query in example_queries()
        for definition in parse(query).definitions
        if isinstance(definition, OperationDefinitionNode) and definition.name is not None
    }


def _config(endpoint: str, service_id: str) -> str:
    headers = {"X-Internal-API-Key": "", "X-Service-ID": service_id}
    tabs = [
        {"query": query, "variables": json.dumps(_required_variables(query), indent=2), "headers": None}
        for _, query in example_queries()
    ]
    config = {"endpoint": endpoint, "headers": json.dumps(headers, indent=2), "tabs": tabs}
    # Inside <script>, "</" would end the element: escape "<" as JSON allows.
    return json.dumps(config).replace("<", "\\u003c")


def page(endpoint: str, service_id: str) -> str:
    """The GraphiQL page; `service_id` prefills X-Service-ID (never the API key)."""
    text = (_static() / "graphiql.html").read_text(encoding="utf-8")
    text = text.replace("{{assets}}", ASSET_PATH).replace("{{config}}", _config(endpoint, service_id))
    for name, asset in assets().items():
        text = text.replace("{{sri:" + name + "}}", html.escape(asset.sri))
    return text


def page_response(endpoint: str, service_id: str) -> HTMLResponse:
    headers = {"Content-Security-Policy": CONTENT_SECURITY_POLICY, "X-Content-Type-Options": "nosniff"}
    return HTMLResponse(page(endpoint, service_id), headers=headers)


async def asset_endpoint(request: Request) -> Response:
    asset = assets().get(request.path_params["name"])
    if asset is None:
        return PlainTextResponse("Not Found", status_code=404)
    headers = {"Cache-Control": "public, max-age=86400", "X-Content-Type-Options": "nosniff"}
    return Response(asset.body, media_type=asset.media_type, headers=headers)
