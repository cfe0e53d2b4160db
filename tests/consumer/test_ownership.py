"""A registration can no longer take another teacher's batch, and values no producer sends are refused.

The attack: a second registration of an existing batch naming another user, stamped later, re-owned the batch and
its essays and results. Now the earliest registration of a batch (producer time, then digest) holds it; one that
names another user is quarantined with the reason, counted, and changes nothing, whichever order they arrive in.
Real PostgreSQL, the real projection, and the real GraphQL endpoint reading what it wrote.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.main import create_app
from consumer.apply import Applied
from consumer.pure import topics
from consumer.tools.replay import replay
from infra.settings import Settings
from tests.helpers.cache import Delta
from tests.helpers.consumer import MAX_BYTES, apply, as_records, dump, truncate
from tests.helpers.events import EPOCH, Message, registered, slot_assigned, spellchecked

API_KEY = "test-internal-key"
BATCH = "query Batch($id: ID!) { batch(id: $id) { id userId essays { totalCount } } }"
BATCHES = "{ batches { totalCount } }"


class Batch:
    def __init__(self) -> None:
        self.id = str(uuid.uuid4())
        self.essays = [str(uuid.uuid4()) for _ in range(2)]

    def registration(self, user: str, at: datetime, essays: list[str] | None = None) -> Message:
        return registered("gen2", self.id, user, self.essays if essays is None else essays, at)

    def life(self) -> list[Message]:
        slots = [slot_assigned("gen2", self.id, e, EPOCH + timedelta(seconds=1)) for e in self.essays]
        return [*slots, spellchecked("gen2", self.id, self.essays[0], True, 3, EPOCH + timedelta(seconds=100))]


@pytest.fixture
async def api(engine: AsyncEngine) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(
        database_url="postgresql+asyncpg://unused@127.0.0.1/unused",
        environment="development",
        internal_api_key=SecretStr(API_KEY),
        cache_enabled=False,
        live_updates_enabled=False,
    )
    app = create_app(settings, engine=engine)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        yield client


async def query(api: httpx.AsyncClient, user: str, document: str, variables: dict[str, Any] | None = None) -> Any:
    headers = {"X-Internal-API-Key": API_KEY, "X-Service-ID": "api-gateway-service", "X-User-ID": user}
    response = await api.post("/graphql", json={"query": document, "variables": variables}, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()["data"]


async def quarantined(engine: AsyncEngine) -> list[tuple[str, str]]:
    async with engine.connect() as conn:
        rows = await conn.execute(text('SELECT topic, error FROM quarantine ORDER BY topic, "offset"'))
        return [(r.topic, r.error) for r in rows]


def total(applied: list[Applied], outcome: str) -> int:
    return sum(getattr(a, outcome)[topics.BATCH_ESSAYS_REGISTERED] for a in applied)


async def test_a_later_registration_naming_another_user_is_quarantined_not_applied(
    engine: AsyncEngine, api: httpx.AsyncClient
) -> None:
    x = Batch()
    await apply(engine, as_records([x.registration("alice", EPOCH), *x.life()]))
    delta = Delta()
    takeover = x.registration("mallory", EPOCH + timedelta(hours=1), essays=[])
    applied = await apply(engine, as_records([takeover]))

    assert await query(api, "mallory", BATCH, {"id": x.id}) == {"batch": None}, "the batch is not mallory's"
    assert await query(api, "mallory", BATCHES) == {"batches": {"totalCount": 0}}
    owned = await query(api, "alice", BATCH, {"id": x.id})
    assert owned == {"batch": {"id": x.id, "userId": "alice", "essays": {"totalCount": 2}}}
    [(topic, reason)] = await quarantined(engine)
    assert topic == topics.BATCH_ESSAYS_REGISTERED
    assert "owner change refused" in reason and "'alice'" in reason and "'mallory'" in reason
    assert (total(applied, "applied"), total(applied, "quarantined")) == (0, 1)
    assert delta("ras_consumer_owner_changes_total", outcome="refused") == 1
    assert applied[0].batch_ids == set(), "a refused registration changes nothing, so it evicts nothing"

    report = await replay(engine, MAX_BYTES)
    assert list(report.still_failing.values()) == [reason] and report.replayed == [], "replay refuses it again"
    assert (await query(api, "alice", BATCH, {"id": x.id}))["batch"]["userId"] == "alice"


@pytest.mark.parametrize("per_transaction", [1, None], ids=["one transaction each", "one transaction"])
async def test_the_earliest_registration_holds_the_batch_whichever_arrives_first(
    engine: AsyncEngine, per_transaction: int | None
) -> None:
    x = Batch()
    first, later = x.registration("alice", EPOCH), x.registration("mallory", EPOCH + timedelta(hours=1), essays=[])
    await apply(engine, as_records([first, later, *x.life()]), per_transaction)
    expected, expected_quarantine = await dump(engine), await quarantined(engine)

    await truncate(engine)
    delta = Delta()
    applied = await apply(engine, as_records([later, *x.life(), first]), per_transaction)
    assert await dump(engine) == expected
    assert expected["batches"][0]["user_id"] == "alice" and expected["batches"][0]["essay_count"] == 2
    [(_, reason)] = expected_quarantine
    assert "owner change refused" in reason
    if per_transaction is None:
        assert await quarantined(engine) == expected_quarantine, "within one transaction the later one is refused"
    else:
        # mallory's registration held the batch until alice's earlier one arrived, so it is not in quarantine (its
        # record is behind the consumer); the takeover is logged and counted, and mallory's list views are evicted.
        assert await quarantined(engine) == []
        assert delta("ras_consumer_owner_changes_total", outcome="taken_over") == 1
        assert "mallory" in applied[-1].user_ids and x.id in applied[-1].batch_ids


async def test_a_later_registration_by_the_same_user_changes_nothing(engine: AsyncEngine) -> None:
    x = Batch()
    await apply(engine, as_records([x.registration("alice", EPOCH)]))
    before = await dump(engine)
    [applied] = await apply(engine, as_records([x.registration("alice", EPOCH + timedelta(hours=1), essays=[])]))
    assert await dump(engine) == before and await quarantined(engine) == []
    assert applied.batch_ids == set()


def _with(message: Message, change: dict[str, Any]) -> Message:
    envelope = json.loads(message.value)
    for path, value in change.items():
        target = envelope["data"]
        *parents, leaf = path.split(".")
        for step in parents:
            target = target[step]
        target[leaf] = value
    return Message(message.topic, message.key, json.dumps(envelope).encode(), message.at)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"expected_essay_count": -5}, "expected_essay_count: Input should be greater than or equal to 0"),
        ({"metadata.timestamp": "0001-01-01T00:00:00Z"}, "timestamp 0001-01-01T00:00:00+00:00 is not between 2000"),
        ({"metadata.timestamp": "2999-01-01T00:00:00Z"}, "timestamp 2999-01-01T00:00:00+00:00 is not between 2000"),
    ],
    ids=["negative count", "year 1", "year 2999"],
)
async def test_impossible_values_are_quarantined_with_their_reason(
    engine: AsyncEngine, change: dict[str, Any], reason: str
) -> None:
    x = Batch()
    [applied] = await apply(engine, as_records([_with(x.registration("alice", EPOCH), change)]))
    assert (await dump(engine, ["batches"]))["batches"] == []
    [(topic, error)] = await quarantined(engine)
    assert topic == topics.BATCH_ESSAYS_REGISTERED and reason in error, error
    assert applied.quarantined[topic] == 1
