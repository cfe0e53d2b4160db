"""Strawberry's OpenTelemetry extension as app/graphql/tracing.py uses it: its start-up check, and the schema
without it when the check fails."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace import TracerProvider

from app.graphql import schema as schema_module
from app.graphql.schema import build_schema
from app.graphql.tracing import TracedOperation, problem
from app.limits import ApiLimits


def _traced(provider: TracerProvider | None) -> list[TracedOperation]:
    extensions = build_schema(ApiLimits(), announce=False, tracing=provider).get_extensions()
    return [extension for extension in extensions if isinstance(extension, TracedOperation)]


def test_the_installed_strawberry_passes_the_check() -> None:
    assert problem() is None
    assert not TracedOperation._implements_resolve(), "it would be middleware, and turn the fast executor off"


def test_traced_schemas_have_the_extension_and_untraced_ones_not() -> None:
    assert len(_traced(TracerProvider())) == 1
    assert _traced(None) == []


def test_a_failed_check_leaves_the_extension_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(schema_module, "problem", lambda: "Strawberry's OpenTelemetryExtension changed")
    assert _traced(TracerProvider()) == []
