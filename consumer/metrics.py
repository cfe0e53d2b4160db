"""Prometheus metrics of the consumer (default registry, served on /metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

EVENTS = Counter(
    "ras_consumer_events_total",
    "Records consumed, by topic and outcome (applied, ignored, quarantined).",
    ["topic", "outcome"],
)
OWNER_CHANGES = Counter(
    "ras_consumer_owner_changes_total",
    "Registrations naming another owner than the batch's earliest registration, by outcome: refused (quarantined) "
    "or taken_over (an earlier registration arrived late and took the batch from a later one's owner). Counted as "
    "written, so a transaction that is retried counts again.",
    ["outcome"],
)
TRANSACTIONS = Counter("ras_consumer_transactions_total", "Projection transactions committed.")
TRANSACTION_SECONDS = Histogram(
    "ras_consumer_transaction_seconds",
    "Time to apply and commit one projection transaction.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
TRANSACTION_RECORDS = Histogram(
    "ras_consumer_transaction_records",
    "Records applied per projection transaction.",
    buckets=(1, 10, 50, 100, 500, 1000, 2500, 5000, 10000),
)
# Fine below 100 ms, where freshness is aimed; steps of seconds after, to read a backlog's ages too.
_AGE_BUCKETS_MS = (1, 2.5, 5, 7.5, 10, 15, 20, 30, 40, 50, 75, 100, 150, 200, 300, 500, 1e3, 2e3, 3e3, 5e3, 1e4, 6e4)
RECORD_AGE = Histogram(
    "ras_consumer_record_age_seconds",
    "Age of each transaction's oldest record (since its Kafka timestamp) as the transaction passes each stage: "
    "fetched (handed over by the client), committed, announced (evicted from the cache and published to live "
    "updates). The differences between stages are the time spent in each; how fresh the read model is.",
    ["stage"],
    buckets=tuple(ms / 1000 for ms in _AGE_BUCKETS_MS),
)
RETRIES = Counter("ras_consumer_db_retries_total", "Transactions retried after a transient database error.")
LAG = Gauge(
    "ras_consumer_lag",
    "Records between the partition's high watermark and the stored position.",
    ["topic", "partition"],
)
PAUSED = Gauge("ras_consumer_paused", "1 while the consumer holds its partitions paused waiting for the database.")
