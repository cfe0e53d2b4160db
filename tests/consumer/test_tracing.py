"""The consumer traced into memory: each transaction's span links to the trace context its events carried (in the
envelope's metadata, or Kafka headers), with decode, statement, eviction and publication spans under it."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanContext, SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from sqlalchemy.ext.asyncio import AsyncEngine

from consumer.main import run
from consumer.pure.decode import Record
from consumer.pure.fetch import decode_fetch
from consumer.tracing import links
from infra.settings import Settings
from infra.tracing import Tracing
from tests.helpers.consumer import MAX_BYTES
from tests.helpers.kafka_io import wait_for_positions
from tests.helpers.scenario import fixture_messages
from tests.helpers.tracing import TRACE_ID, TRACEPARENT, children, hex_id, in_memory, tree

W3C = TraceContextTextMapPropagator()


@pytest.fixture
def traced() -> Iterator[tuple[Tracing, InMemorySpanExporter]]:
    with in_memory("ras-consumer") as pair:
        yield pair


def _fixture(name: str) -> tuple[str, bytes, dict[str, object]]:
    """(topic, key, envelope) of a gen 2 fixture."""
    for file, topic, key, value in fixture_messages("gen2"):
        if file == name:
            return topic, key, orjson.loads(value)
    raise AssertionError(name)


def _record(name: str, headers: list[tuple[str, bytes | None]] | None = None, **metadata: str) -> Record:
    """A gen 2 fixture as a record, with `metadata` added to its envelope's and `headers` on the record."""
    topic, key, envelope = _fixture(name)
    envelope["metadata"] = {**(envelope.get("metadata") or {}), **metadata}  # type: ignore[dict-item]
    return Record(topic, 0, 0, key, orjson.dumps(envelope), headers=headers or [])


def test_links_come_from_metadata_and_headers_once_each() -> None:
    other = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    records = [
        _record("batch_essays_registered__default.json", traceparent=TRACEPARENT, tracestate="ras=1"),
        # The same context in metadata and headers again: no second link.
        _record("essay_slot_assigned__default.json", [("traceparent", TRACEPARENT.encode())], traceparent=TRACEPARENT),
        # Only in the headers, beside a header that is no trace context.
        _record("spellcheck_results__success.json", [("other", None), ("traceparent", other.encode())]),
        _record("spellcheck_results__failure.json", traceparent="00-not-a-trace-context-01"),
    ]
    assert decode_fetch(records, MAX_BYTES).traces == []
    found = links(decode_fetch(records, MAX_BYTES, traced=True))
    assert [(hex_id(link.context.trace_id, 32), link.context.trace_state.get("ras")) for link in found] == [
        (TRACE_ID, "1"),
        ("0af7651916cd43dd8448eb211c80319c", None),
    ]
    assert found[1].attributes == {
        "messaging.destination.name": records[2].topic,
        "messaging.destination.partition.id": "0",
        "messaging.kafka.offset": 0,
    }


def _transactions(exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    return [span for span in exporter.get_finished_spans() if span.name == "consume transaction"]


def _ids(context: SpanContext) -> tuple[int, int]:
    return context.trace_id, context.span_id


def _linked(exporter: InMemorySpanExporter) -> set[tuple[int, int]]:
    return {_ids(link.context) for span in _transactions(exporter) for link in span.links}


async def test_an_event_with_a_traceparent_gives_a_linked_transaction_span(
    engine: AsyncEngine,
    database_url: str,
    kafka_bootstrap: str,
    redis_url: str,
    traced: tuple[Tracing, InMemorySpanExporter],
) -> None:
    tracing, exporter = traced
    producer_tracer = tracing.tracer("a producer of the platform")
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    produced: list[SpanContext] = []
    ends: dict[tuple[str, int], int] = {}
    try:
        for name, in_headers in (
            ("batch_essays_registered__default.json", False),
            ("essay_slot_assigned__default.json", True),
            ("spellcheck_results__success.json", False),
        ):
            topic, key, envelope = _fixture(name)
            with producer_tracer.start_as_current_span(f"publish {name}", kind=SpanKind.PRODUCER) as span:
                carrier: dict[str, str] = {}
                W3C.inject(carrier)
                headers = [(field, value.encode()) for field, value in carrier.items()] if in_headers else None
                if not in_headers:
                    envelope["metadata"] = {**(envelope.get("metadata") or {}), **carrier}  # type: ignore[dict-item]
                meta = await producer.send_and_wait(topic, orjson.dumps(envelope), key=key, headers=headers)
                produced.append(span.get_span_context())
            ends[(meta.topic, meta.partition)] = meta.offset + 1
    finally:
        await producer.stop()

    settings = Settings(
        database_url=database_url,
        kafka_bootstrap_servers=kafka_bootstrap,
        kafka_group_id=f"ras-test-{uuid.uuid4().hex[:8]}",
        kafka_session_timeout_ms=6_000,
        redis_url=redis_url,
        cache_prefix=f"test-{uuid.uuid4().hex[:10]}",
        consumer_metrics_port=0,
    )
    stop = asyncio.Event()
    consuming = asyncio.create_task(run(settings, stop, tracing))
    try:
        await wait_for_positions(engine, ends, timeout=60)
        async with asyncio.timeout(30):  # the span ends after the eviction and publication that follow the commit
            while not {_ids(context) for context in produced} <= _linked(exporter):
                await asyncio.sleep(0.05)
    finally:
        stop.set()
        await consuming

    spans = list(exporter.get_finished_spans())
    shown = tree(spans)
    for transaction in _transactions(exporter):
        assert transaction.kind is SpanKind.CONSUMER and transaction.parent is None, shown
        assert transaction.attributes is not None and transaction.attributes["messaging.system"] == "kafka"
        steps = [span.name for span in children(spans, transaction)]
        assert steps[0] == "decode" and steps[-2:] == ["evict", "publish"], shown
        statements = [span for span in children(spans, transaction) if span.kind is SpanKind.CLIENT]
        assert any(span.name == "INSERT" for span in statements), shown
