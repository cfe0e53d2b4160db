"""An operation's spans, when tracing is on: Strawberry's OpenTelemetry extension, less its per-field spans.

Strawberry's extension gives the operation (`GraphQL Query: <name>`), parsing and validation their spans. Two
changes make it fit here:

- **No span per resolver.** Its `resolve` hook would be graphql-core middleware, which turns the fast executor off
  (app/graphql/execution.py) and makes a span of every field of a 1,000-essay answer. Without it, the loaders' spans
  (app/reads/loaders.py) and their statements show where the time goes.
- **An execution span, current while the operation executes.** The extension starts its spans without making them
  current, so the loaders' and statements' spans would hang off the request's span; `GraphQL Execution` is current
  while the operation executes, so they nest under it.

Both lean on Strawberry's internals (how it decides an extension is middleware; the extension's `_span_holder` and
`_tracer`), within the versions pyproject.toml fences; `problem` checks them when the schema is built, and the
schema goes without this extension when they changed (the request, loader, statement and cache spans remain).

Operations over WebSocket (subscriptions, app/graphql/subscriptions.py) are not traced, as their connections are
not (app/tracing.py).
"""

from __future__ import annotations

from collections.abc import Generator

from opentelemetry import context, trace
from strawberry.extensions import LifecycleStep, SchemaExtension
from strawberry.extensions.tracing import OpenTelemetryExtension

from app.graphql.subscriptions import LiveContext


class TracedOperation(OpenTelemetryExtension):
    # Strawberry adds an extension as middleware only when its `resolve` is not SchemaExtension's own.
    resolve = SchemaExtension.resolve  # type: ignore[assignment]

    def _traced(self) -> bool:
        return not isinstance(self.execution_context.context, LiveContext)

    def on_operation(self) -> Generator[None, None, None]:
        if self._traced():
            yield from super().on_operation()
        else:
            yield

    def on_parse(self) -> Generator[None, None, None]:
        if self._traced():
            yield from super().on_parse()
        else:
            yield

    def on_validate(self) -> Generator[None, None, None]:
        if self._traced():
            yield from super().on_validate()
        else:
            yield

    def on_execute(self) -> Generator[None, None, None]:
        if not self._traced():
            yield
            return
        operation = trace.set_span_in_context(self._span_holder[LifecycleStep.OPERATION])
        span = self._tracer.start_span("GraphQL Execution", context=operation)
        token = context.attach(trace.set_span_in_context(span))
        try:
            yield
        finally:
            context.detach(token)
            span.end()


def problem() -> str | None:
    """Why this extension cannot be used with the installed Strawberry, or None when it can."""
    implements = getattr(TracedOperation, "_implements_resolve", None)
    if not callable(implements) or implements():
        return "Strawberry would run the extension as middleware (it decides by SchemaExtension._implements_resolve)"
    probe = TracedOperation(tracer_provider=trace.NoOpTracerProvider())
    missing = [name for name in ("_span_holder", "_tracer") if not hasattr(probe, name)]
    if missing or not hasattr(OpenTelemetryExtension, "on_operation"):
        return f"Strawberry's OpenTelemetryExtension changed: no {', '.join(missing) or 'on_operation'}"
    return None
