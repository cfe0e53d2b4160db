"""The GraphQL side of read-your-writes: the `@consistent` operation directive and the extension that waits for it
before any field is resolved. The wait itself, and what "applied" means, is app/reads/consistency.py's.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

import strawberry
from graphql import ExecutionResult as GraphQLExecutionResult
from graphql import GraphQLError, OperationDefinitionNode, OperationType, get_directive_values
from graphql.execution.values import get_variable_values
from strawberry.directive import DirectiveLocation
from strawberry.extensions import SchemaExtension

from app.errors import BadUserInput, LimitExceeded
from app.graphql.enums import Long

CONSISTENCY_TIMEOUT = "CONSISTENCY_TIMEOUT"
DIRECTIVE = "consistent"


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
