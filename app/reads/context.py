"""What one request carries through execution: who asks, its correlation id, its loaders and read snapshot."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from opentelemetry.trace import Tracer
from sqlalchemy.ext.asyncio import AsyncEngine

from app.admission import AdmissionGate
from app.auth import Caller
from app.limits import ApiLimits
from app.reads.consistency import Consistency, Waited
from app.reads.loaders import Loaders, ReadTags
from app.reads.session import ReadSession
from app.replicas import Replicas
from infra.breaker import CircuitBreaker

CORRELATION_HEADER = "X-Correlation-ID"
# A caller's correlation id is reused only when it is short and plain: it ends up in logs and responses.
_SAFE_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def correlation_id(headers: Mapping[str, str]) -> str:
    """The caller's X-Correlation-ID when it is a plain token, else a new uuid4."""
    given = headers.get(CORRELATION_HEADER, "")
    return given if _SAFE_ID.fullmatch(given) else _uuid4()


def _uuid4() -> str:
    """`str(uuid.uuid4())` in a third of the time (`uuid.UUID` validates its input): one per request."""
    digits = os.urandom(16).hex()
    variant = "89ab"[int(digits[16], 16) & 3]
    return f"{digits[:8]}-{digits[8:12]}-4{digits[13:16]}-{variant}{digits[17:20]}-{digits[20:]}"


@dataclass
class RequestContext:
    caller: Caller
    correlation_id: str
    limits: ApiLimits
    session: ReadSession
    tags: ReadTags
    loaders: Loaders
    # Read-your-writes waits (@consistent, Projection.waitFor); None where the app offers none.
    consistency: Consistency | None = None
    # What each Projection.waitFor found, filled before execution (app/graphql/consistency.py).
    waited: Waited = field(default_factory=dict)

    @property
    def read_batches(self) -> set[str]:
        """Ids of the batches this request read (found or not)."""
        return self.tags.batches

    @property
    def read_user_lists(self) -> set[str]:
        """User ids whose batch list views this request read; `loaders.ALL_USERS` for the unfiltered list."""
        return self.tags.user_lists

    async def close(self) -> None:
        await self.session.close()


def new_context(
    engine: AsyncEngine,
    caller: Caller,
    correlation: str,
    limits: ApiLimits,
    breaker: CircuitBreaker | None = None,
    consistency: Consistency | None = None,
    tracer: Tracer | None = None,
    gate: AdmissionGate | None = None,
    replicas: Replicas | None = None,
) -> RequestContext:
    """A request's context. Call inside the running event loop; `close()` it when the response is built (which also
    gives back the execution slot its first read took from `gate`). `tracer`: the loaders' spans, when the request is
    traced. `replicas`: where the request's snapshot opens when they serve (app/reads/session.py)."""
    session = ReadSession(engine, breaker, gate, replicas)
    tags = ReadTags()
    loaders = Loaders(session, caller.user_id, tags, tracer)
    return RequestContext(caller, correlation, limits, session, tags, loaders, consistency)
