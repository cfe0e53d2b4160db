"""Topic creation on any Kafka-protocol broker, with aiokafka only: `ras produce-demo` runs in the image, which has
none of the embedded servers' packages (devstack/kafka.py's broker process needs them)."""

from __future__ import annotations

from collections.abc import Sequence


async def create_topics(bootstrap: str, topics: Sequence[str], partitions: int) -> None:
    """Create ``topics`` with ``partitions`` partitions (replication 1); existing ones are fine.

    Explicit creation keeps partition counts deterministic instead of depending on broker
    auto-create defaults.  Any error other than TOPIC_ALREADY_EXISTS is raised.
    """
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import TopicAlreadyExistsError, for_code

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="ras-embedded-admin")
    await admin.start()
    try:
        response = await admin.create_topics(
            [NewTopic(name=t, num_partitions=partitions, replication_factor=1) for t in topics]
        )
    finally:
        await admin.close()
    for entry in response.topic_errors:
        topic, code = entry[0], entry[1]
        if code not in (0, TopicAlreadyExistsError.errno):
            raise for_code(code)(f"creating topic {topic!r}")
