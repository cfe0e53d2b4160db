"""Tracing into memory: the service's own provider (infra/tracing.py) with the SDK's in-memory exporter, and the
finished spans as a tree to assert on."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from infra.tracing import Tracing, provider_for

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"


@contextmanager
def in_memory(service: str) -> Iterator[tuple[Tracing, InMemorySpanExporter]]:
    """A `Tracing` whose spans are kept in memory as they end; shut down (the statements' instrumentation taken off
    again) when the block ends."""
    exporter = InMemorySpanExporter()
    tracing = Tracing(provider_for(service, [SimpleSpanProcessor(exporter)]))
    try:
        yield tracing, exporter
    finally:
        tracing.shutdown()


def hex_id(value: int, digits: int) -> str:
    return format(value, f"0{digits}x")


def children(spans: Sequence[ReadableSpan], parent: ReadableSpan) -> list[ReadableSpan]:
    parent_id = parent.context.span_id
    return [span for span in spans if span.parent is not None and span.parent.span_id == parent_id]


def descendants(spans: Sequence[ReadableSpan], root: ReadableSpan) -> list[ReadableSpan]:
    found = []
    for child in children(spans, root):
        found += [child, *descendants(spans, child)]
    return found


def tree(spans: Sequence[ReadableSpan]) -> str:
    """The spans as an indented tree, roots first, children in start order: name, span id, links (for docs and
    failure messages)."""
    ids = {span.context.span_id for span in spans}
    roots = [span for span in spans if span.parent is None or span.parent.span_id not in ids]
    lines: list[str] = []

    def walk(span: ReadableSpan, depth: int) -> None:
        parent = f" parent={hex_id(span.parent.span_id, 16)}" if span.parent is not None and depth == 0 else ""
        links = "".join(
            f" link={hex_id(link.context.trace_id, 32)}/{hex_id(link.context.span_id, 16)}" for link in span.links
        )
        lines.append(
            f"{'  ' * depth}{span.name} trace={hex_id(span.context.trace_id, 32)} "
            f"span={hex_id(span.context.span_id, 16)}{parent}{links}"
        )
        for child in sorted(children(spans, span), key=lambda s: s.start_time or 0):
            walk(child, depth + 1)

    for root in sorted(roots, key=lambda s: s.start_time or 0):
        walk(root, 0)
    return "\n".join(lines)
