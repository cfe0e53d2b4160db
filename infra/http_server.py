"""uvicorn as this service runs it: listening sockets bound up front, and servers run as tasks of a process."""

from __future__ import annotations

import contextlib
import errno
import socket
from collections.abc import Iterator

import uvicorn

from infra.failures import CommandFailure


class PortUnavailable(CommandFailure):
    """The address to listen on is taken (or not this machine's)."""


def listen(host: str, port: int, port_option: str, host_option: str = "RAS_HOST") -> socket.socket:
    """A socket bound to `host:port` as uvicorn binds one (SO_REUSEADDR; IPv6 when the host is), to hand to
    `uvicorn.Server.serve(sockets=...)`. Binding before anything else starts means a taken port is reported at once,
    naming `port_option` (say "--port (RAS_PORT)"), instead of after the dependencies were waited for."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family=family, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise PortUnavailable(
                f"port {port} on {host} is in use: stop what holds it or choose another with {port_option}"
            ) from exc
        raise PortUnavailable(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}; check {host_option} and {port_option}"
        ) from exc
    sock.set_inheritable(True)
    return sock


class TaskServer(uvicorn.Server):
    """uvicorn without its signal capture: the host process (consumer, `ras dev`) decides when to stop it, by
    setting `should_exit` after finishing its own work."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield
