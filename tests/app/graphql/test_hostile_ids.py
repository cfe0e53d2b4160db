"""Ids that no stored value can be: a NUL, text that is not UTF-8 (raw bytes, a lone surrogate escape), an id of
50,000 characters, in every place an id or cursor is given (a variable, a literal, a GET parameter). Each is
refused with BAD_USER_INPUT or answered as not found, never an INTERNAL error or a database error."""

from __future__ import annotations

import pytest

from tests.app.graphql.conftest import AUTH, FIXTURE_BATCH, Api

BATCH = "query($id: ID!) { batch(id: $id) { id } }"
ESSAY = "query($id: ID!) { essay(id: $id) { id } }"
ESSAYS_AFTER = "query($id: ID!, $after: String) { batch(id: $id) { essays(first: 2, after: $after) { totalCount } } }"
NUL = "must not contain the NUL character"

REFUSED = [
    ("a NUL in a batch id", BATCH, {"id": f"{FIXTURE_BATCH}\u0000"}, NUL),
    ("a NUL in an essay id", ESSAY, {"id": "\u0000"}, NUL),
    ("a NUL in a cursor", ESSAYS_AFTER, {"id": FIXTURE_BATCH, "after": "a\u0000"}, NUL),
    ("a NUL in a literal", '{ batch(id: "x\\u0000") { id } }', {}, NUL),
    ("a cursor of garbage", ESSAYS_AFTER, {"id": FIXTURE_BATCH, "after": "\u00ff\u00fe"}, "Invalid cursor"),
]


@pytest.mark.parametrize(("what", "query", "variables", "says"), REFUSED, ids=[r[0] for r in REFUSED])
async def test_ids_no_value_can_be_are_refused(
    api: Api, gen2: None, what: str, query: str, variables: dict[str, str], says: str
) -> None:
    response = await api.client.post("/graphql", json={"query": query, "variables": variables}, headers=AUTH)
    assert response.status_code == 200, response.text
    errors = response.json()["errors"]
    assert errors[0]["extensions"]["code"] == "BAD_USER_INPUT", (what, errors)
    assert says in errors[0]["message"], (what, errors)


@pytest.mark.parametrize(
    "body",
    [
        b'{"query": "query($id: ID!) { batch(id: $id) { id } }", "variables": {"id": "\xff\xfe"}}',
        b'{"query": "query($id: ID!) { batch(id: $id) { id } }", "variables": {"id": "\\ud800"}}',
    ],
    ids=["raw bytes that are not UTF-8", "a lone surrogate escape"],
)
async def test_ids_that_are_not_utf8_are_a_400(api: Api, body: bytes) -> None:
    response = await api.client.post("/graphql", content=body, headers={**AUTH, "content-type": "application/json"})
    assert response.status_code == 400, response.text
    assert response.json()["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"


async def test_hostile_ids_over_get_and_overlong_ids_are_not_found_or_refused(api: Api, gen2: None) -> None:
    over_get = await api.client.get(
        "/graphql", params={"query": BATCH, "variables": '{"id": "x\\u0000"}'}, headers=AUTH
    )
    assert NUL in over_get.json()["errors"][0]["message"]
    raw = await api.client.get(f"/graphql?query={BATCH}&variables=%7B%22id%22%3A%22%FF%22%7D", headers=AUTH)
    # A query string is decoded with replacement characters: the id read is U+FFFD, which names no batch.
    assert raw.json() == {"data": {"batch": None}}, raw.text
    long = await api.client.post("/graphql", json={"query": BATCH, "variables": {"id": "b" * 50_000}}, headers=AUTH)
    assert long.json() == {"data": {"batch": None}}
