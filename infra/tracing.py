"""OpenTelemetry tracing of a `ras` process: off unless the standard `OTEL_*` variables turn it on.

`from_environment` decides, once at start-up, from the variables the OpenTelemetry SDK itself reads:

- `OTEL_SDK_DISABLED=true`, or `OTEL_TRACES_EXPORTER=none`: off, whatever else is set.
- `OTEL_TRACES_EXPORTER=otlp` (OTLP over HTTP with protobuf, the only OTLP transport installed) or `console` (spans
  as JSON on stdout), or comma-separated both: on, with those exporters.
- Unset, but `OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` set: on, OTLP to that endpoint.
- Nothing of these: off (the default). The SDK's own default exporter is OTLP to localhost, which would make every
  process without a collector log export failures; a service that exports only when told to is the careful default.

Everything else is the SDK's: `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES` (the service name defaults to
the process's, `ras-api` or `ras-consumer`), `OTEL_TRACES_SAMPLER`/`_ARG`, `OTEL_BSP_*` (batching),
`OTEL_EXPORTER_OTLP_*` (endpoint, headers, timeout, compression), `OTEL_PROPAGATORS` (default W3C trace context
and baggage), `OTEL_SPAN_*_LIMIT`. A value this module cannot honour (another exporter, gRPC) stops the process
at start with a line naming the variable, rather than tracing silently nowhere.

Off means nothing of OpenTelemetry's runs: no provider, no instrumentation, and the API's and consumer's hot paths
check one `None`. On, a `Tracing` holds the provider; its parts get their tracers from it explicitly (no global
provider), and the database statements of both processes are traced by the asyncpg instrumentation. A statement
outside any request or transaction (a health probe, a start-up wait) would be a trace of its own: those are not
exported.

The running span's ids, for log lines and error `extensions`, are infra/trace_ids.py's (which loads none of the SDK).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.trace import SpanKind, Tracer

from infra.failures import ConfigurationError

_EXPORTERS = ("otlp", "console")
_OTLP_PROTOCOL = "http/protobuf"
_STATEMENTS = AsyncPGInstrumentor()  # type: ignore[no-untyped-call]  # one per process (the instrumentor's own rule)


class Tracing:
    """A process's tracing, on: the provider its parts take their tracers from. `shutdown` exports what is left."""

    def __init__(self, provider: TracerProvider) -> None:
        self.provider = provider
        # Patches asyncpg's statement methods process-wide; `shutdown` takes the patch off again.
        _STATEMENTS.instrument(tracer_provider=provider)

    def tracer(self, name: str) -> Tracer:
        return self.provider.get_tracer(name)

    def shutdown(self) -> None:
        _STATEMENTS.uninstrument()
        self.provider.shutdown()


class WithoutOrphanStatements(SpanProcessor):
    """Passes every span on to `inner` except a client span without a parent: a database statement no request or
    transaction made (readiness probes every few seconds would otherwise fill the backend with one-span traces)."""

    def __init__(self, inner: SpanProcessor) -> None:
        self._inner = inner

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        self._inner.on_start(span, parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        if span.kind is SpanKind.CLIENT and span.parent is None:
            return
        self._inner.on_end(span)

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._inner.force_flush(timeout_millis)


def exporters_named(environ: Mapping[str, str]) -> list[str]:
    """The exporters the variables ask for; [] when tracing is off. Raises `ConfigurationError` for a value this
    service cannot honour."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    named = [name.strip().lower() for name in environ.get("OTEL_TRACES_EXPORTER", "").split(",") if name.strip()]
    if not named:
        endpoint = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        named = ["otlp"] if endpoint else []
    if "none" in named:
        return []
    unknown = [name for name in named if name not in _EXPORTERS]
    if unknown:
        raise ConfigurationError(
            f"OTEL_TRACES_EXPORTER: {', '.join(unknown)} is not available; expected otlp, console or none"
        )
    if "otlp" in named:
        for variable in ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
            protocol = environ.get(variable, "").strip()
            if protocol and protocol != _OTLP_PROTOCOL:
                raise ConfigurationError(f"{variable}: {protocol} is not available; expected {_OTLP_PROTOCOL}")
    return named


def provider_for(service: str, processors: list[SpanProcessor]) -> TracerProvider:
    """A provider whose resource and sampler come from the SDK's variables, the service named `service` unless
    OTEL_SERVICE_NAME or OTEL_RESOURCE_ATTRIBUTES name it; ended spans go to each of `processors`, orphan statements
    left out."""
    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: service}))
    provider = TracerProvider(resource=resource)
    for processor in processors:
        provider.add_span_processor(WithoutOrphanStatements(processor))
    return provider


def from_environment(service: str, environ: Mapping[str, str] = os.environ) -> Tracing | None:
    """The process's tracing as the `OTEL_*` variables ask (see the module's docstring); None when off."""
    named = exporters_named(environ)
    if not named:
        return None
    exporters: list[SpanExporter] = [OTLPSpanExporter() if name == "otlp" else ConsoleSpanExporter() for name in named]
    return Tracing(provider_for(service, [BatchSpanProcessor(exporter) for exporter in exporters]))
