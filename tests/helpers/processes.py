"""Running `ras consume` / `ras serve` as real subprocesses and talking to their HTTP ports."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import httpx

from devstack.process import free_port


class RasProcess:
    """One `ras` command as a child process, its output in a log file the test can search."""

    def __init__(self, command: str, env: dict[str, str], log: Path, args: list[str] | None = None) -> None:
        self.log = log
        self._file = log.open("wb")
        # No metrics listener unless `env` asks for one: tests run side by side, and its default port is fixed.
        full_env = {**os.environ, "RAS_LOG_LEVEL": "INFO", "RAS_METRICS_PORT": "0", **env}
        argv = [sys.executable, "-m", "ras.cli", command, *(args or [])]
        self.proc = subprocess.Popen(argv, env=full_env, stdout=self._file, stderr=subprocess.STDOUT)

    @classmethod
    def with_args(cls, argv: list[str], env: dict[str, str], log: Path) -> RasProcess:
        return cls(argv[0], env, log, argv[1:])

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    async def wait_for_output(self, text: str, timeout: float = 30) -> None:
        async with asyncio.timeout(timeout):
            while text not in self.output():
                assert self.proc.poll() is None, f"process exited ({self.proc.returncode}):\n{self.output()[-3000:]}"
                await asyncio.sleep(0.05)

    async def stop(self, sig: int, timeout: float = 30) -> int:
        self.proc.send_signal(sig)
        code = await asyncio.to_thread(self.proc.wait, timeout)
        self._file.close()
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._file.close()


async def get_status(url: str) -> tuple[int, dict[str, object]]:
    async with httpx.AsyncClient(timeout=5) as client:
        response = await client.get(url)
        return response.status_code, response.json()


async def wait_for_status(url: str, expected: int, timeout: float = 120) -> dict[str, object]:
    """Poll an HTTP health endpoint until it answers `expected`.

    `timeout` is only a hang guard: a process that starts in two seconds alone has taken over thirty on two cores
    shared with other runs, and a slow start is not what these tests check."""
    async with asyncio.timeout(timeout):
        while True:
            try:
                status, body = await get_status(url)
                if status == expected:
                    return body
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)


__all__ = ["RasProcess", "free_port", "get_status", "wait_for_status"]
