"""ETag and If-None-Match: a strong hash of the body; a matching If-None-Match (any form) gets 304 and no body. The
gzipped representation's tags: tests/app/rest/test_compression.py."""

from __future__ import annotations

import hashlib
import re
from datetime import timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from app.cache import body_digest
from app.rest.routes import etag, none_match
from tests.app.graphql.conftest import AUTH, FIXTURE_BATCH, FIXTURE_USER
from tests.app.rest.conftest import Rest
from tests.helpers.events import EPOCH, project, spellchecked

IDENTITY = {**AUTH, "Accept-Encoding": "identity"}
STATUS = f"/batches/{FIXTURE_BATCH}/status"
LIST = f"/batches/user/{FIXTURE_USER}"


@pytest.mark.parametrize("path", [STATUS, LIST])
async def test_etag_is_a_strong_hash_of_the_body(api: Rest, gen2: None, path: str) -> None:
    first = await api.get(path, headers=IDENTITY)
    tag = first.headers["ETag"]
    assert re.fullmatch(r'"[0-9a-f]{32}"', tag)
    assert tag == '"' + hashlib.sha256(first.content).hexdigest()[:32] + '"'
    again = await api.get(path, headers={**IDENTITY, "X-Correlation-ID": "another-request"})
    assert (again.content, again.headers["ETag"]) == (first.content, tag)  # nothing request-specific in the body
    assert first.headers["Cache-Control"] == "private, no-cache"


@pytest.mark.parametrize("path", [STATUS, LIST])
@pytest.mark.parametrize("form", ["{tag}", "W/{tag}", '"abc", {tag}', 'W/"x",W/{tag} , "y"', "*"])
async def test_if_none_match_gets_304_without_a_body(api: Rest, gen2: None, path: str, form: str) -> None:
    tag = (await api.get(path)).headers["ETag"]
    response = await api.get(path, headers={**AUTH, "If-None-Match": form.format(tag=tag), "X-Correlation-ID": "c-1"})
    assert response.status_code == 304
    assert response.content == b""
    assert response.headers["ETag"] == tag
    assert response.headers["X-Correlation-ID"] == "c-1"


@pytest.mark.parametrize("sent", ['"0123"', 'W/"0123"', "", "garbage"])
async def test_a_stale_or_odd_if_none_match_gets_the_body(api: Rest, gen2: None, sent: str) -> None:
    response = await api.get(STATUS, headers={**AUTH, "If-None-Match": sent})
    assert response.status_code == 200 and response.json()["batch_id"] == FIXTURE_BATCH


async def test_a_change_changes_the_etag(engine: AsyncEngine, api: Rest, gen2: None) -> None:
    before = await api.get(STATUS)
    listed_before = await api.get(LIST)
    later = EPOCH + timedelta(hours=1)
    await project(engine, [spellchecked("gen2", FIXTURE_BATCH, "171b04c1-1125-5665-b999-10266c83625c", True, 4, later)])
    after = await api.get(STATUS, headers={**AUTH, "If-None-Match": before.headers["ETag"]})
    assert after.status_code == 200
    assert after.headers["ETag"] != before.headers["ETag"]
    listed = await api.get(LIST, headers={**AUTH, "If-None-Match": listed_before.headers["ETag"]})
    assert listed.status_code == 200


async def test_errors_are_not_turned_into_304(api: Rest) -> None:
    response = await api.get("/batches/nope/status", headers={**AUTH, "If-None-Match": "*"})
    assert response.status_code == 404


def test_none_match_forms() -> None:
    tag = etag(body_digest(b"{}"))
    assert none_match(tag, tag)
    assert none_match(f"W/{tag}", tag)
    assert none_match(f'"a",{tag}', tag)
    assert none_match("*", tag)
    assert not none_match(None, tag)
    assert not none_match("", tag)
    assert not none_match(tag[:-2] + '"', tag)
    assert not none_match(tag.strip('"'), tag)  # unquoted is not the same entity tag
