"""The fence around the private aiokafka attribute consumer.intake shares the prefetch through (pyproject.toml bounds
the versions; this is the start-up check's own test)."""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer

from consumer.intake import can_share_prefetch


async def test_the_private_fetch_size_is_found_on_a_started_client(kafka_bootstrap: str) -> None:
    """The start-up check of the private attribute `Intake._share_prefetch` sets: present in the fenced aiokafka once
    the client has started, and absent from a client without it (the public settings then bound the prefetch)."""
    client = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap, group_id="fence-check")  # as the consumer runs
    assert not can_share_prefetch(client)  # no fetcher before start
    await client.start()
    try:
        assert can_share_prefetch(client)
    finally:
        await client.stop()
