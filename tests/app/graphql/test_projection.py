"""Query.projection: the consumer's positions, lag and freshness."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.app.graphql.conftest import Api

QUERY = """{
  projection {
    totalLag newestEventAt lastAppliedAt quarantinedCount
    partitions { topic partition nextOffset highWatermark lag lastEventAt updatedAt }
  }
}"""


async def test_empty_read_model(api: Api) -> None:
    assert (await api.data(QUERY))["projection"] == {
        "totalLag": None,
        "newestEventAt": None,
        "lastAppliedAt": None,
        "quarantinedCount": 0,
        "partitions": [],
    }


async def test_positions_and_lag(engine: AsyncEngine, api: Api, gen2: None) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            text("UPDATE consumer_positions SET high_watermark = next_offset + 5000000000 WHERE topic LIKE '%outcome%'")
        )
        await conn.execute(
            text("INSERT INTO quarantine (topic, partition, \"offset\", error) VALUES ('t', 0, 1, 'unreadable')")
        )
    projection = (await api.data(QUERY))["projection"]
    partitions = {p["topic"]: p for p in projection["partitions"]}
    outcome = partitions["huleedu.els.batch.phase.outcome.v1"]
    assert outcome["nextOffset"] == 3
    assert outcome["highWatermark"] == 5_000_000_003  # Long: beyond a 32-bit Int
    assert outcome["lag"] == 5_000_000_000
    assert outcome["lastEventAt"] == "2025-08-01T12:06:40+00:00"
    assert partitions["huleedu.batch.essays.registered.v1"]["lag"] is None
    assert projection["totalLag"] == 5_000_000_000
    assert projection["newestEventAt"] == "2025-08-01T12:06:50+00:00"
    assert projection["lastAppliedAt"] == max(p["updatedAt"] for p in projection["partitions"])
    assert projection["quarantinedCount"] == 1
    assert len(partitions) == 7  # every consumed gen 2 topic that had a fixture
