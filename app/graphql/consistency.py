"""The GraphQL side of read-your-writes: the `@consistent` operation directive and the extension that waits for it
before any field is resolved. The wait itself, and what "applied" means, is app/reads/consistency.py's.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Annotated, Any

import strawberry
from graphql import (
    DirectiveNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLIncludeDirective,
    GraphQLObjectType,
    GraphQLSchema,
    GraphQLSkipDirective,
    InlineFragmentNode,
    OperationDefinitionNode,
    OperationType,
    SelectionNode,
    SelectionSetNode,
    get_argument_values,
    get_directive_values,
)
from graphql import ExecutionResult as GraphQLExecutionResult
from graphql.execution.values import VariableValues, get_variable_values
from strawberry.directive import DirectiveLocation
from strawberry.extensions import SchemaExtension

from app.errors import ApiError, BadUserInput, LimitExceeded
from app.graphql.enums import Long
from app.reads.consistency import Consistency, WaitKey

CONSISTENCY_TIMEOUT = "CONSISTENCY_TIMEOUT"
DIRECTIVE = "consistent"
PROJECTION_FIELD, PROJECTION_TYPE, WAIT_FOR_FIELD = "projection", "Projection", "waitFor"


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
    """Waits for an operation's `@consistent` position, and for the position of each of its `Projection.waitFor`
    fields, before any field is resolved: the request's snapshot (one pooled connection) opens only after every wait,
    so no wait holds one. The waits of one operation run together; `waitFor` then answers what its wait found."""

    async def on_execute(self) -> AsyncIterator[None]:
        context = self.execution_context
        document = context.graphql_document
        operation = _operation(document, context.operation_name)
        request = context.context
        node = next((d for d in operation.directives or () if d.name.value == DIRECTIVE), None) if operation else None
        # Most queries wait for nothing: they are not walked (a field's name is in the text of a query that uses it).
        may_wait = node is not None or context.query is None or WAIT_FOR_FIELD in context.query
        if operation is None or operation.operation is not OperationType.QUERY or not may_wait:
            yield
            return
        schema = context.schema._schema
        variables = get_variable_values(schema, operation.variable_definitions or (), context.variables or {})
        if isinstance(variables, list):  # bad variables: execution reports them, there is nothing to wait for
            yield
            return
        fragments = {
            d.name.value: d for d in getattr(document, "definitions", ()) if isinstance(d, FragmentDefinitionNode)
        }
        probes = set(_wait_for_keys(schema, operation, fragments, variables))
        gate = _directive_key(schema, operation, variables) if node is not None else None
        consistency = getattr(request, "consistency", None)
        keys = list(probes | ({gate} if gate is not None else set()))
        outcomes = dict(zip(keys, await asyncio.gather(*(_wait(consistency, key) for key in keys)), strict=True))
        waited = getattr(request, "waited", None)
        if waited is not None:
            waited.update((key, outcomes[key]) for key in probes)
        session = getattr(request, "session", None)
        if session is not None:
            # Reached on the primary: a replica serves the request only once it has applied the same positions.
            for (topic, partition, offset, _), outcome in outcomes.items():
                if outcome is True:
                    session.require((topic, partition), offset + 1)
        if gate is not None and node is not None:
            error = _refusal(gate, outcomes[gate], node)
            if error is not None:
                # A result set here is returned as is: execution (and every read) is skipped.
                context.result = GraphQLExecutionResult(data=None, errors=[error])
        yield


async def _wait(consistency: Consistency | None, key: WaitKey) -> bool | ApiError:
    if consistency is None:  # an app without read-your-writes: never reached
        return False
    try:
        return await consistency.reached(*key)
    except (BadUserInput, LimitExceeded) as exc:
        return exc


def _refusal(key: WaitKey, outcome: bool | ApiError, node: DirectiveNode) -> GraphQLError | None:
    """The error that stops a `@consistent` operation, or None when its position was reached."""
    if isinstance(outcome, ApiError):
        return GraphQLError(outcome.message, node, extensions={"code": outcome.code, **outcome.extensions})
    if outcome:
        return None
    topic, partition, offset, timeout_ms = key
    waited = "" if timeout_ms is None else f" within {timeout_ms} ms"
    return GraphQLError(
        f"The projection has not applied {topic}[{partition}] offset {offset}{waited}, so nothing "
        "was read. Retry, or see Query.projection for the consumer's lag.",
        node,
        extensions={"code": CONSISTENCY_TIMEOUT, "topic": topic, "partition": partition},
    )


def _directive_key(schema: GraphQLSchema, operation: OperationDefinitionNode, variables: VariableValues) -> WaitKey:
    definition = schema.get_directive(DIRECTIVE)
    assert definition is not None
    args = get_directive_values(definition, operation, variables) or {}
    return _key(args)


def _wait_for_keys(
    schema: GraphQLSchema,
    operation: OperationDefinitionNode,
    fragments: dict[str, FragmentDefinitionNode],
    variables: VariableValues,
) -> Iterator[WaitKey]:
    """The arguments of every `projection { waitFor }` the operation would execute (fragments followed, @skip and
    @include applied). `Query.projection` is the only way to a Projection."""
    projection = schema.get_type(PROJECTION_TYPE)
    assert isinstance(projection, GraphQLObjectType)
    definition = projection.fields[WAIT_FOR_FIELD]
    for root in _fields(operation.selection_set, fragments, variables):
        if root.name.value == PROJECTION_FIELD and root.selection_set is not None:
            for field in _fields(root.selection_set, fragments, variables):
                if field.name.value == WAIT_FOR_FIELD:
                    yield _key(get_argument_values(definition, field, variables))


def _key(args: dict[str, Any]) -> WaitKey:
    timeout_ms = args.get("timeoutMs")
    return str(args["topic"]), int(args["partition"]), int(args["offset"]), timeout_ms


def _fields(
    selections: SelectionSetNode,
    fragments: dict[str, FragmentDefinitionNode],
    variables: VariableValues,
    spread: frozenset[str] = frozenset(),
) -> Iterator[FieldNode]:
    for selection in selections.selections:
        if not _included(selection, variables):
            continue
        if isinstance(selection, FieldNode):
            yield selection
        elif isinstance(selection, InlineFragmentNode):
            yield from _fields(selection.selection_set, fragments, variables, spread)
        elif isinstance(selection, FragmentSpreadNode):
            name = selection.name.value
            if name in fragments and name not in spread:  # validation refuses cycles; this only guards the walk
                yield from _fields(fragments[name].selection_set, fragments, variables, spread | {name})


def _included(node: SelectionNode, variables: VariableValues) -> bool:
    skip = get_directive_values(GraphQLSkipDirective, node, variables)
    include = get_directive_values(GraphQLIncludeDirective, node, variables)
    return not (skip and skip["if"]) and not (include and not include["if"])


def _operation(document: object, name: str | None) -> OperationDefinitionNode | None:
    definitions = getattr(document, "definitions", ())
    operations = [d for d in definitions if isinstance(d, OperationDefinitionNode)]
    if name is None:
        return operations[0] if len(operations) == 1 else None
    return next((o for o in operations if o.name is not None and o.name.value == name), None)
