"""R1's load generator when `wrk` is not installed: HTTP/1.1 keep-alive connections on asyncio with uvloop.

    python -m bench.loadgen --port 4003 --path /graphql --request-file req.json --connections 32 --seconds 5

`--request-file` holds `{"method", "bodies", "headers"}`. Each connection sends a request again as soon as the
previous response is complete (closed loop, like wrk); with several bodies, each request carries the next one in
turn (across all connections). With `--follow`, the requests follow another process: each line it writes to the
load generator's standard input names bodies by index (`3 17`), and from then on the requests carry those in turn
(until the first line, body 0). Prints one JSON line: requests, seconds, p50/p99 latency in
microseconds and the count of non-2xx answers. It runs in its own process so that it never shares the server's
event loop; wrk is preferred (C, far cheaper per request), which is why the harness looks for it first.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import statistics
import sys
import time
from collections.abc import Coroutine, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import orjson

T = TypeVar("T")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.loadgen")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", required=True)
    parser.add_argument("--request-file", type=Path, required=True)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--follow", action="store_true", help="take the bodies to send from stdin, by index")
    return parser.parse_args(argv)


def encode_request(host: str, port: int, path: str, method: str, body: bytes, headers: dict[str, str]) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def _response(reader: asyncio.StreamReader) -> int:
    """Read one response (Content-Length framed, as uvicorn answers these requests); its status code."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    if length:
        await reader.readexactly(length)
    return status


async def _connection(
    host: str, port: int, requests: Iterator[bytes], until: float, latencies: list[float]
) -> tuple[int, int]:
    """Closed loop on one connection; (non-2xx answers, socket errors). A reset or a cut answer is counted and the
    connection is opened again, as wrk does, so one refused socket under load does not end the measurement."""
    failures = 0
    socket_errors = 0
    while time.perf_counter() < until:
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError:
            socket_errors += 1
            await asyncio.sleep(0.01)  # a refusing server is not hammered in a tight loop
            continue
        try:
            while time.perf_counter() < until:
                started = time.perf_counter()
                writer.write(next(requests))
                status = await _response(reader)
                latencies.append(time.perf_counter() - started)
                if not 200 <= status < 300:
                    failures += 1
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            socket_errors += 1
        finally:
            writer.close()
    return failures, socket_errors


class Following:
    """Requests that carry, in turn, those of `requests` named last (`show`)."""

    def __init__(self, requests: Sequence[bytes]) -> None:
        self._requests = requests
        self._shown = [requests[0]]
        self._sent = 0

    def show(self, indexes: Sequence[int]) -> None:
        if indexes:
            self._shown = [self._requests[i] for i in indexes]

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        self._sent += 1
        return self._shown[self._sent % len(self._shown)]


async def _follow(following: Following) -> None:
    """Read body indexes from standard input, one a line, until it closes."""
    reader = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        following.show([int(index) for index in line.split()])


async def run(args: argparse.Namespace) -> dict[str, float]:
    spec = orjson.loads(args.request_file.read_bytes())
    headers = spec.get("headers", {})
    bodies = [str(body).encode() for body in spec["bodies"]]
    encoded = [encode_request(args.host, args.port, args.path, spec["method"], b, headers) for b in bodies]
    requests: Iterator[bytes] = itertools.cycle(encoded)
    follower = None
    if args.follow:
        requests = following = Following(encoded)
        follower = asyncio.create_task(_follow(following))
    latencies: list[float] = []
    started = time.perf_counter()
    until = started + args.seconds
    outcomes = await asyncio.gather(
        *(_connection(args.host, args.port, requests, until, latencies) for _ in range(args.connections))
    )
    elapsed = time.perf_counter() - started
    if follower is not None:
        follower.cancel()
    cuts = statistics.quantiles(latencies, n=100, method="inclusive") if len(latencies) > 1 else [0.0] * 99
    return {
        "requests": len(latencies),
        "seconds": elapsed,
        "p50_us": cuts[49] * 1e6,
        "p99_us": cuts[98] * 1e6,
        "non_2xx": sum(failures for failures, _ in outcomes),
        "socket_errors": sum(errors for _, errors in outcomes),
    }


def run_fastest(main: Coroutine[Any, Any, T]) -> T:
    """`main` run on uvloop when it is installed, else on asyncio's loop (still measures, with a slower client loop;
    the harness notes which one ran). For this load generator and bench/mixed_load.py."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


def main(argv: Sequence[str] | None = None) -> int:
    outcome = run_fastest(run(parse_args(argv)))
    sys.stdout.write(orjson.dumps(outcome).decode() + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
