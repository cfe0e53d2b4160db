"""The `/metrics` endpoint both processes serve: Prometheus text exposition of the default registry, and the
listener of its own that serves nothing else."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

METRICS_PATH = "/metrics"


async def metrics_endpoint(request: Request) -> Response:
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)


def metrics_app() -> Starlette:
    """`/metrics` alone, for a port Prometheus scrapes without credentials (every other path is a 404)."""
    return Starlette(routes=[Route(METRICS_PATH, metrics_endpoint, methods=["GET", "HEAD"])])
