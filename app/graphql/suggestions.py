"""No "Did you mean …?" in error messages where introspection is off.

graphql-core appends suggestions to the messages of unknown fields, arguments, types and enum values, so a client
that may not introspect the schema could still spell it out one guess at a time. graphql-core 3.3 can leave them out
(`hide_suggestions`), but neither Strawberry's validation and execution calls nor app/graphql/execution.py pass the
flag, and Strawberry's `disable_field_suggestions` covers unknown fields only. So the finished errors are trimmed
here, whichever step wrote them: graphql-core always puts its suggestion last, as " Did you mean …?".
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from strawberry.extensions import SchemaExtension

_SUGGESTION = re.compile(r" Did you mean .*\?$", re.DOTALL)


def without_suggestion(message: str) -> str:
    return _SUGGESTION.sub("", message)


class HiddenSuggestions(SchemaExtension):
    """Trims graphql-core's suggestions from every error of an operation (added where introspection is off)."""

    def on_operation(self) -> Iterator[None]:
        yield
        _trim(self.execution_context.result)

    def on_stream_result(self, result: Any) -> Iterator[None]:
        _trim(result)  # each result a WebSocket operation sends
        yield


def _trim(result: Any) -> None:
    for error in getattr(result, "errors", None) or ():
        error.message = without_suggestion(error.message)
