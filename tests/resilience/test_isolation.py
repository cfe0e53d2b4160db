"""Isolation: with X-User-ID, nothing of another user's leaks through any entry point, cached or not; refused
requests never touch the cache; the API key is compared in constant time; SQL carries values only as parameters.

Two teachers, alice and bob, each with batches, essays and results. The read scenarios run against real `ras serve`
processes (cache on and cache off); the SQL checks also run in-process, where every statement can be seen.

One module (about 660 lines): each section is one promise of the same review (isolation, refused requests, the key
comparison, SQL values as parameters); the first and the injection checks share the two users' data and the entry
points above.
"""

from __future__ import annotations

import ast
import hmac
import json
import random
import re
import time
import urllib.parse
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from redis.asyncio import Redis
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine

import app.auth
from app.auth import check
from app.graphql.cursors import batch_cursor, essay_cursor
from app.main import create_app
from devstack.demo import batch_life, registered, slot_assigned
from infra.settings import Settings
from tests.helpers import ROOT, figures
from tests.helpers.events import EPOCH, Message, project
from tests.resilience.conftest import AUTH, SECURITY_API_KEY, SERVICE_ID, SecurityApi, StartSecurityApi

ALICE = "alice-7c1e"
BOB = "bob-4d2a"
MARK = "zq9"  # in every injection payload, so a payload that reached SQL text is found by a substring search
PAYLOADS = [
    f"{MARK}' OR 1=1 --",
    f'{MARK}"; DROP TABLE batches; --',
    f"{MARK}'; SELECT pg_sleep(3); --",
    f"{MARK}' UNION SELECT batch_id, user_id FROM batches --",  # noqa: S608 (a payload, never run as a query)
    f"{MARK}%' OR '%'='",
    f"{MARK}\\'; DELETE FROM essays WHERE ''='",  # noqa: S608 (a payload, never run as a query)
    f"{MARK}$1 :ids ?",
    f"{MARK}\u0000' OR 1=1",
    f"{MARK} Ω≈ç√∫ 𝕳𝖊𝖑𝖑𝖔 🎉 \u202egnp.exe",
    f"{MARK}../../etc/passwd",
    MARK + "A" * 10_000,
]
TABLES = ("batches", "batch_facts", "essays", "phase_results", "consumer_positions", "quarantine")


# --- the two users' data ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Owned:
    batches: list[str]
    essays: list[str]
    assignment: str | None


async def _seed(engine: AsyncEngine) -> dict[str, Owned]:
    rng = random.Random(8)
    messages: list[Message] = []
    for user in (ALICE, BOB):
        for _ in range(2):
            messages += batch_life(rng, "gen2", user, 3, 0.3, EPOCH)
    # An essay of bob's whose batch is not registered yet: invisible to every scoped caller.
    messages.append(slot_assigned("gen2", "bob-unregistered-batch", "bob-loose-essay", EPOCH))
    await project(engine, messages)
    owned: dict[str, Owned] = {}
    async with engine.connect() as conn:
        for user in (ALICE, BOB):
            batches = [
                r[0] for r in await conn.execute(text("SELECT batch_id FROM batches WHERE user_id = :u"), {"u": user})
            ]
            essays = [
                r[0]
                for r in await conn.execute(
                    text("SELECT essay_id FROM essays WHERE batch_id = ANY(CAST(:b AS text[]))"), {"b": batches}
                )
            ]
            assignment = (
                await conn.execute(text("SELECT max(assignment_id) FROM batches WHERE user_id = :u"), {"u": user})
            ).scalar_one()
            owned[user] = Owned(batches, essays, assignment)
    owned[BOB].essays.append("bob-loose-essay")
    return owned


def _leaks(body: str, other: Owned, other_user: str, asked: str = "") -> list[str]:
    """The other user's ids in a response, except those the caller sent itself (a 404 may quote the id asked)."""
    return [m for m in [other_user, *other.batches, *other.essays] if m in body and m not in asked]


# --- every entry point ------------------------------------------------------------------------------------------

BATCH = "query($id: ID!) { batch(id: $id) { id userId essays { nodes { id batch { id userId } } } } }"
LIST = "query { batches(first: 100) { totalCount nodes { id userId essays(first: 10) { nodes { id batchId } } } } }"
LIST_AFTER = "query($after: String) { batches(first: 100, after: $after) { nodes { id userId } } }"
LIST_OF = "query($user: String) { batches(userId: $user) { totalCount nodes { id userId } } }"
LIST_ASSIGNMENT = "query($a: String) { batches(assignmentId: $a) { totalCount nodes { id userId } } }"
ESSAY = "query($id: ID!) { essay(id: $id) { id batchId batch { id userId } phaseResults { phase essayId batchId } } }"
ALIASED = (
    "query($mine: ID!, $theirs: ID!) { mine: batch(id: $mine) { id } theirs: batch(id: $theirs) { id userId } "
    "list: batches(first: 100) { nodes { id } } }"
)
FRAGMENTS = (
    "query($id: ID!, $essay: ID!) { ...Q } fragment Q on Query { batch(id: $id) { ...B } "
    "essay(id: $essay) { ... on Essay { id batch { ...B } } } } "
    "fragment B on Batch { id userId essays { nodes { id } } }"
)
NESTED = (
    "query($id: ID!) { essay(id: $id) { batch { essays { nodes { id batch { userId "
    "essays(first: 5) { nodes { id } } } } } } } }"
)


@dataclass(frozen=True)
class Probe:
    name: str
    kind: str  # "graphql", "graphql-get" or "rest"
    target: str  # a query, or a REST path
    variables: Mapping[str, Any]


def _probes(owned: dict[str, Owned], bob_cursor: str) -> list[Probe]:
    alice, bob = owned[ALICE], owned[BOB]
    return [
        Probe("batch(bob's id)", "graphql", BATCH, {"id": bob.batches[0]}),
        Probe("batch(alice's id)", "graphql", BATCH, {"id": alice.batches[0]}),
        Probe("batches", "graphql", LIST, {}),
        Probe("batches via GET", "graphql-get", LIST, {}),
        Probe("batches after bob's cursor", "graphql", LIST_AFTER, {"after": bob_cursor}),
        Probe("batches(userId: bob)", "graphql", LIST_OF, {"user": BOB}),
        Probe("batches(assignmentId: bob's)", "graphql", LIST_ASSIGNMENT, {"a": bob.assignment}),
        Probe("essay(bob's id)", "graphql", ESSAY, {"id": bob.essays[0]}),
        Probe("essay(bob's unlinked essay)", "graphql", ESSAY, {"id": "bob-loose-essay"}),
        Probe("essay(alice's id)", "graphql", ESSAY, {"id": alice.essays[0]}),
        Probe(
            "aliases over alice's and bob's batch",
            "graphql",
            ALIASED,
            {"mine": alice.batches[0], "theirs": bob.batches[0]},
        ),
        Probe(
            "fragments over bob's batch and essay", "graphql", FRAGMENTS, {"id": bob.batches[0], "essay": bob.essays[0]}
        ),
        Probe("essay.batch.essays nested", "graphql", NESTED, {"id": alice.essays[0]}),
        Probe("essay.batch.essays nested (bob's)", "graphql", NESTED, {"id": bob.essays[0]}),
        Probe("REST status of bob's batch", "rest", f"/batches/{bob.batches[0]}/status", {}),
        Probe("REST status of alice's batch", "rest", f"/batches/{alice.batches[0]}/status", {}),
        Probe("REST list of bob", "rest", f"/batches/user/{BOB}", {}),
        Probe("REST list of alice", "rest", f"/batches/user/{ALICE}", {}),
        Probe("REST list of alice, filtered", "rest", f"/batches/user/{ALICE}", {"status": "completed_successfully"}),
    ]


async def _send(api: SecurityApi, probe: Probe, user: str | None) -> httpx.Response:
    if probe.kind == "graphql":
        return await api.graphql(probe.target, probe.variables, user=user)
    headers = dict(AUTH) if user is None else {**AUTH, "X-User-ID": user}
    if probe.kind == "graphql-get":
        params = {"query": probe.target, "variables": json.dumps(probe.variables)}
        return await api.client.get("/graphql", params=params, headers=headers)
    return await api.rest(probe.target, user=user, params=dict(probe.variables) or None)


def _cache_status(response: httpx.Response) -> str:
    if "x-cache" in response.headers:
        return response.headers["x-cache"]
    try:
        return str(response.json().get("extensions", {}).get("cache", {}).get("status", "none"))
    except ValueError:
        return "none"


async def test_no_entry_point_returns_another_users_data_cached_or_not(
    engine: AsyncEngine, security_api_server: StartSecurityApi
) -> None:
    owned = await _seed(engine)
    cached = await security_api_server()
    uncached = await security_api_server(RAS_CACHE_ENABLED="false")
    # A cursor from bob's own list, replayed by alice: it positions the list, it must not widen it.
    bob_page = await cached.graphql("{ batches(first: 1) { pageInfo { endCursor } } }", user=BOB)
    bob_cursor = bob_page.json()["data"]["batches"]["pageInfo"]["endCursor"]
    probes = _probes(owned, bob_cursor)

    statuses: Counter[str] = Counter()
    checked = 0
    for api in (cached, uncached):
        for probe in probes:
            # Unscoped and bob first, so a cache keyed too loosely would hand their entries to alice.
            for user in (None, BOB):
                await _send(api, probe, user)
            for attempt in range(2):
                response = await _send(api, probe, ALICE)
                statuses[_cache_status(response)] += 1
                checked += 1
                body = response.text
                assert response.status_code in (200, 403, 404), (probe.name, response.status_code, body[:300])
                leaks = _leaks(body, owned[BOB], BOB, asked=probe.target + json.dumps(probe.variables))
                assert not leaks, (probe.name, attempt, leaks)
                assert "INTERNAL" not in body, (probe.name, body[:300])
            # And alice's own data is there: an answer that is empty everywhere would pass the checks above.
            if probe.name == "batches":
                nodes = response.json()["data"]["batches"]["nodes"]
                assert sorted(n["id"] for n in nodes) == sorted(owned[ALICE].batches), "alice sees all of hers"
            if probe.name == "batch(alice's id)":
                assert response.json()["data"]["batch"]["userId"] == ALICE
            if probe.name == "aliases over alice's and bob's batch":
                answered = response.json()["data"]
                assert answered["mine"] == {"id": owned[ALICE].batches[0]} and answered["theirs"] is None
            if probe.name == "essay.batch.essays nested":
                essays = response.json()["data"]["essay"]["batch"]["essays"]["nodes"]
                assert essays and {e["batch"]["userId"] for e in essays} == {ALICE}
            if probe.name == "REST status of alice's batch":
                assert response.status_code == 200 and response.json()["user_id"] == ALICE
            if probe.name == "REST list of alice":
                assert response.json()["pagination"]["total"] == len(owned[ALICE].batches)
            if probe.name == "batches(userId: bob)":
                assert response.json()["errors"][0]["extensions"]["code"] == "FORBIDDEN"
            if probe.name == "REST list of bob":
                assert response.status_code == 403
            if probe.name == "REST status of bob's batch":
                assert response.status_code == 404 and response.json()["error"] == "Batch not found"

    # The second of each pair of alice's requests to the cached server must have been a hit at least for the
    # lists and the found batch, or this test would not have exercised the cache at all.
    assert statuses["hit"] >= 6, statuses
    figures.report(
        "isolation",
        probes=len(probes),
        alice_requests=checked,
        leaks=0,
        cache_hits=statuses["hit"],
        cache_misses=statuses["miss"],
        uncached=statuses["bypass"] + statuses["none"],
        servers="cache-on,cache-off",
    )


# --- refused requests and the cache -----------------------------------------------------------------------------


async def _keys(redis: Redis, prefix: str) -> set[bytes]:
    """Every key of the prefix: the cache's carry it as a hash tag (`{P}:…`, infra/cache_keys.py), the rest bare."""
    return {key for match in (f"{{{prefix}}}:*", f"{prefix}:*") async for key in redis.scan_iter(match=match)}


REFUSED_HEADERS = {
    "no credentials": {},
    "no service id": {"X-Internal-API-Key": SECURITY_API_KEY},
    "wrong key": {"X-Internal-API-Key": SECURITY_API_KEY[:-1] + "x", "X-Service-ID": SERVICE_ID},
    "unknown service": {"X-Internal-API-Key": SECURITY_API_KEY, "X-Service-ID": "evil-service"},
    "empty user": {**AUTH, "X-User-ID": ""},
}


async def test_refused_requests_never_reach_the_cache(
    engine: AsyncEngine, security_api_server: StartSecurityApi, redis_url: str
) -> None:
    owned = await _seed(engine)
    api = await security_api_server()
    redis = Redis.from_url(redis_url)
    try:
        # Authenticated first: these entries exist, so a refused request that consulted the cache would get them.
        for user in (None, ALICE):
            for probe in _probes(owned, "not-a-cursor"):
                await _send(api, probe, user)
        before = await _keys(redis, api.cache_prefix)
        assert any(b":e:" in key for key in before), "the authenticated requests stored entries"

        refused = 0
        for label, headers in REFUSED_HEADERS.items():
            for probe in _probes(owned, "not-a-cursor"):
                user = headers.get("X-User-ID")
                sent = {k: v for k, v in headers.items() if k != "X-User-ID"}
                if probe.kind == "graphql":
                    response = await api.graphql(probe.target, probe.variables, user=user, headers=sent)
                elif probe.kind == "graphql-get":
                    params = {"query": probe.target, "variables": json.dumps(probe.variables)}
                    response = await api.client.get("/graphql", params=params, headers=headers)
                else:
                    response = await api.rest(probe.target, user=user, headers=sent, params=dict(probe.variables))
                assert response.status_code == 401, (label, probe.name, response.text[:200])
                assert "batches" not in response.text and owned[ALICE].batches[0] not in response.text
                refused += 1
        after = await _keys(redis, api.cache_prefix)
    finally:
        await redis.aclose()
    assert after == before, sorted(after ^ before)
    figures.report(
        "refused-requests-vs-cache", refused=refused, redis_keys_before=len(before), redis_keys_after=len(after)
    )


# --- the API key comparison ------------------------------------------------------------------------------------


def test_the_api_key_is_compared_with_a_constant_time_function_only() -> None:
    """Static: app/auth.py compares the key with hmac/secrets.compare_digest and never with ==, != or `in`."""
    tree = ast.parse((ROOT / "app" / "auth.py").read_text())
    constant_time = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and ast.unparse(node.func) in ("hmac.compare_digest", "secrets.compare_digest")
    ]
    assert constant_time, "app/auth.py must compare the API key with hmac.compare_digest"
    key_names = {"key", "expected", "internal_api_key", "api_key"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            names = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
            names |= {n.attr for n in ast.walk(node) if isinstance(n, ast.Attribute)}
            assert not names & key_names, f"line {node.lineno}: {ast.unparse(node)} compares the key directly"


def test_every_key_check_goes_through_compare_digest(monkeypatch: pytest.MonkeyPatch) -> None:
    """Behavioural: the credential check calls compare_digest on the key for right and wrong keys alike, and also when
    the service id is wrong (both checks always run)."""
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    # app/auth.py looks the function up on the hmac module at each call, so the spy sees every comparison.
    monkeypatch.setattr(hmac, "compare_digest", spy)
    settings = Settings(database_url="postgresql+asyncpg://unused/unused", internal_api_key=SecretStr("s3cret-key"))
    cases = {
        "right": ("s3cret-key", "api-gateway-service", True),
        "last character": ("s3cret-kez", "api-gateway-service", False),
        "prefix": ("s3cret-ke", "api-gateway-service", False),
        "longer": ("s3cret-key-and-more", "api-gateway-service", False),
        "case": ("S3CRET-KEY", "api-gateway-service", False),
        "non-ascii": ("s3cret-kéy", "api-gateway-service", False),
        "right key, unknown service": ("s3cret-key", "nobody", False),
    }
    for name, (key, service, accepted) in cases.items():
        calls.clear()
        result = check({"X-Internal-API-Key": key, "X-Service-ID": service}, settings)
        assert (not isinstance(result, app.auth.AuthError)) is accepted, name
        assert calls == [(key.encode(), b"s3cret-key")], (name, calls)
    figures.report("constant-time-key", cases=len(cases), compare_digest_calls=len(cases))


async def test_near_miss_keys_are_refused_by_the_server(security_api_server: StartSecurityApi) -> None:
    api = await security_api_server()
    key = SECURITY_API_KEY.encode()
    variants = {
        "last character": key[:-1] + (b"x" if key[-1:] != b"x" else b"y"),
        "prefix": key[:-1],
        "longer": key + b"0",
        "upper case": key.upper(),
        "latin-1 byte": key + b"\xe9",
        "8 KB": b"k" * 8_192,
    }
    for name, sent in variants.items():
        headers = [(b"X-Internal-API-Key", sent), (b"X-Service-ID", SERVICE_ID.encode())]
        response = await api.client.post("/graphql", json={"query": "{ __typename }"}, headers=headers)
        assert response.status_code == 401, (name, response.text)
        assert response.json()["errors"][0]["message"].startswith("Invalid credentials"), name
    right = await api.client.post("/graphql", json={"query": "{ __typename }"}, headers=AUTH)
    assert right.status_code == 200
    figures.report("near-miss-keys", refused=len(variants), accepted_right_key=1)


# --- SQL injection ---------------------------------------------------------------------------------------------


def _literal(value: str) -> str:
    # A GraphQL string literal: JSON's escapes are GraphQL's (\u0000 included); keep other characters as they are.
    return json.dumps(value, ensure_ascii=False)


def _graphql_cases(owned: dict[str, Owned]) -> Iterator[tuple[str, str, dict[str, Any], str | None]]:
    """(argument, query, variables, X-User-ID) for one payload slot each; `{p}` marks where the payload goes."""
    alice_batch = owned[ALICE].batches[0]
    yield "batch(id)", "query($p: ID!) { batch(id: $p) { id } }", {}, None
    yield "batch(id) literal", "{ batch(id: {p}) { id } }", {}, None
    yield "essay(id)", "query($p: ID!) { essay(id: $p) { id } }", {}, None
    yield "batches(userId)", "query($p: String) { batches(userId: $p) { totalCount nodes { id } } }", {}, None
    yield "batches(assignmentId)", "query($p: String) { batches(assignmentId: $p) { totalCount } }", {}, None
    yield "batches(after)", "query($p: String) { batches(after: $p) { totalCount } }", {}, None
    yield (
        "batches(after) crafted",
        "query($p: String) { batches(after: $p) { nodes { id } } }",
        {"crafted": "batch"},
        None,
    )
    yield "batches(status)", "query($p: [BatchStatus!]) { batches(status: $p) { totalCount } }", {"list": True}, None
    yield (
        "batches(clientStatus)",
        "query($p: [BatchClientStatus!]) { batches(clientStatus: $p) { totalCount } }",
        {"list": True},
        None,
    )
    yield "batches(first)", "query($p: Int) { batches(first: $p) { totalCount } }", {}, None
    essays = "query($b: ID!, $p: String) { batch(id: $b) { essays(after: $p) { nodes { id } } } }"
    yield "Batch.essays(after)", essays, {"b": alice_batch}, None
    yield "Batch.essays(after) crafted", essays, {"b": alice_batch, "crafted": "essay"}, None
    phase = "query($b: ID!, $p: PhaseName!) { batch(id: $b) { essays(phaseStatus: {phase: $p}) { totalCount } } }"
    yield "Batch.essays(phaseStatus)", phase, {"b": alice_batch}, None
    yield "X-User-ID", "{ batches { totalCount nodes { id } } }", {}, "header"


def _prepare(query: str, extra: dict[str, Any], payload: str) -> tuple[str, dict[str, Any]]:
    variables = {k: v for k, v in extra.items() if k not in ("crafted", "list")}
    if "{p}" in query:
        return query.replace("{p}", _literal(payload)), variables
    value: Any = payload
    if extra.get("crafted") == "batch":
        # Well-formed cursors around the payload reach SQL as positions; one from 2000 precedes every batch.
        value = batch_cursor(datetime(2000, 1, 1, tzinfo=UTC), payload)
    elif extra.get("crafted") == "essay":
        value = essay_cursor(payload)  # essay ids here are hex UUIDs, all ordered before the payload
    elif extra.get("list"):
        value = [payload]
    if "$p" in query:
        variables["p"] = value
    return query, variables


def _rest_cases(owned: dict[str, Owned]) -> Iterator[tuple[str, str, dict[str, str] | None, bool]]:
    """(argument, path template, params template, scoped as the payload user)."""
    yield "status/{batch_id}", "/batches/{p}/status", None, False
    yield "user/{user_id}", "/batches/user/{p}", None, False
    yield "user/{user_id} as X-User-ID", "/batches/user/{p}", None, True
    yield "?status", f"/batches/user/{ALICE}", {"status": "{p}"}, False
    yield "?limit", f"/batches/user/{ALICE}", {"limit": "{p}"}, False
    yield "?offset", f"/batches/user/{ALICE}", {"offset": "{p}"}, False


@contextmanager
def _statements(engine: AsyncEngine) -> Iterator[list[str]]:
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        seen.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", record)


async def _row_counts(engine: AsyncEngine) -> dict[str, int]:
    async with engine.connect() as conn:
        # Table names from the constant above, not from input.
        return {t: (await conn.execute(text(f"SELECT count(*) FROM {t}"))).scalar_one() for t in TABLES}  # noqa: S608


def _auth_headers() -> list[tuple[bytes, bytes]]:
    # Bytes, so a payload goes on the wire as UTF-8 (the server reads header bytes as latin-1, as HTTP says).
    return [(name.encode(), value.encode()) for name, value in AUTH.items()]


async def _inject(client: httpx.AsyncClient, owned: dict[str, Owned]) -> Counter[str]:
    """Every payload through every argument; returns the outcomes. Fails on a 5xx, an INTERNAL error or a payload
    that found something. Whether a payload reached SQL (pg_sleep would run there) is seen in the statements, not in
    the time: the in-process run records every one, and the real server must answer exactly as it did."""
    outcomes: Counter[str] = Counter()
    for payload in PAYLOADS:
        for argument, query, extra, user in _graphql_cases(owned):
            sent_query, variables = _prepare(query, extra, payload)
            headers = _auth_headers()
            if user == "header":
                if "\u0000" in payload:
                    continue  # HTTP forbids NUL in a header; clients refuse to send it
                headers.append((b"X-User-ID", payload.encode()))
            response = await client.post(
                "/graphql", json={"query": sent_query, "variables": variables}, headers=headers
            )
            if user == "header" and response.status_code == 400:
                # Outside the header's character set (app/auth.py): refused before anything is read.
                refusal = response.json()["errors"][0]
                assert refusal["extensions"]["code"] == "BAD_USER_INPUT", (payload[:40], refusal)
                assert "X-User-ID" in refusal["message"], (payload[:40], refusal)
                outcomes["graphql X-User-ID refused"] += 1
                continue
            assert response.status_code == 200, (argument, payload[:40], response.text[:300])
            body = response.json()
            codes = {e["extensions"]["code"] for e in body.get("errors", [])}
            assert "INTERNAL" not in codes, (argument, payload[:40], body)
            assert not _found(body), (argument, payload[:40], body)
            outcomes["graphql " + ("/".join(sorted(codes)) if codes else "empty")] += 1
        for argument, template, params, scoped in _rest_cases(owned):
            path = template.replace("{p}", urllib.parse.quote(payload, safe=""))
            sent = {k: v.replace("{p}", payload) for k, v in params.items()} if params else None
            headers = _auth_headers()
            if scoped:
                if "\u0000" in payload:
                    continue
                headers.append((b"X-User-ID", payload.encode()))
            response = await client.get("/internal/v1" + path, params=sent, headers=headers)
            assert response.status_code in (200, 400, 403, 404), (argument, payload[:40], response.text[:300])
            if response.status_code == 200:
                assert response.json()["pagination"]["total"] == 0, (argument, payload[:40], response.text[:300])
            outcomes[f"rest {response.status_code}"] += 1
    return outcomes


def _found(body: dict[str, Any]) -> bool:
    """Whether a GraphQL answer holds any batch or essay, or a non-zero total."""
    found = False

    def walk(value: Any) -> None:
        nonlocal found
        if isinstance(value, dict):
            if value.get("id") is not None or (value.get("totalCount") or 0) > 0:
                found = True
            for v in value.values():
                walk(v)
        elif isinstance(value, list):
            found = found or (bool(value) and all(isinstance(v, dict) for v in value))
            for v in value:
                walk(v)

    walk(body.get("data"))
    return found


async def test_injection_strings_through_every_argument_find_nothing_and_change_nothing(
    engine: AsyncEngine, security_api_server: StartSecurityApi
) -> None:
    owned = await _seed(engine)
    before = await _row_counts(engine)

    # In-process first, with every statement the API sends recorded.
    settings = Settings(
        database_url="postgresql+asyncpg://unused/unused",
        internal_api_key=SecretStr(SECURITY_API_KEY),
        allowed_service_ids=(SERVICE_ID,),
        environment="production",
    )
    transport = httpx.ASGITransport(app=create_app(settings, engine))
    async with httpx.AsyncClient(transport=transport, base_url="http://ras.test") as client:
        with _statements(engine) as statements:
            in_process = await _inject(client, owned)
    carrying = [s for s in statements if MARK in s]
    assert not carrying, carrying[:3]

    # Then against the real server (cache on), which must answer the same way.
    api = await security_api_server()
    started = time.perf_counter()
    served = await _inject(api.client, owned)
    elapsed = time.perf_counter() - started
    assert served == in_process
    assert await _row_counts(engine) == before, "no payload changed a table"
    figures.report(
        "sql-injection-reads",
        payloads=len(PAYLOADS),
        requests=sum(served.values()) * 2,
        statements_seen=len(statements),
        statements_with_payload=len(carrying),
        outcomes=";".join(f"{k}={v}" for k, v in sorted(served.items())),
        served_duration_s=round(elapsed, 2),
        tables_unchanged=True,
    )


async def test_injection_strings_in_events_are_stored_verbatim_as_parameters(engine: AsyncEngine) -> None:
    """The write path: payloads as batch, user, essay ids and file names are stored byte for byte, never as SQL."""
    payloads = [p for p in PAYLOADS if "\u0000" not in p]  # NUL cannot be stored at all (test_bad_events)
    messages = []
    for i, payload in enumerate(payloads):
        batch_id, essay_id = f"{payload}-b{i}", f"{payload}-e{i}"
        messages.append(registered("gen2", batch_id, payload, [essay_id], EPOCH))
        messages.append(slot_assigned("gen2", batch_id, essay_id, EPOCH))
    with _statements(engine) as statements:
        applied = await project(engine, messages)
    assert sum(applied.quarantined.values()) == 0 and sum(applied.applied.values()) == len(messages)
    assert not [s for s in statements if MARK in s]
    async with engine.connect() as conn:
        stored = {
            r.user_id: r.batch_id
            for r in await conn.execute(text("SELECT batch_id, user_id FROM batches WHERE user_id LIKE 'zq9%'"))
        }
    assert stored == {p: f"{p}-b{i}" for i, p in enumerate(payloads)}
    figures.report(
        "sql-injection-writes", events=len(messages), statements=len(statements), stored_verbatim=len(stored)
    )


# --- SQL text is built from names only ---------------------------------------------------------------------------

_SQL_WORDS = re.compile(r"\b(SELECT|INSERT|UPDATE|DELETE|WHERE|FROM|SET|DROP|CREATE|ALTER|LOCK|VALUES|JOIN|LIMIT)\b")


def _is_quote(name: str) -> bool:
    return name in ("_q", "quoted") or "quote" in name


def _identifier_builders(trees: list[ast.Module]) -> set[str]:
    """Private helpers whose every interpolation is a quoted identifier (db/writes.py `_assignments` joins
    `_q(column) = EXCLUDED._q(column)`): what goes in comes out as quoted names only."""
    builders: set[str] = set()
    for tree in trees:
        for node in ast.walk(tree):
            if not isinstance(node, ast.FunctionDef) or not node.name.startswith("_"):
                continue
            pieces = [v for j in ast.walk(node) if isinstance(j, ast.JoinedStr) for v in j.values]
            formatted = [p for p in pieces if isinstance(p, ast.FormattedValue)]
            if formatted and all(
                isinstance(f.value, ast.Call) and _is_quote(ast.unparse(f.value.func)) for f in formatted
            ):
                builders.add(node.name)
    return builders


_BUILDERS: set[str] = set()


def _quoting(call: ast.Call) -> bool:
    """An identifier-quoting helper (db/writes.py `_q`, db/shadow.py `quoted`) or a builder of quoted names only."""
    name = ast.unparse(call.func).rsplit(".", 1)[-1]
    return _is_quote(name) or name in _BUILDERS


def _exposed(node: ast.AST, tainted: set[str]) -> set[str]:
    """Tainted names used in `node` other than as an argument of an identifier-quoting call."""
    if isinstance(node, ast.Call) and _quoting(node):
        return set()
    if isinstance(node, ast.Name):
        return {node.id} & tainted
    found: set[str] = set()
    for child in ast.iter_child_nodes(node):
        found |= _exposed(child, tainted)
    return found


def _tainted(function: ast.FunctionDef | ast.AsyncFunctionDef) -> set[str]:
    """A public function's parameters (its callers' values) and the locals computed from them unquoted."""
    arguments = function.args
    tainted = {a.arg for a in [*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs]} - {"conn", "self"}
    for node in ast.walk(function):
        if isinstance(node, ast.Assign | ast.AnnAssign) and node.value is not None and _exposed(node.value, tainted):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            tainted |= {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
    return tainted


def _sql_building(node: ast.AST) -> Iterator[ast.expr]:
    """The expressions inside `node` that build SQL text: f-strings, %, .format() or + with SQL words in them."""
    for sub in ast.walk(node):
        if isinstance(sub, ast.JoinedStr | ast.BinOp) or (
            isinstance(sub, ast.Call) and isinstance(sub.func, ast.Attribute) and sub.func.attr == "format"
        ):
            words = " ".join(c.value for c in ast.walk(sub) if isinstance(c, ast.Constant) and isinstance(c.value, str))
            if _SQL_WORDS.search(words):
                yield sub


def test_db_modules_build_sql_text_from_names_only() -> None:
    """db/*.py: no SQL text is built from a public function's arguments or values derived from them, except
    identifiers passed through a quoting helper; values reach PostgreSQL as bound parameters only."""
    problems = []
    checked = 0
    # Alembic's migrations are fixed DDL with no runtime values.
    modules = {p: ast.parse(p.read_text()) for p in sorted((ROOT / "db").rglob("*.py")) if "migrations" not in p.parts}
    _BUILDERS.update(_identifier_builders(list(modules.values())))
    for path, tree in modules.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and not node.name.startswith("_"):
                checked += 1
                tainted = _tainted(node)
                for built in _sql_building(node):
                    used = _exposed(built, tainted)
                    if used:
                        problems.append(f"{path.name}:{built.lineno} builds SQL from {sorted(used)}")
                    if isinstance(built, ast.BinOp) and isinstance(built.op, ast.Mod):
                        problems.append(f"{path.name}:{built.lineno} builds SQL with % formatting")
    assert not problems, problems
    figures.report(
        "sql-built-from-names",
        modules=len(modules),
        public_functions_checked=checked,
        identifier_builders=",".join(sorted(_BUILDERS)),
        problems=len(problems),
    )
