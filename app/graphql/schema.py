"""The GraphQL schema: the Query root, its limits and error handling.

It is an Apollo Federation 2 subgraph (Strawberry's federation schema): Batch and Essay are entities keyed by `id`
(app/graphql/entities.py), and Query has federation's `_entities` and `_service` besides its own fields.
`schema.graphql` at the repository root is this schema's SDL, exactly what `_service { sdl }` answers, and what a
supergraph is composed from (docs/gateway.md); regenerate it after a change with

    .venv/bin/python -m app.graphql.schema > schema.graphql
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from importlib.metadata import version
from typing import TYPE_CHECKING, Any, Literal, cast

import strawberry
import structlog
from graphql import ASTValidationRule
from opentelemetry.trace import TracerProvider
from strawberry.extensions import AddValidationRules, ValidationCache
from strawberry.schema.config import StrawberryConfig
from strawberry.schema.schema import StreamResult
from strawberry.types import ExecutionContext
from strawberry.types.graphql import OperationType
from strawberry.utils.aio import aclosing

from app import metrics
from app.graphql import resolvers
from app.graphql.consistency import ConsistencyGate, consistent
from app.graphql.documents import DocumentCache, Documents
from app.graphql.entities import REPRESENTATION_SCALAR
from app.graphql.enums import LONG_SCALAR, Long
from app.graphql.errors import ErrorShaping
from app.graphql.limits import IntrospectionDisabled, ParseLimits, alias_rule, depth_rule
from app.graphql.subscriptions import LiveContext, Subscription, WebSocketOnly
from app.graphql.suggestions import HiddenSuggestions
from app.graphql.tracing import TracedOperation, problem
from app.graphql.types import PHASE_RESULT_TYPES, Batch, BatchConnection, Essay, Projection, resolved
from app.limits import ApiLimits

if TYPE_CHECKING:
    from app.graphql.execution import FastExecutionContext

log = structlog.get_logger(__name__)


@strawberry.type(description="Read the essay-processing platform's results: batches, essays and phase results.")
class Query:
    batch: Batch | None = resolved(
        resolver=resolvers.batch,
        graphql_type=Batch | None,
        description="A batch by id; null when there is none (or it belongs to another user than X-User-ID).",
    )
    batches: BatchConnection = resolved(
        resolver=resolvers.batches,
        graphql_type=BatchConnection,
        description="Batches, newest first, a page at a time. With X-User-ID, only that user's.",
    )
    essay: Essay | None = resolved(
        resolver=resolvers.essay,
        graphql_type=Essay | None,
        description="An essay by id; null when there is none (or, with X-User-ID, its batch is another user's).",
    )
    projection: Projection = resolved(
        resolver=resolvers.projection,
        graphql_type=Projection,
        description="The consumer's positions, lag and newest applied event: how fresh this data is.",
    )


@dataclass(frozen=True, slots=True)
class Executor:
    """The executor a schema runs queries with. `reason`: why it is the stock one though the fast one was asked for."""

    name: Literal["fast", "stock"]
    context_class: type[FastExecutionContext] | None  # None: Strawberry's own
    reason: str | None = None


def choose_executor(wanted: Literal["fast", "stock"]) -> Executor:
    """app/graphql/execution.py's fast path when asked for and its start-up check passes, else Strawberry's stock
    executor.

    The fast path's module is imported here, guarded: it imports Strawberry's and graphql-core's internals at its
    top, and one missing must not stop the API, only the fast path."""
    if wanted == "stock":
        return Executor("stock", None)
    try:
        from app.graphql import execution
    except Exception as exc:
        return Executor("stock", None, f"app/graphql/execution.py cannot be imported: {type(exc).__name__}: {exc}")
    problem = execution.self_check()
    if problem is not None:
        return Executor("stock", None, problem)
    return Executor("fast", execution.FastExecutionContext)


def _announce(executor: Executor) -> None:
    """One log line naming the executor (a warning when the fast one was asked for but is not used), and a gauge."""
    for name in ("fast", "stock"):
        metrics.GRAPHQL_EXECUTOR.labels(name).set(1 if name == executor.name else 0)
    if executor.reason is None:
        log.info("graphql executor", executor=executor.name)
        return
    log.warning(
        "graphql fast executor unavailable; serving through Strawberry's stock executor (same answers, slower on "
        "large ones)",
        executor=executor.name,
        reason=executor.reason,
        strawberry_graphql=version("strawberry-graphql"),
        graphql_core=version("graphql-core"),
        hint="run the versions pyproject.toml fences, or set RAS_GRAPHQL_EXECUTOR=stock to choose this knowingly",
    )


FEDERATION_VERSION: Literal["2.0"] = "2.0"
"""The oldest Federation 2 version: `@key` is all this subgraph uses, and every Federation 2 gateway composes it."""


class Schema(strawberry.federation.Schema):
    executor: Executor

    def process_errors(self, errors: list[Any], execution_context: ExecutionContext | None = None) -> None:
        """Errors are logged by ErrorShaping, with their correlation id, and only when they are internal."""

    async def stream(
        self,
        query: str | None,
        variable_values: dict[str, Any] | None = None,
        context_value: Any | None = None,
        root_value: Any | None = None,
        operation_name: str | None = None,
        operation_extensions: dict[str, Any] | None = None,
        allowed_operation_types: Iterable[OperationType] | None = None,
    ) -> StreamResult:
        """Strawberry runs every operation of a WebSocket connection with the connection's one context; here each
        operation gets its own (app/graphql/subscriptions.py explains why), closed when its stream ends."""
        if isinstance(context_value, LiveContext) and context_value.is_connection:
            context_value = context_value.for_operation()
        source = await super().stream(
            query,
            variable_values,
            context_value,
            root_value,
            operation_name,
            operation_extensions,
            allowed_operation_types,
        )
        if isinstance(context_value, LiveContext):
            return _closing(source, context_value)
        return source


async def _closing(source: StreamResult, context: LiveContext) -> StreamResult:
    try:
        async with aclosing(source):
            async for result in source:
                yield result
    finally:
        await context.close()


# Distinct query texts kept parsed and validated; bounded, since clients choose the texts.
DOCUMENT_CACHE_SIZE = 256


def build_schema(
    limits: ApiLimits | None = None, *, announce: bool = True, tracing: TracerProvider | None = None
) -> Schema:
    """The API's schema, executing with the executor `limits.executor` asks for if it can (see `choose_executor`);
    `announce`: log which one, and set the `ras_graphql_executor` gauge. `tracing`: operations get spans from it
    (app/graphql/tracing.py)."""
    limits = limits or ApiLimits()
    executor = choose_executor(limits.executor)
    if announce:
        _announce(executor)
    rules: list[type[ASTValidationRule]] = [depth_rule(limits.max_depth), alias_rule(limits.max_aliases)]
    hidden: list[Any] = []
    if not limits.introspection:
        rules.append(IntrospectionDisabled)
        hidden.append(HiddenSuggestions)  # suggestions would spell out the schema introspection hides
    documents = Documents(DOCUMENT_CACHE_SIZE)
    extensions: list[Any] = [
        lambda: ParseLimits(limits),
        lambda: AddValidationRules(rules),
        # Parsing and validating a query depend on its text alone, and cost more than answering a small one
        # (R3's list of 100 batches: 4 ms of 30; R2's 1,000 essays: 15 ms): gateways send the same texts again.
        lambda: DocumentCache(documents),
        lambda: ValidationCache(maxsize=DOCUMENT_CACHE_SIZE),
        ErrorShaping,
        ConsistencyGate,
        WebSocketOnly,
        *hidden,
        *_tracing_extensions(tracing),
    ]
    schema = Schema(
        query=Query,
        subscription=Subscription,
        # Strawberry's federation schema annotates these as classes; it takes directives as the base schema does.
        directives=[cast(type, consistent)],
        types=list(PHASE_RESULT_TYPES),
        extensions=extensions,
        config=StrawberryConfig(scalar_map={Long: LONG_SCALAR}),
        execution_context_class=executor.context_class,  # app/graphql/execution.py: large answers' fast path
        federation_version=FEDERATION_VERSION,
        scalar_overrides=REPRESENTATION_SCALAR,
    )
    schema.executor = executor
    return schema


def _tracing_extensions(provider: TracerProvider | None) -> list[Any]:
    if provider is None:
        return []
    reason = problem()
    if reason is not None:
        log.warning("graphql operations traced without parse, validation and execution spans", reason=reason)
        return []
    return [lambda: TracedOperation(tracer_provider=provider)]


def sdl() -> str:
    """The schema's SDL as schema.graphql holds it (the same whichever executor; printed, so nothing is logged)."""
    return build_schema(ApiLimits(executor="stock"), announce=False).as_str() + "\n"


if __name__ == "__main__":
    print(sdl(), end="")
