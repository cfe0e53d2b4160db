"""The consumer's spans, when tracing is on (infra/tracing.py): one per transaction, linked to its events' traces.

A transaction applies events from many producers' traces at once, so its span is no child of any of them: it is
a root span with a link to the trace context each applied event carried (in its envelope's `metadata`, or its
Kafka headers; consumer.pure.trace_context), the link naming the record's topic, partition and offset. Under it:
`decode` (the worker thread's decoding, which ran before the transaction began, so the span starts then), the
database statements (the asyncpg instrumentation), then `evict` and `publish` after the commit. A fetch the
database refused and that was split to find the one record (consumer.apply.isolate_refused) is one span too, with
its several transactions' statements.

The links are read with the W3C trace-context propagator whatever OTEL_PROPAGATORS says, since W3C's fields are
what the contract puts in `metadata`. A malformed `traceparent` gives no link; the SDK keeps at most
OTEL_SPAN_LINK_COUNT_LIMIT links (128 by default) per span and counts the rest as dropped.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from opentelemetry import trace
from opentelemetry.trace import Link, Span, SpanKind, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from consumer.apply import Applied, OnApplied
from consumer.intake import Fetched
from consumer.pure.fetch import DecodedFetch

_W3C = TraceContextTextMapPropagator()


def links(fetch: DecodedFetch) -> list[Link]:
    """A link to each distinct trace context the fetch's applied events carried."""
    found: list[Link] = []
    seen: set[tuple[int, int]] = set()
    for carried in fetch.traces:
        context = trace.get_current_span(_W3C.extract(carried.fields)).get_span_context()
        if not context.is_valid or (context.trace_id, context.span_id) in seen:
            continue
        seen.add((context.trace_id, context.span_id))
        record = carried.record
        attributes: dict[str, str | int] = {
            "messaging.destination.name": record.topic,
            "messaging.destination.partition.id": str(record.partition),
            "messaging.kafka.offset": record.offset,
        }
        found.append(Link(context, attributes))
    return found


@contextmanager
def transaction_span(tracer: Tracer, fetched: Fetched) -> Iterator[Span]:
    """The span of applying `fetched`, current inside, with its `decode` child already ended."""
    fetch = fetched.decoded
    with tracer.start_as_current_span(
        "consume transaction",
        kind=SpanKind.CONSUMER,
        links=links(fetch),
        start_time=fetched.decode_started_ns or None,
        attributes={
            "messaging.system": "kafka",
            "messaging.operation.type": "process",
            "messaging.batch.message_count": len(fetch.records),
        },
    ) as span:
        decode = tracer.start_span("decode", start_time=fetched.decode_started_ns or None)
        decode.set_attribute("ras.records.quarantined", len(fetch.poison))
        decode.end(end_time=fetched.decode_ended_ns or None)
        yield span


def traced_step(tracer: Tracer, name: str, step: OnApplied) -> OnApplied:
    """`step` (the eviction, the publication) as a span of its own under the transaction's."""

    async def run(applied: Applied) -> None:
        attributes = {"ras.batches": len(applied.batch_ids), "ras.users": len(applied.user_ids)}
        with tracer.start_as_current_span(name, attributes=attributes):
            await step(applied)

    return run
