"""Read-your-writes: a caller that has just produced an event can ask a query to wait until the projection applied it.

The caller knows where its event landed (topic, partition and offset, from the producer's acknowledgement). The
projection has applied it once the consumer's stored position of that partition is past the offset: positions are
committed in the same transaction as the rows (consumer/apply.py), so "position > offset" means "the rows reflect
the event" (or that it was quarantined, or ignored as a duplicate: in every case nothing more will come of it).

Two ways to ask, both bounded by RAS_CONSISTENCY_MAX_WAIT_MS:

* `query Q @consistent(topic: …, partition: …, offset: …, timeoutMs: …) { … }` — the operation's fields are read
  only once the position is reached, from a snapshot taken after it (`ConsistencyGate` waits in `on_execute`, before
  any resolver runs; the request's snapshot opens at its first read). If the position is not reached in time,
  nothing is read and the answer is a CONSISTENCY_TIMEOUT error: never an answer older than the awaited event.
* `projection { waitFor(topic: …, partition: …, offset: …, timeoutMs: …) }` — true when the position was reached
  in time, false otherwise; a probe, for callers that then query (or poll a REST route) themselves. The other fields
  of *that* request may have been read before the wait ended.

The wait itself (app/events.py) reads the positions table once, then sleeps until the consumer's position message
for the partition arrives (Redis pub/sub, published after each commit) or the timeout passes, with one last read at
the deadline in case a message was lost. There is no polling loop against the database.

An event id cannot be awaited: the consumer does not record event ids (duplicates are recognised by content, and
the outbox relay renews ids on every re-send), so there is nothing to look an id up in.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Annotated

import strawberry
from graphql import ExecutionResult as GraphQLExecutionResult
from graphql import GraphQLError, OperationDefinitionNode, OperationType, get_directive_values
from graphql.execution.values import get_variable_values
from sqlalchemy.ext.asyncio import AsyncEngine
from strawberry.directive import DirectiveLocation
from strawberry.extensions import SchemaExtension

from app.enums import Long
from app.errors import BadUserInput, LimitExceeded
from app.events import EventHub
from db.positions import load_positions

CONSISTENCY_TIMEOUT = "CONSISTENCY_TIMEOUT"
DEFAULT_TIMEOUT_MS = 5_000
DIRECTIVE = "consistent"


@dataclass(frozen=True)
class Consistency:
    """Waits for stored positions. Without a hub (live updates disabled) it can only look once."""

    hub: EventHub | None
    engine: Callable[[], AsyncEngine]
    max_wait_ms: int

    def timeout_seconds(self, timeout_ms: int | None) -> float:
        ms = DEFAULT_TIMEOUT_MS if timeout_ms is None else timeout_ms
        if ms < 0:
            raise BadUserInput("timeoutMs must not be negative.")
        if ms > self.max_wait_ms:
            raise LimitExceeded(
                f"timeoutMs {ms} exceeds the limit of {self.max_wait_ms} ms (RAS_CONSISTENCY_MAX_WAIT_MS).",
                limit=self.max_wait_ms,
            )
        return min(ms, self.max_wait_ms) / 1000

    async def reached(self, topic: str, partition: int, offset: int, timeout_ms: int | None) -> bool:
        """Whether the record at `offset` of `topic`/`partition` is applied, waiting up to `timeout_ms`."""
        if offset < 0 or partition < 0:
            raise BadUserInput("partition and offset must not be negative.")
        timeout = self.timeout_seconds(timeout_ms)

        async def stored() -> int | None:
            # Its own short connection, outside the request's snapshot: that must open only after the wait.
            async with self.engine().connect() as conn:
                return (await load_positions(conn, [(topic, partition)])).get((topic, partition))

        if self.hub is None:
            position = await stored()
            return position is not None and position > offset
        return await self.hub.wait_for_position((topic, partition), offset + 1, timeout, stored)


@strawberry.directive(
    locations=[DirectiveLocation.QUERY],
    name=DIRECTIVE,
    description="Read-your-writes: run this query only once the projection has applied the record at `offset` of "
    "`topic`/`partition` (from the producer's acknowledgement), waiting up to `timeoutMs` (default 5000, at most the "
    "server's RAS_CONSISTENCY_MAX_WAIT_MS). If it is not applied in time the query reads nothing and fails with "
    "CONSISTENCY_TIMEOUT.",
)
def consistent(
    topic: Annotated[str, strawberry.argument(description="The topic the awaited record was produced to.")],
    partition: Annotated[int, strawberry.argument(description="Its partition.")],
    offset: Annotated[Long, strawberry.argument(description="Its offset (from the producer's acknowledgement).")],
    timeout_ms: Annotated[
        int | None, strawberry.argument(description="How long to wait: default 5000, at most the server's limit.")
    ] = None,
) -> None:
    """Handled by ConsistencyGate before execution; Strawberry only declares it."""


class ConsistencyGate(SchemaExtension):
    """Waits for an operation's `@consistent` position before any field is resolved."""

    async def on_execute(self) -> AsyncIterator[None]:
        context = self.execution_context
        operation = _operation(context.graphql_document, context.operation_name)
        node = next((d for d in operation.directives or () if d.name.value == DIRECTIVE), None) if operation else None
        consistency = getattr(context.context, "consistency", None)
        if node is not None and operation is not None and operation.operation is OperationType.QUERY:
            schema = context.schema._schema
            definition = schema.get_directive(DIRECTIVE)
            assert definition is not None
            variables = get_variable_values(schema, operation.variable_definitions or (), context.variables or {})
            if isinstance(variables, list):  # bad variables: execution reports them, there is nothing to wait for
                yield
                return
            args = get_directive_values(definition, operation, variables) or {}
            topic, partition, offset = str(args["topic"]), int(args["partition"]), int(args["offset"])
            timeout_ms = args.get("timeoutMs")
            error: GraphQLError | None = None
            try:
                if consistency is None:
                    reached = False
                else:
                    reached = await consistency.reached(topic, partition, offset, timeout_ms)
            except (BadUserInput, LimitExceeded) as exc:
                error = GraphQLError(exc.message, node, extensions={"code": exc.code, **exc.extensions})
            else:
                if not reached:
                    waited = "" if timeout_ms is None else f" within {timeout_ms} ms"
                    error = GraphQLError(
                        f"The projection has not applied {topic}[{partition}] offset {offset}{waited}, so nothing "
                        "was read. Retry, or see Query.projection for the consumer's lag.",
                        node,
                        extensions={"code": CONSISTENCY_TIMEOUT, "topic": topic, "partition": partition},
                    )
            if error is not None:
                # A result set here is returned as is: execution (and every read) is skipped.
                context.result = GraphQLExecutionResult(data=None, errors=[error])
        yield


def _operation(document: object, name: str | None) -> OperationDefinitionNode | None:
    definitions = getattr(document, "definitions", ())
    operations = [d for d in definitions if isinstance(d, OperationDefinitionNode)]
    if name is None:
        return operations[0] if len(operations) == 1 else None
    return next((o for o in operations if o.name is not None and o.name.value == name), None)
