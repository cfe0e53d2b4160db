"""Which `OTEL_*` variables turn tracing on, and what a span's ids look like on a log line."""

from __future__ import annotations

import json
import logging

import pytest
from opentelemetry.sdk.resources import SERVICE_NAME

from infra.failures import ConfigurationError
from infra.logs import formatter
from infra.tracing import exporters_named, from_environment
from tests.helpers.tracing import in_memory


@pytest.mark.parametrize(
    ("environ", "exporters"),
    [
        ({}, []),
        ({"OTEL_SERVICE_NAME": "ras", "OTEL_TRACES_SAMPLER": "always_on"}, []),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, ["otlp"]),
        ({"OTEL_TRACES_EXPORTER": "console, OTLP"}, ["console", "otlp"]),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://jaeger:4318"}, ["otlp"]),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://jaeger:4318/v1/traces"}, ["otlp"]),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://jaeger:4318", "OTEL_TRACES_EXPORTER": "none"}, []),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "True"}, []),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}, ["otlp"]),
    ],
)
def test_tracing_is_off_unless_the_variables_ask(environ: dict[str, str], exporters: list[str]) -> None:
    assert exporters_named(environ) == exporters


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, "OTEL_TRACES_EXPORTER: zipkin is not available"),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "OTEL_EXPORTER_OTLP_PROTOCOL: grpc"),
        (
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4317", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc"},
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: grpc",
        ),
    ],
)
def test_a_value_that_cannot_be_honoured_stops_the_start(environ: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigurationError, match=named):
        exporters_named(environ)


def test_the_service_is_named_unless_the_variables_name_it(monkeypatch: pytest.MonkeyPatch) -> None:
    assert from_environment("ras-api", {}) is None
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    monkeypatch.delenv("OTEL_RESOURCE_ATTRIBUTES", raising=False)
    tracing = from_environment("ras-api", {"OTEL_TRACES_EXPORTER": "console"})
    assert tracing is not None
    try:
        assert tracing.provider.resource.attributes[SERVICE_NAME] == "ras-api"
    finally:
        tracing.shutdown()
    monkeypatch.setenv("OTEL_SERVICE_NAME", "results")
    tracing = from_environment("ras-api", {"OTEL_TRACES_EXPORTER": "console"})
    assert tracing is not None
    try:
        assert tracing.provider.resource.attributes[SERVICE_NAME] == "results"
    finally:
        tracing.shutdown()


def _line(message: str) -> dict[str, object]:
    record = logging.LogRecord("ras.example", logging.INFO, __file__, 1, message, None, None)
    rendered: dict[str, object] = json.loads(formatter("json").format(record))
    return rendered


def test_a_log_line_carries_the_active_spans_ids() -> None:
    assert "trace_id" not in _line("untraced")
    with in_memory("ras-test") as (tracing, _), tracing.tracer("test").start_as_current_span("work") as span:
        line = _line("traced")
    context = span.get_span_context()
    assert line["trace_id"] == format(context.trace_id, "032x")
    assert line["span_id"] == format(context.span_id, "016x")
