"""A decoded fetch: the records one transaction applies, turned into rows before any database work.

`decode_fetch` reads every record (consumer.pure.decode) and maps it to rows (consumer.pure.mapping); a record that
cannot be applied is set aside as poison, to be quarantined in the same transaction. `refused_fetch` sets records
aside outright, for a value the database itself refused. Either way the fetch knows the position after its records
in each partition, which the transaction stores with its rows (consumer.apply.apply_fetch). Decoded for a traced
consumer, a fetch also keeps the trace context each applied event carried (consumer.pure.trace_context).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial

from consumer.pure.decode import PoisonMessage, Record, decode
from consumer.pure.mapping import Rows, rows_for
from consumer.pure.trace_context import Carried, carried

Partition = tuple[str, int]


@dataclass(frozen=True, slots=True)
class Poison:
    """A record that cannot be applied as it is, and why: it is quarantined instead."""

    record: Record
    reason: str
    correlation_id: str | None = None


@dataclass
class Counts:
    """Records per topic by outcome, and the newest event time among those applied."""

    applied: Counter[str] = field(default_factory=Counter)
    ignored: Counter[str] = field(default_factory=Counter)
    quarantined: Counter[str] = field(default_factory=Counter)
    newest_event_at: datetime | None = None


@dataclass
class DecodedFetch:
    """Records read and turned into rows, in the order fetched."""

    records: Sequence[Record]
    # Per partition, the offset after its last record: the position the transaction stores.
    next_offsets: dict[Partition, int]
    # How these records were decoded, to decode a part of them the same way (`part`).
    decoder: Callable[[Sequence[Record]], DecodedFetch] = field(repr=False, compare=False)
    rows: Rows = field(default_factory=Rows)
    poison: list[Poison] = field(default_factory=list)
    counts: Counts = field(default_factory=Counts)
    event_times: dict[Partition, datetime] = field(default_factory=dict)
    # The producers' trace contexts of the applied events; only when decoded with `traced`.
    traces: list[Carried] = field(default_factory=list)

    def part(self, records: Sequence[Record]) -> DecodedFetch:
        """Some of the records, decoded as these were: a half while isolating a refused record, or the records a
        transaction has not applied yet."""
        return self.decoder(records)


def next_offsets(records: Sequence[Record]) -> dict[Partition, int]:
    """The offset after the last of `records` in each partition they came from."""
    offsets: dict[Partition, int] = {}
    for r in records:
        tp = (r.topic, r.partition)
        if r.offset >= offsets.get(tp, 0):
            offsets[tp] = r.offset + 1
    return offsets


def decode_fetch(records: Sequence[Record], max_bytes: int, traced: bool = False) -> DecodedFetch:
    """Decode `records` and build their rows; no I/O. A record that cannot be applied is set aside as poison.
    `traced`: keep the trace context each applied event carried."""
    out = DecodedFetch(records, next_offsets(records), partial(decode_fetch, max_bytes=max_bytes, traced=traced))
    for record in records:
        event = None
        try:
            event = decode(record, max_bytes)
            if event is None:
                out.counts.ignored[record.topic] += 1
                continue
            out.rows.extend(rows_for(event))
        except PoisonMessage as exc:
            correlation_id = exc.correlation_id or (event.envelope.correlation_id if event is not None else None)
            out.poison.append(Poison(record, str(exc), correlation_id))
            out.counts.quarantined[record.topic] += 1
            continue
        out.counts.applied[record.topic] += 1
        if traced:
            out.traces += carried(record, event.envelope.metadata)
        stamp = event.envelope.event_timestamp or event.record_time
        if stamp is not None:
            tp = (record.topic, record.partition)
            out.event_times[tp] = max(out.event_times.get(tp, stamp), stamp)
            out.counts.newest_event_at = max(out.counts.newest_event_at or stamp, stamp)
    return out


def refused_fetch(records: Sequence[Record], reason: str) -> DecodedFetch:
    """`records` set aside for `reason` without reading them: the database refused a value in them."""
    out = DecodedFetch(records, next_offsets(records), partial(refused_fetch, reason=reason))
    for record in records:
        out.poison.append(Poison(record, reason))
        out.counts.quarantined[record.topic] += 1
    return out
