"""The running span's trace and span ids, for log lines and error `extensions`.

Only OpenTelemetry's API is loaded here, not its SDK: with tracing off (infra/tracing.py) no span is ever active,
so every call answers None.
"""

from __future__ import annotations

from opentelemetry import trace


def current_ids() -> tuple[str, str] | None:
    """The running span's trace id and span id in W3C's lower-case hex form, or None when no span is active."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return format(context.trace_id, "032x"), format(context.span_id, "016x")


def current_trace_id() -> str | None:
    ids = current_ids()
    return None if ids is None else ids[0]
