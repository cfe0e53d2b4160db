"""GraphQL subscriptions: live batch progress pushed when the consumer commits a change, over graphql-transport-ws.

How an update travels: the consumer commits, evicts the cache, publishes "batch X changed" on Redis (consumer/
notify.py); every API process's `EventHub` (app/live.py) hears it and wakes the subscriptions of batch X, each of
which re-reads the batch through fresh loaders and a fresh snapshot, exactly as a new query would, and yields it.
So a pushed payload is always what `Query.batch` would answer at that moment, selection and scoping included.

Contexts: Strawberry gives a WebSocket connection one context. Here that is a `LiveContext` holding the caller
(authenticated from `connection_init`, see `authenticate_connection`); every operation on the connection gets its
own copy (`Schema.stream` in app/graphql/schema.py calls `for_operation`), and a subscription renews the copy's snapshot
and loaders before each update (`renew`). graphql-core resolves one update's fields before asking the generator
for the next, so renewing at that point never pulls a snapshot from under a running resolver. Between updates a
subscription holds no database connection.

Scoping is that of queries: with X-User-ID, another user's batch reads as null. A subscription yields its first
value at once (so a client needs no separate query and misses nothing between the two), then one per change; a
null is not repeated while the batch stays invisible, so watching another user's batch reveals nothing, not even
when it changes.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any

import strawberry
from graphql import ExecutionResult as GraphQLExecutionResult
from graphql import GraphQLError
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.datastructures import Headers
from starlette.websockets import WebSocket
from strawberry.extensions import SchemaExtension
from strawberry.types.graphql import OperationType

from app.auth import (
    API_KEY_HEADER,
    MISSING,
    SERVICE_HEADER,
    USER_HEADER,
    AuthError,
    Caller,
    check,
    credential_headers,
    credential_params,
)
from app.errors import BAD_USER_INPUT, ApiError, BadUserInput
from app.graphql.connections import BatchList, Info
from app.graphql.resolvers import _list_owner  # the same scoping rule as Query.batches
from app.graphql.types import Batch, BatchConnection
from app.limits import ApiLimits, check_page_size
from app.live import EventHub, SubscriberTooSlow
from app.reads.consistency import Consistency
from app.reads.context import RequestContext, new_context
from app.reads.loaders import BatchPageKey, Loaders, ReadTags
from app.reads.session import ReadSession
from db.reads import BatchQuery
from db.rows import BatchRow
from infra.breaker import CircuitBreaker
from infra.settings import Settings

SUBSCRIBER_TOO_SLOW = "SUBSCRIBER_TOO_SLOW"
WS_BAD_REQUEST = 4400
WS_UNAUTHORIZED = 4401
WS_FORBIDDEN = 4403


class SubscriberDropped(ApiError):
    code = SUBSCRIBER_TOO_SLOW


@dataclass(kw_only=True)
class LiveContext(RequestContext):
    """The context of a WebSocket connection, and (`for_operation`) of each operation run on it."""

    engine: AsyncEngine
    breaker: CircuitBreaker | None
    hub: EventHub
    settings: Settings
    websocket: WebSocket | None = None
    connection_params: dict[str, Any] | None = None
    is_connection: bool = True
    authenticated: bool = field(default=False)

    @classmethod
    def open(
        cls,
        engine: AsyncEngine,
        caller: Caller,
        correlation: str,
        limits: ApiLimits,
        breaker: CircuitBreaker | None,
        consistency: Consistency | None,
        *,
        hub: EventHub,
        settings: Settings,
        websocket: WebSocket | None = None,
        is_connection: bool = True,
        authenticated: bool = False,
    ) -> LiveContext:
        """A context with a snapshot of its own, made as `new_context` makes a request's."""
        base = new_context(engine, caller, correlation, limits, breaker, consistency)
        return cls(
            base.caller,
            base.correlation_id,
            base.limits,
            base.session,
            base.tags,
            base.loaders,
            base.consistency,
            engine=engine,
            breaker=breaker,
            hub=hub,
            settings=settings,
            websocket=websocket,
            is_connection=is_connection,
            authenticated=authenticated,
        )

    def for_operation(self) -> LiveContext:
        return LiveContext.open(
            self.engine,
            self.caller,
            self.correlation_id,
            self.limits,
            self.breaker,
            self.consistency,
            hub=self.hub,
            settings=self.settings,
            is_connection=False,
            authenticated=self.authenticated,
        )

    async def renew(self) -> None:
        """End the current snapshot and start afresh: the next read sees everything committed since."""
        await self.session.close()
        self.session = ReadSession(self.engine, self.breaker)
        self.tags = ReadTags()
        self.loaders = Loaders(self.session, self.caller.user_id, self.tags)


@dataclass(frozen=True, slots=True)
class Rejection:
    code: int
    reason: str


def authenticate_connection(
    headers: Headers, params: Mapping[str, Any] | None, settings: Settings
) -> Caller | Rejection:
    """The caller of a WebSocket connection, from the `connection_init` payload or the upgrade request's headers.

    Browsers cannot set headers on a WebSocket, so the credentials may come in the payload, under the header names
    (case-insensitive). Credentials on the upgrade request (a gateway in front) take precedence over the payload's;
    a user id in both must agree, so a payload cannot widen or switch the scope a gateway set. Either place may
    name each credential once (app/auth.py).
    """
    sent = credential_headers(headers.raw)
    if isinstance(sent, AuthError):
        return _rejection(sent)
    given = credential_params(params or {})
    if isinstance(given, AuthError):
        return _rejection(given)
    merged: dict[str, str] = {}
    for name in (API_KEY_HEADER, SERVICE_HEADER):
        value = sent.get(name) or given.get(name)
        if value is not None:
            merged[name] = value
    header_user, param_user = sent.get(USER_HEADER), given.get(USER_HEADER)
    if header_user is not None and param_user is not None and header_user != param_user:
        return Rejection(WS_FORBIDDEN, "Forbidden: X-User-ID in connection_init differs from the request's")
    user = header_user if header_user is not None else param_user
    if user is not None:
        merged[USER_HEADER] = user
    caller = check(merged, settings)
    return _rejection(caller) if isinstance(caller, AuthError) else caller


def _rejection(error: AuthError) -> Rejection:
    if error.reason == MISSING:
        return Rejection(WS_UNAUTHORIZED, "Unauthorized: send X-Internal-API-Key and X-Service-ID in connection_init")
    if error.status == 400:
        return Rejection(WS_BAD_REQUEST, "Bad request: " + error.hint[:100])
    return Rejection(WS_FORBIDDEN, "Forbidden: " + error.hint[:100])


# --- resolvers ----------------------------------------------------------------------------------------------------


def _live(info: Info) -> LiveContext:
    context = info.context
    if not isinstance(context, LiveContext) or context.is_connection:
        raise BadUserInput("Subscriptions are served over WebSocket (graphql-transport-ws) at this endpoint.")
    return context


def _too_slow(context: LiveContext) -> SubscriberDropped:
    size = context.hub.queue_size
    return SubscriberDropped(
        f"Subscriber too slow: more than {size} updates were waiting to be sent, so the subscription was dropped. "
        "Subscribe again to get the current state.",
        limit=size,
    )


async def batch_progress(
    info: Info, batch_id: Annotated[strawberry.ID, strawberry.argument(description="The batch id.")]
) -> AsyncGenerator[BatchRow | None, None]:
    context = _live(info)
    hub = context.hub
    with hub.subscribe([hub.layout.batch_channel(str(batch_id))]) as inbox:
        first, last = True, None
        while True:
            await context.renew()
            row = await context.loaders.batch.load(str(batch_id))
            if first or row is not None or last is not None:
                yield row
            first, last = False, row
            await context.session.close()  # the update's fields are resolved: hold no connection while idle
            try:
                if not await inbox.next():
                    return
            except SubscriberTooSlow:
                raise _too_slow(context) from None


async def user_batches(
    info: Info,
    user_id: Annotated[
        str | None,
        strawberry.argument(
            description="Whose batches. With X-User-ID only that user (the default); without, required."
        ),
    ] = None,
    first: Annotated[int | None, strawberry.argument(description="How many of the newest batches.")] = None,
) -> AsyncGenerator[BatchList, None]:
    context = _live(info)
    owner = _list_owner(context.caller, user_id)
    if owner is None:
        raise BadUserInput("userId is required when the connection does not act for a user (X-User-ID).")
    limits = context.limits
    size = limits.batches_page_default if first is None else first
    check_page_size(size, limits.batches_page_max, "batches")
    hub = context.hub
    key = BatchPageKey(BatchQuery(user_id=owner), size, None)
    with hub.subscribe([hub.layout.user_channel(owner)]) as inbox:
        while True:
            await context.renew()
            yield BatchList(key)
            await context.session.close()
            try:
                if not await inbox.next():
                    return
            except SubscriberTooSlow:
                raise _too_slow(context) from None


class WebSocketOnly(SchemaExtension):
    """A subscription sent as a plain HTTP request is refused: Strawberry would otherwise run it like a query and
    answer with a meaningless null."""

    def on_execute(self) -> Iterator[None]:
        context = self.execution_context
        if context.operation_type is OperationType.SUBSCRIPTION and not isinstance(context.context, LiveContext):
            message = "Subscriptions are served over WebSocket (graphql-transport-ws) at this endpoint."
            context.result = GraphQLExecutionResult(
                data=None, errors=[GraphQLError(message, extensions={"code": BAD_USER_INPUT})]
            )
        yield


def _subscription(resolver: Any, graphql_type: Any, description: str) -> Any:
    """A subscription field whose resolver yields rows, not the GraphQL type it is declared with (as `resolved`)."""
    return strawberry.subscription(resolver=resolver, graphql_type=graphql_type, description=description)


@strawberry.type(
    description="Live updates, over WebSocket (graphql-transport-ws) at /graphql. Each subscription sends the "
    "current value at once, then a new one whenever the consumer commits a change to it."
)
class Subscription:
    batch_progress: Batch | None = _subscription(
        resolver=batch_progress,
        graphql_type=Batch | None,
        description="A batch, sent now and again after every committed change (status, counts, essays' results). "
        "Null while it does not exist or is another user's; a null is not repeated.",
    )
    user_batches: BatchConnection = _subscription(
        resolver=user_batches,
        graphql_type=BatchConnection,
        description="A user's newest batches (like Query.batches(userId)), sent now and again whenever one of their "
        "batches changes or a new one is registered.",
    )
