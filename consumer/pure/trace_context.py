"""An event's own trace context, as its producer sent it: W3C `traceparent` and `tracestate`, as text.

The platform's producers put the trace context of the work that emitted an event into its envelope's `metadata`
(contracts/EVENTS.md §2); a producer that passes Kafka headers may send it there too. Both are read; the consumer
links its transaction's span to each (consumer/tracing.py). Nothing here judges the values: a malformed
`traceparent` is the propagator's to refuse, and it never stops the projection.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from consumer.pure.decode import Record

FIELDS = ("traceparent", "tracestate")


@dataclass(frozen=True, slots=True)
class Carried:
    """One trace context a record carried (in its metadata or its headers), and the record."""

    record: Record
    fields: dict[str, str]


def carried(record: Record, metadata: Mapping[str, Any] | None) -> list[Carried]:
    """The trace contexts `record` carries: from its envelope's `metadata`, and from its headers when they hold a
    different one."""
    found = []
    if metadata:
        fields = {name: value for name in FIELDS if isinstance(value := metadata.get(name), str)}
        if fields:
            found.append(Carried(record, fields))
    headers = _from_headers(record.headers)
    if headers and all(headers != c.fields for c in found):
        found.append(Carried(record, headers))
    return found


def _from_headers(headers: Sequence[tuple[str, bytes | None]]) -> dict[str, str]:
    fields = {}
    for name, value in headers:
        key = name.lower()
        if key in FIELDS and value is not None:
            try:
                fields[key] = value.decode()
            except UnicodeDecodeError:
                continue  # not text: no trace context a propagator could read
    return fields
