"""GraphiQL: served by the service itself (no CDN), with pinned vendored builds, a strict CSP, the examples in tabs
that all carry the headers and real (or plainly placeholder) variables, and a real browser's view of it."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import os
import re
import shutil
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from graphql import parse, validate
from sqlalchemy.ext.asyncio import AsyncEngine

from app import graphiql
from app.graphiql import ASSET_PATH, VENDOR_SHA256, VENDOR_VERSIONS, Prefill, example_queries
from app.graphql.schema import build_schema
from app.main import create_app
from scripts import update_graphiql
from tests.app.graphql.conftest import FIXTURE_BATCH, FIXTURE_USER, Api, settings_for

BROWSER = {"Accept": "text/html,application/xhtml+xml"}
VENDOR = Path(graphiql.__file__).parent / "static" / "vendor"
chromium = pytest.mark.skipif(shutil.which("chromium") is None, reason="needs chromium (apt-get install chromium)")


def page_config(page: str) -> dict[str, Any]:
    found = re.search(r'id="ras-graphiql-config">(.*?)</script>', page, re.S)
    assert found is not None
    config: dict[str, Any] = json.loads(found.group(1))
    return config


async def test_page_loads_only_this_services_assets(api: Api) -> None:
    response = await api.client.get("/graphql", headers=BROWSER)  # no credentials: the page holds no data
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["cache-control"] == "no-store"
    csp = response.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp and "connect-src 'self'" in csp
    page = response.text
    assert "//" not in re.sub(r"<!--.*?-->", "", page).replace("http://www.w3.org", "")  # no absolute URL at all
    tags = re.findall(r"<(?:script|link)[^>]+(?:src|href)=\"/[^>]+>", page)
    assert len(tags) == len(graphiql.assets()) == 6  # GraphiQL's JS and CSS, React, ReactDOM, ours (JS and CSS)
    for tag in tags:
        source = re.search(r'(?:src|href)="([^"]+)"', tag).group(1)  # type: ignore[union-attr]
        name, version = re.fullmatch(re.escape(ASSET_PATH) + r"/([^/?]+)\?v=([\w-]+)", source).groups()  # type: ignore[union-attr]
        asset = await api.client.get(source)
        assert asset.status_code == 200, source
        digest = base64.b64encode(hashlib.sha256(asset.content).digest()).decode()
        assert f'integrity="sha256-{digest}"' in tag  # the browser checks every file, ours included
        assert version == graphiql.assets()[name].version
        if name in VENDOR_SHA256:
            assert digest == VENDOR_SHA256[name]


async def test_every_tab_has_the_service_headers_and_plain_placeholders(api: Api) -> None:
    """As `ras serve` serves it: the key left for the developer, never taken from the settings."""
    config = page_config((await api.client.get("/graphql", headers=BROWSER)).text)
    assert config["endpoint"] == "/graphql"
    headers = json.loads(config["headers"])
    assert headers == {"X-Internal-API-Key": "", "X-Service-ID": "api-gateway-service"}
    assert [tab["query"] for tab in config["tabs"]] == [query for _, query in example_queries()]
    assert all(tab["headers"] == config["headers"] for tab in config["tabs"])
    variables = [json.loads(tab["variables"]) for tab in config["tabs"]]
    assert variables == [
        {},  # TeacherBatches: every variable optional
        {"batchId": "<batch id>"},
        {"batchId": "<batch id>"},
        {"essayId": "<essay id>"},
        {},
        {"batchId": "<batch id>"},
    ]


async def test_the_app_prefill_fills_the_key_and_the_ids_into_every_tab(engine: AsyncEngine) -> None:
    """As `ras dev` serves it: its key and the demo's ids (by variable, then by operation)."""
    prefill = Prefill(
        api_key="dev-key",
        variables={"batchId": "b-1", "essayId": "e-1", "userId": "teacher-01"},
        operations={"LiveBatchProgress": {"batchId": "b-newest"}},
    )
    app = create_app(settings_for(), engine, graphiql_prefill=prefill)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ras.test") as client:
        config = page_config((await client.get("/graphql", headers=BROWSER)).text)
    expected = {"X-Internal-API-Key": "dev-key", "X-Service-ID": "api-gateway-service"}
    assert [json.loads(tab["headers"]) for tab in config["tabs"]] == [expected] * len(example_queries())
    assert [json.loads(tab["variables"]) for tab in config["tabs"]] == [
        {"userId": "teacher-01"},  # an optional variable is filled when the prefill has it
        {"batchId": "b-1"},
        {"batchId": "b-1"},
        {"essayId": "e-1"},
        {},
        {"batchId": "b-newest"},
    ]


async def test_config_cannot_end_the_script_element(engine: AsyncEngine) -> None:
    app = create_app(settings_for(), engine, graphiql_prefill=Prefill(variables={"batchId": "</script><b>"}))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ras.test") as client:
        page = (await client.get("/graphql", headers=BROWSER)).text
    assert "</script><b>" not in page
    assert json.loads(page_config(page)["tabs"][1]["variables"]) == {"batchId": "</script><b>"}


async def test_unknown_asset_is_404(api: Api) -> None:
    assert (await api.client.get(f"{ASSET_PATH}/../app/main.py")).status_code == 404
    assert (await api.client.get(f"{ASSET_PATH}/nope.js")).status_code == 404
    assert (await api.client.get(f"{ASSET_PATH}/LICENSE.react")).status_code == 404  # kept, not served


def test_examples_are_valid_queries() -> None:
    schema = build_schema()._schema
    names = [name for name, _ in example_queries()]
    assert len(names) >= 5
    for name, query in example_queries():
        assert validate(schema, parse(query)) == [], name


# --- the vendored files --------------------------------------------------------------------------------------------


def test_vendored_files_are_the_pinned_releases_with_their_licences() -> None:
    assert VENDOR_VERSIONS["graphiql"].startswith("4.")  # GraphiQL 5 has no UMD build
    assert VENDOR_VERSIONS["react"] == VENDOR_VERSIONS["react-dom"] and VENDOR_VERSIONS["react"].startswith("18.")
    assert sorted(p.name for p in VENDOR.iterdir()) == sorted(
        [*VENDOR_SHA256, "LICENSE.graphiql", "LICENSE.react", "LICENSE.react-dom"]
    )
    for licence in ("LICENSE.graphiql", "LICENSE.react", "LICENSE.react-dom"):
        assert "MIT License" in (VENDOR / licence).read_text()
    head = (VENDOR / "graphiql.min.js").read_bytes()[:600].decode()
    assert ".GraphiQL=" in head and "e.React,e.ReactDOM" in head  # the UMD global the page uses


@pytest.fixture
def altered_vendor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A copy of app/static/vendor the app reads instead, for a test to change."""
    copy = tmp_path / "vendor"
    shutil.copytree(VENDOR, copy)
    monkeypatch.setattr(graphiql, "_vendor_dir", lambda: copy)
    graphiql.assets.cache_clear()
    try:
        yield copy
    finally:
        graphiql.assets.cache_clear()


def test_an_altered_vendor_file_stops_start_up(altered_vendor: Path) -> None:
    script = altered_vendor / "graphiql.min.js"
    script.write_bytes(script.read_bytes().replace(b"GraphiQL", b"GraphiQ1", 1))
    with pytest.raises(graphiql.AssetError, match=r"graphiql\.min\.js has SHA-256 .* not the pinned"):
        create_app(settings_for())


def test_a_missing_vendor_file_stops_start_up(altered_vendor: Path) -> None:
    (altered_vendor / "react-dom.production.min.js").unlink()
    with pytest.raises(graphiql.AssetError, match=r"react-dom\.production\.min\.js is missing"):
        create_app(settings_for())


def test_an_untouched_copy_starts(altered_vendor: Path) -> None:
    create_app(settings_for())  # the check itself, not the copy, made the two tests above fail


# --- scripts/update_graphiql.py (offline: npm tarballs made here) ---------------------------------------------------


def _tarball(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        for name, body in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(body)
            archive.addfile(info, io.BytesIO(body))
    return path


def _package(tmp: Path, name: str, version: str, extra: dict[str, bytes], **manifest: Any) -> update_graphiql.Package:
    files = {"package/package.json": json.dumps({"name": name, "version": version, **manifest}).encode()}
    files["package/LICENSE"] = b"MIT License\n"
    files.update(extra)
    tarball = _tarball(tmp / f"{name}-{version}.tgz", files)
    return update_graphiql.read_package(name, tarball, "sha512-test")


UMD = b'!function(e,t){"object"==typeof exports?module.exports=t(require("react")):(e=e||self)'


def _release(tmp: Path, graphiql_head: bytes = UMD, peers: str = "^18 || ^19") -> Any:
    tmp.mkdir(parents=True, exist_ok=True)
    react_umd = {"package/umd/react.production.min.js": UMD + b".React=t()"}
    dom_umd = {"package/umd/react-dom.production.min.js": UMD + b".ReactDOM=t()"}
    gql = {
        "package/graphiql.min.js": graphiql_head + b".GraphiQL=t(e.React,e.ReactDOM)}(this,function(){})",
        "package/graphiql.min.css": b".graphiql-container{}",
    }
    return {
        "graphiql": _package(tmp, "graphiql", "4.9.0", gql, peerDependencies={"react": peers}),
        "react": _package(tmp, "react", "18.3.1", react_umd),
        "react-dom": _package(tmp, "react-dom", "18.3.1", dom_umd),
    }


def test_update_script_copies_checks_and_pins(tmp_path: Path) -> None:
    packages = _release(tmp_path)
    update_graphiql.check(packages)
    vendor = tmp_path / "vendor"
    vendor.mkdir()
    (vendor / "stale.js").write_text("from an earlier set")
    assert update_graphiql.copy_files(packages, vendor) == sorted(
        [*VENDOR_SHA256, "LICENSE.graphiql", "LICENSE.react", "LICENSE.react-dom"]
    )
    assert not (vendor / "stale.js").exists()
    pins, original = tmp_path / "graphiql.py", Path(graphiql.__file__).read_text()
    pins.write_text(original)
    update_graphiql.write_pins(update_graphiql.pins_block(packages), pins)
    before, rest = pins.read_text().split(update_graphiql.BEGIN)
    block, after = rest.split(update_graphiql.END)
    assert (before, after) == (original.split(update_graphiql.BEGIN)[0], original.split(update_graphiql.END)[1])
    namespace: dict[str, Any] = {}
    exec(block.split("\n", 1)[1], namespace)  # noqa: S102 (the block just written, made of literals)
    assert namespace["VENDOR_VERSIONS"] == {"graphiql": "4.9.0", "react": "18.3.1", "react-dom": "18.3.1"}
    assert namespace["VENDOR_SHA256"] == {
        name: base64.b64encode(hashlib.sha256((vendor / name).read_bytes()).digest()).decode() for name in VENDOR_SHA256
    }


def test_update_script_refuses_what_the_page_cannot_load(tmp_path: Path) -> None:
    with pytest.raises(update_graphiql.UpdateError, match="not a UMD build"):
        update_graphiql.check(_release(tmp_path / "esm", graphiql_head=b"export {"))
    with pytest.raises(update_graphiql.UpdateError, match="wants react"):
        update_graphiql.check(_release(tmp_path / "peers", peers="^19"))
    with pytest.raises(update_graphiql.UpdateError, match=r"has no package/umd/react\.production\.min\.js"):
        _package(tmp_path, "react", "19.0.0", {})  # React 19 ships no UMD build


# --- a real browser ------------------------------------------------------------------------------------------------


def _screenshots(tmp_path: Path, name: str) -> Path:
    """RAS_GRAPHIQL_SCREENSHOTS=DIR keeps the PNGs (DIR/NAME/…); otherwise they go with the test's tmp_path."""
    kept = os.environ.get("RAS_GRAPHIQL_SCREENSHOTS")
    return (Path(kept) if kept else tmp_path) / name


@chromium
async def test_graphiql_in_headless_chromium_as_under_ras_dev(
    engine: AsyncEngine, database_url: str, redis_url: str, gen2: None, tmp_path: Path
) -> None:
    """Key and ids in the page: the Docs show the schema at once, every tab runs its example and gets data."""
    from scripts.check_graphiql import check

    result = await asyncio.to_thread(check, database_url, redis_url, _screenshots(tmp_path, "ras-dev"))
    assert result.problems == []
    assert [tab.title for tab in result.tabs] == [
        "TeacherBatches",
        "BatchDetail",
        "FailedSpellchecks",
        "EssayResults",
        "Freshness",
        "LiveBatchProgress",
    ]
    assert result.tabs[0].variables == {"userId": FIXTURE_USER}
    assert FIXTURE_BATCH in result.tabs[0].response  # the first example, a batch list, returned the fixture batch
    assert all(tab.skipped == "" for tab in result.tabs)  # the subscription ran too
    # The Docs, and each tab with its Variables then its Headers.
    assert len(result.screenshots) == 1 + 2 * len(result.tabs) and all(p.stat().st_size for p in result.screenshots)


@chromium
async def test_graphiql_in_headless_chromium_with_the_key_entered_once(
    engine: AsyncEngine, database_url: str, gen2: None, tmp_path: Path
) -> None:
    """As under `ras serve`: the Docs wait for the key instead of failing, and load once it is entered in the first
    tab; every other tab then shows and sends it (the subscription is left out: no Redis here)."""
    from scripts.check_graphiql import check

    result = await asyncio.to_thread(check, database_url, None, _screenshots(tmp_path, "enter-key"), True)
    assert result.problems == []
    assert result.docs_before_key == "waiting"
    assert [tab.skipped != "" for tab in result.tabs] == [False] * 5 + [True]
