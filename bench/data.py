"""Read-side bench data: realistic events projected through the real consumer code, and apps over them.

Rows are never written by hand: events from devstack.demo (the platform's own payloads with new ids) go through
`consumer.apply.apply_fetch`, as `ras consume` would apply them.
"""

from __future__ import annotations

import os
import random
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette
from strawberry.schema.schema import Schema, StrawberryGraphQLCoreExecutionContext

from app.graphql.endpoint import GraphQLEndpoint
from consumer.apply import apply_fetch
from consumer.pure.decode import Record
from consumer.pure.fetch import decode_fetch
from devstack.demo import EPOCH, Message, batch_life, pipeline_completed, registered, slot_assigned, spellchecked
from infra.settings import Settings

API_KEY = "bench-internal-key-of-32-characters"  # production (as measured) refuses shorter keys
SERVICE_ID = "api-gateway-service"
HEADERS = {"X-Internal-API-Key": API_KEY, "X-Service-ID": SERVICE_ID, "Content-Type": "application/json"}
MAX_BYTES = 1_048_576


def settings(database_url: str, redis_url: str = "redis://127.0.0.1:1/0", **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "redis_url": redis_url,
        "internal_api_key": SecretStr(API_KEY),
        "allowed_service_ids": (SERVICE_ID,),
        "environment": "production",
        "log_level": "WARNING",
    }
    values.update(overrides)
    return Settings(**values)


def server_env(database_url: str, redis_url: str, port: int, cache_prefix: str) -> dict[str, str]:
    """The environment of an API or consumer subprocess (`ras serve`, `ras consume`, bench/r1_app.py): the
    settings above as RAS_* variables, cache on."""
    return {
        **os.environ,
        "RAS_DATABASE_URL": database_url,
        "RAS_REDIS_URL": redis_url,
        "RAS_HOST": "127.0.0.1",
        "RAS_PORT": str(port),
        "RAS_METRICS_PORT": "0",  # a bench that reads the API's metrics gives a free port
        "RAS_INTERNAL_API_KEY": API_KEY,
        "RAS_ALLOWED_SERVICE_IDS": SERVICE_ID,
        "RAS_ENVIRONMENT": "production",
        "RAS_LOG_LEVEL": "WARNING",
        "RAS_CACHE_ENABLED": "true",
        "RAS_CACHE_PREFIX": cache_prefix,
    }


def records(messages: Sequence[Message]) -> list[Record]:
    """Broker records of `messages` on one partition per topic, offsets counted from 0."""
    next_offset: dict[str, int] = defaultdict(int)
    out = []
    for m in messages:
        offset = next_offset[m.topic]
        next_offset[m.topic] = offset + 1
        out.append(Record(m.topic, 0, offset, m.key, m.value, int(m.at.timestamp() * 1000)))
    return out


async def project(engine: AsyncEngine, messages: Sequence[Message]) -> None:
    """Apply `messages` in one transaction through the consumer's own code."""
    async with engine.begin() as conn:
        await apply_fetch(conn, decode_fetch(records(messages), MAX_BYTES))


@dataclass(frozen=True)
class ReadData:
    big_batch: str  # R2: one batch of 1,000 essays
    list_user: str  # R3: a user with 100 batches
    messages: int


def big_batch(rng: random.Random, essays: int) -> list[Message]:
    """A gen 2 batch of `essays` essays through spellcheck (2 % failing, with error details) and CJ assessment."""
    return batch_life(rng, "gen2", "teacher-big", essays, 0.02, EPOCH)


def user_batches(rng: random.Random, user: str, batches: int, essays: int) -> list[Message]:
    """`batches` batches of one user, both generations; every fourth still running (status processing_pipelines,
    half its essays spellchecked), so `currentPhase` has something to compute."""
    messages: list[Message] = []
    for i in range(batches):
        start = EPOCH + timedelta(minutes=10 * i)
        if i % 4 == 3:
            batch_id = str(uuid.UUID(int=rng.getrandbits(128)))
            essay_ids = [str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(essays)]
            messages.append(registered("gen2", batch_id, user, essay_ids, start))
            messages += [slot_assigned("gen2", batch_id, e, start + timedelta(seconds=1)) for e in essay_ids]
            messages.append(pipeline_completed(batch_id, 0, 0, "processing_pipelines", start + timedelta(seconds=5)))
            messages += [
                spellchecked("gen2", batch_id, e, True, 3, start + timedelta(seconds=60 + n))
                for n, e in enumerate(essay_ids[: essays // 2])
            ]
        else:
            gen = "gen1" if i % 3 == 0 else "gen2"
            messages += batch_life(rng, gen, user, essays, rng.choice([0.0, 0.0, 0.1]), start)
    return messages


def graphql_endpoint(app: Starlette) -> GraphQLEndpoint:
    for route in app.routes:
        endpoint = getattr(route, "endpoint", None)
        if isinstance(endpoint, GraphQLEndpoint):
            return endpoint
    raise LookupError("the app has no GraphQL endpoint")


def use_stock_executor(app: Starlette) -> None:
    """Make the app's schema execute with Strawberry's own executor instead of app/graphql/execution.py's."""
    schema = graphql_endpoint(app).schema
    assert isinstance(schema, Schema)
    schema.execution_context_class = StrawberryGraphQLCoreExecutionContext
