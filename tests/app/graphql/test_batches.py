"""Query.batches: a cursor connection, newest first, with filters and a total."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.app.graphql.conftest import Api
from tests.helpers.events import EPOCH, Message, cj_completed, pipeline_completed, project, registered

LIST = """
query($user: String, $status: [BatchStatus!], $clientStatus: [BatchClientStatus!], $assignment: String,
      $first: Int, $after: String) {
  batches(userId: $user, status: $status, clientStatus: $clientStatus, assignmentId: $assignment,
          first: $first, after: $after) {
    totalCount
    pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
    edges { cursor node { id userId statusCode } }
    nodes { id }
  }
}
"""


def _batch(batch_id: str, user: str, minute: int, final: str | None = None) -> list[Message]:
    at = EPOCH + timedelta(minutes=minute)
    out = [registered("gen2", batch_id, user, [f"{batch_id}-e1"], at)]
    if final is not None:
        out.append(pipeline_completed(batch_id, 1, 0, final, at + timedelta(seconds=30)))
    return out


@pytest.fixture
async def teachers(engine: AsyncEngine) -> None:
    messages = [
        *_batch("b1", "t1", 1, "completed_successfully"),
        *_batch("b2", "t1", 2, "failed_critically"),
        *_batch("b3", "t1", 3),  # still awaiting content
        *_batch("b4", "t1", 4, "student_validation_completed"),
        *_batch("b5a", "t1", 5, "a_status_from_the_future"),
        *_batch("b5b", "t1", 5, "processing_pipelines"),  # same creation time as b5a: ties go by id
        *_batch("x1", "t2", 3, "completed_successfully"),
        cj_completed("gen2", "b1", ["b1-e1"], EPOCH + timedelta(minutes=10)),
    ]
    await project(engine, messages)


def _ids(data: dict[str, Any]) -> list[str]:
    return [edge["node"]["id"] for edge in data["batches"]["edges"]]


async def test_newest_first_with_total_and_nodes(api: Api, teachers: None) -> None:
    data = await api.data(LIST, {"user": "t1"})
    assert _ids(data) == ["b5b", "b5a", "b4", "b3", "b2", "b1"]
    assert [n["id"] for n in data["batches"]["nodes"]] == _ids(data)
    assert data["batches"]["totalCount"] == 6
    assert data["batches"]["pageInfo"] == {
        "hasNextPage": False,
        "hasPreviousPage": False,
        "startCursor": data["batches"]["edges"][0]["cursor"],
        "endCursor": data["batches"]["edges"][-1]["cursor"],
    }


async def test_pages_walk_the_whole_list_once(api: Api, teachers: None) -> None:
    seen: list[str] = []
    after = None
    pages = 0
    while True:
        data = await api.data(LIST, {"user": "t1", "first": 2, "after": after})
        pages += 1
        seen += _ids(data)
        info = data["batches"]["pageInfo"]
        assert data["batches"]["totalCount"] == 6
        assert info["hasPreviousPage"] is (after is not None)
        if not info["hasNextPage"]:
            break
        after = info["endCursor"]
    assert pages == 3
    assert seen == ["b5b", "b5a", "b4", "b3", "b2", "b1"]


async def test_page_edges(api: Api, teachers: None) -> None:
    exact = await api.data(LIST, {"user": "t1", "first": 6})
    assert exact["batches"]["pageInfo"]["hasNextPage"] is False
    empty = await api.data(LIST, {"user": "t1", "first": 0})
    assert empty["batches"]["edges"] == []
    assert empty["batches"]["totalCount"] == 6
    assert empty["batches"]["pageInfo"] == {
        "hasNextPage": True,
        "hasPreviousPage": False,
        "startCursor": None,
        "endCursor": None,
    }
    last = exact["batches"]["pageInfo"]["endCursor"]
    beyond = await api.data(LIST, {"user": "t1", "after": last})
    assert beyond["batches"]["edges"] == []
    assert beyond["batches"]["pageInfo"]["hasNextPage"] is False


async def test_default_page_size_is_twenty(engine: AsyncEngine, api: Api) -> None:
    await project(engine, [m for i in range(25) for m in _batch(f"p{i:02d}", "t9", i)])
    data = await api.data(LIST, {"user": "t9"})
    assert len(_ids(data)) == 20
    assert data["batches"]["pageInfo"]["hasNextPage"] is True


@pytest.mark.parametrize(
    ("variables", "expected"),
    [
        ({"status": ["COMPLETED_SUCCESSFULLY"]}, ["b1"]),
        ({"status": ["FAILED_CRITICALLY", "AWAITING_CONTENT_VALIDATION"]}, ["b3", "b2"]),
        ({"status": ["UNKNOWN"]}, ["b5a"]),
        ({"status": []}, []),
        ({"clientStatus": ["PROCESSING"]}, ["b5b", "b5a", "b4"]),  # unknown statuses fall back to processing
        ({"clientStatus": ["PENDING_CONTENT", "FAILED"]}, ["b3", "b2"]),
        ({"clientStatus": ["PROCESSING"], "status": ["UNKNOWN"]}, ["b5a"]),  # both filters apply
        ({"assignment": "assign-b1"}, ["b1"]),
        ({"assignment": "assign-none"}, []),
    ],
)
async def test_filters(api: Api, teachers: None, variables: dict[str, Any], expected: list[str]) -> None:
    data = await api.data(LIST, {"user": "t1", **variables})
    assert _ids(data) == expected
    assert data["batches"]["totalCount"] == len(expected)


async def test_without_user_every_users_batches_are_listed(api: Api, teachers: None) -> None:
    data = await api.data(LIST, {"status": ["COMPLETED_SUCCESSFULLY"]})
    assert sorted(_ids(data)) == ["b1", "x1"]


async def test_a_cursor_that_is_not_one_is_refused(api: Api, teachers: None) -> None:
    for bad in ["not-a-cursor", "ZXNzYXk6ZTE"]:  # garbage, and an essay cursor
        errors = await api.errors(LIST, {"user": "t1", "after": bad})
        assert errors[0]["extensions"]["code"] == "BAD_USER_INPUT"
        assert "Invalid cursor" in errors[0]["message"]
        assert errors[0]["path"] == ["batches"]
