"""R1's server: the API exactly as `ras serve` builds it, plus R1's baseline endpoint `/bare`, in one process.

    python -m bench.r1_app        # settings from RAS_* variables, as `ras serve`

`/bare` is the least a cached answer can cost in this server: one Redis GET of `BARE_KEY` (which the benchmark sets
to the bytes a cached GraphQL answer returns) and those bytes as the response, with no authentication, no parsing
and no cache bookkeeping. It shares the process, the event loop, uvicorn's HTTP stack and the Redis server with
`/graphql`, so the ratio of the two measures what the cached GraphQL path adds on top of the unavoidable.
`/bare-gzip` is the same for R1's gzip row: one GET of `BARE_GZIP_KEY` (a gzipped cached answer's bytes, as sent),
returned with `Content-Encoding: gzip`. Bench only: the app of `ras serve` never has these routes.
"""

from __future__ import annotations

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app.cache import QueryCache
from app.live import EventHub
from app.main import create_app
from infra import cache_keys as ck
from infra.settings import Settings

BARE_PATH = "/bare"
BARE_KEY = "bench:r1:bare"
BARE_GZIP_PATH = "/bare-gzip"
BARE_GZIP_KEY = "bench:r1:bare-gzip"
_GZIPPED = {"Content-Encoding": "gzip", "Vary": "Accept-Encoding"}


def bench_app(settings: Settings) -> Starlette:
    """`ras serve`'s app (app.main.serve builds the same cache, hub and app) with `/bare` and `/bare-gzip` added."""
    cache = QueryCache.from_settings(settings) if settings.cache_enabled else None
    events = EventHub.from_settings(settings) if settings.live_updates_enabled else None
    app = create_app(settings, cache=cache, events=events)
    redis = ck.connect(settings)  # the client the cache uses, made the same way

    async def bare(_: Request) -> Response:
        body = await redis.get(BARE_KEY)
        return Response(body or b"", media_type="application/json", status_code=200 if body else 404)

    async def bare_gzip(_: Request) -> Response:
        body = await redis.get(BARE_GZIP_KEY)
        if not body:
            return Response(b"", status_code=404)
        return Response(body, media_type="application/json", headers=_GZIPPED)

    app.router.routes.append(Route(BARE_PATH, bare, methods=["GET", "POST"]))
    app.router.routes.append(Route(BARE_GZIP_PATH, bare_gzip, methods=["GET", "POST"]))
    return app


def main() -> None:
    settings = Settings()
    # The same uvicorn options as app.main.serve.
    uvicorn.run(
        bench_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        timeout_graceful_shutdown=settings.shutdown_grace_seconds,
    )


if __name__ == "__main__":
    main()
