"""A closed-loop load of mixed requests whose every answer is checked: L1's and the list scenario's load generator.

    python -m bench.mixed_load --port 4003 --spec spec.json --connections 200 --end-at 1764790000.0

`--spec` holds `{"requests": [{"kind", "weight", "method", "path", "body", "headers", "expect"}]}`. Each of the
`--connections` keep-alive connections (HTTP/1.1 as in bench/loadgen.py, on uvloop when installed) picks its next
request by weight as soon as the previous answer is complete, until `--end-at` (a Unix time, so the harness knows
when the load stops). Every answer is classified:

* right: HTTP 200 whose body is the expected one: `expect.body` byte for byte (REST), or `expect.data` equal to the
  body's `data` with no `errors` (GraphQL, whose `extensions.cache` differs between answers);
* refused: the documented refusal, HTTP 503 with a Retry-After header and SERVICE_UNAVAILABLE in the body;
* wrong: anything else (a few are kept as examples).

Prints one JSON line: requests, seconds, latency percentiles overall and per kind (microseconds), outcomes per
kind, socket errors and the examples of wrong answers.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from bench.loadgen import encode_request, run_fastest

WRONG_EXAMPLES = 5


@dataclass(frozen=True)
class Kind:
    name: str
    weight: int
    request: bytes
    expect_body: bytes | None
    expect_data: Any


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.mixed_load")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--spec", type=Path, required=True)
    parser.add_argument("--connections", type=int, default=200)
    parser.add_argument("--end-at", type=float, required=True, help="Unix time at which no new request is sent")
    parser.add_argument("--seed", type=int, default=17)
    return parser.parse_args(argv)


def kinds_of(spec: dict[str, Any], host: str, port: int) -> list[Kind]:
    kinds = []
    for item in spec["requests"]:
        body = str(item.get("body", "")).encode()
        request = encode_request(host, port, item["path"], item["method"], body, item.get("headers", {}))
        expect = item["expect"]
        expected_body = expect["body"].encode() if "body" in expect else None
        kinds.append(Kind(item["kind"], int(item.get("weight", 1)), request, expected_body, expect.get("data")))
    return kinds


class Tally:
    def __init__(self) -> None:
        self.latencies: dict[str, list[float]] = defaultdict(list)
        self.outcomes: dict[str, Counter[str]] = defaultdict(Counter)
        self.wrong: list[str] = []
        self.socket_errors = 0

    def record(self, kind: Kind, seconds: float, status: int, headers: bytes, body: bytes) -> None:
        self.latencies[kind.name].append(seconds)
        problem = _problem(kind, status, headers, body)
        outcome = "right" if problem is None else "refused" if problem == "refused" else "wrong"
        self.outcomes[kind.name][outcome] += 1
        if outcome == "wrong" and len(self.wrong) < WRONG_EXAMPLES:
            self.wrong.append(f"{kind.name}: {problem}: HTTP {status} {body[:200]!r}")


def _problem(kind: Kind, status: int, headers: bytes, body: bytes) -> str | None:
    """None for a right answer, "refused" for the documented refusal, else what is wrong."""
    if status == 503:
        documented = b"\r\nretry-after:" in headers.lower() and b'"SERVICE_UNAVAILABLE"' in body
        return "refused" if documented else "a 503 without Retry-After or SERVICE_UNAVAILABLE"
    if status != 200:
        return "neither an answer nor the documented refusal"
    if kind.expect_body is not None:
        return None if body == kind.expect_body else "a body other than the expected one"
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return "not JSON"
    if not isinstance(document, dict) or "errors" in document or document.get("data") != kind.expect_data:
        return "data other than the expected"
    return None


async def _response(reader: asyncio.StreamReader) -> tuple[int, bytes, bytes]:
    """One Content-Length framed response: status, head, body."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    body = await reader.readexactly(length) if length else b""
    return int(head[9:12]), head, body


async def _connection(host: str, port: int, kinds: list[Kind], until: float, rng: random.Random, tally: Tally) -> None:
    weights = [kind.weight for kind in kinds]
    while time.time() < until:
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError:
            tally.socket_errors += 1
            await asyncio.sleep(0.01)
            continue
        try:
            while time.time() < until:
                kind = rng.choices(kinds, weights)[0]
                started = time.perf_counter()
                writer.write(kind.request)
                status, head, body = await _response(reader)
                tally.record(kind, time.perf_counter() - started, status, head, body)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            tally.socket_errors += 1
        finally:
            writer.close()


def _cuts(values: list[float]) -> dict[str, float]:
    if len(values) < 2:
        return {"p50_us": (values or [0.0])[0] * 1e6, "p99_us": (values or [0.0])[0] * 1e6}
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return {"p50_us": cuts[49] * 1e6, "p99_us": cuts[98] * 1e6}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    kinds = kinds_of(orjson.loads(args.spec.read_bytes()), args.host, args.port)
    tally = Tally()
    started = time.time()
    await asyncio.gather(
        *(
            _connection(args.host, args.port, kinds, args.end_at, random.Random(args.seed + i), tally)
            for i in range(args.connections)
        )
    )
    everything = [x for values in tally.latencies.values() for x in values]
    return {
        "requests": len(everything),
        "seconds": time.time() - started,
        **_cuts(everything),
        "kinds": {
            name: {"requests": len(values), **_cuts(values), **tally.outcomes[name]}
            for name, values in tally.latencies.items()
        },
        "socket_errors": tally.socket_errors,
        "wrong_examples": tally.wrong,
    }


def main(argv: Sequence[str] | None = None) -> int:
    outcome = run_fastest(run(parse_args(argv)))
    sys.stdout.write(orjson.dumps(outcome).decode() + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
