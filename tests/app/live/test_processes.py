"""The whole path with real processes: producer → broker → `ras consume` → PostgreSQL + Redis → two `ras serve`
processes → WebSocket clients on each. Every update reaches both, in order; the latencies are reported with the
figures (bench F1 measures freshness against its target)."""

from __future__ import annotations

import signal
import statistics
import time
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from sqlalchemy.ext.asyncio import AsyncEngine

from devstack.process import free_port
from tests.app.graphql.conftest import AUTH
from tests.app.live.conftest import BATCH_PROGRESS, live_settings, process_env, ws_client
from tests.helpers import figures
from tests.helpers.events import EPOCH, registered, slot_assigned
from tests.helpers.kafka_io import produce, wait_for_positions
from tests.helpers.processes import RasProcess, wait_for_status

pytestmark = pytest.mark.kafka

PUSHED_WITHIN = 30.0
"""How long a client waits for an update that must come: a hang guard (it takes milliseconds), not what is asserted."""


@pytest.mark.parametrize("redis_kind", ["standalone", "cluster"])
async def test_an_update_reaches_subscribers_on_two_api_processes(
    database_url: str,
    redis_url: str,
    prefix: str,
    kafka_bootstrap: str,
    engine: AsyncEngine,
    tmp_path: Path,
    redis_kind: str,
    request: pytest.FixtureRequest,
) -> None:
    """On a single Redis and on a three-node Redis Cluster (`ras serve` and `ras consume` with RAS_REDIS_CLUSTER)."""
    if redis_kind == "cluster":
        cluster_url = request.getfixturevalue("redis_cluster_url")
        settings = live_settings(
            database_url, cluster_url, prefix, kafka_bootstrap_servers=kafka_bootstrap, redis_cluster=True
        )
    else:
        settings = live_settings(database_url, redis_url, prefix, kafka_bootstrap_servers=kafka_bootstrap)
    ports = [free_port(), free_port()]
    consumer = RasProcess("consume", process_env(settings), tmp_path / "consume.log")
    apis = [RasProcess("serve", process_env(settings, port), tmp_path / f"serve-{port}.log") for port in ports]
    user, batch, essays = "teacher-live", str(uuid.uuid4()), [str(uuid.uuid4()) for _ in range(5)]
    try:
        for port in ports:
            await wait_for_status(f"http://127.0.0.1:{port}/readyz", 200)
        await consumer.wait_for_output("partitions assigned")
        for api in apis:
            await api.wait_for_output("live updates: listening")
        ends = await produce(kafka_bootstrap, [registered("gen2", batch, user, essays, EPOCH)])
        await wait_for_positions(engine, ends, timeout=30)

        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, linger_ms=0)
        await producer.start()
        auth = {**AUTH, "X-User-ID": user}
        async with (
            ws_client(f"ws://127.0.0.1:{ports[0]}/graphql", auth) as first,
            ws_client(f"ws://127.0.0.1:{ports[1]}/graphql", auth) as second,
        ):
            clients = (first, second)
            for ws in clients:
                await ws.subscribe("p", BATCH_PROGRESS, {"id": batch})
                assert (await ws.next_payload("p"))["data"]["batchProgress"]["essays"]["totalCount"] == 0
            latencies: list[list[float]] = [[], []]
            for count, essay in enumerate(essays, start=1):
                message = slot_assigned("gen2", batch, essay, EPOCH)
                await producer.send_and_wait(message.topic, message.value, key=message.key)
                acknowledged = time.perf_counter()
                for i, ws in enumerate(clients):
                    update = await ws.next_payload("p", timeout=PUSHED_WITHIN)
                    latencies[i].append(time.perf_counter() - acknowledged)
                    assert update["data"]["batchProgress"]["essays"]["totalCount"] == count
        await producer.stop()
        # The second client is read after the first, so its time includes the first's.
        figures.report(
            f"live updates across processes, {redis_kind} Redis (produce-ack → WebSocket update)",
            *(
                f"API process {i + 1}: median {statistics.median(measured) * 1000:.0f} ms, "
                f"max {max(measured) * 1000:.0f} ms ({', '.join(f'{s * 1000:.0f}' for s in measured)})"
                for i, measured in enumerate(latencies)
            ),
        )
    finally:
        for process in (*apis, consumer):
            if process.proc.poll() is None:
                await process.stop(signal.SIGTERM)
            process.kill()
