"""The tests `make test-fast` leaves out (marker `slow`), named by where they are: each runs real processes, a
broker or a long stream for seconds (the `ras` command, the consumer against Tansu, the resilience scenarios), and
together they are most of the suite's time.

One list rather than a marker line in each module: what counts as slow is a matter of the whole suite's budget
(`make test-fast` in under four minutes on two cores), measured and revised together. A module may still mark
itself; a name here that no longer exists stops the run, so a renamed module cannot slip into the fast set.
"""

from __future__ import annotations

import pytest

from tests.helpers import ROOT

SLOW = (
    "tests/resilience/",
    "tests/ras/",  # the real `ras` command as a subprocess: about two seconds each
    # A real `ras serve` (or another process, a browser, slow clients) per module.
    "tests/app/test_auth.py",
    "tests/app/test_health.py",
    "tests/app/test_http_guards.py",
    "tests/app/test_metrics_access.py",
    "tests/app/graphql/test_composition.py",
    "tests/app/graphql/test_http_audit.py",
    "tests/app/graphql/test_production_mode.py",
    "tests/app/live/test_graphiql_live.py",
    "tests/app/live/test_wait_pool.py",
    "tests/devstack/test_embedded.py",
    "tests/infra/test_logs.py",
    # The consumer against a broker, and long streams.
    "tests/consumer/test_crash.py",
    "tests/consumer/test_intake_freshness.py",
    "tests/consumer/test_kafka.py",
    "tests/consumer/test_lifecycle.py",
    "tests/consumer/test_offsets.py",
    "tests/consumer/test_order_independence.py",
    "tests/consumer/test_prefetch.py",
    "tests/consumer/test_rebalance.py",
    "tests/consumer/test_tracing.py::test_an_event_with_a_traceparent_gives_a_linked_transaction_span",
    "tests/app/cache/test_consumer_eviction.py",
    "tests/app/cache/test_cluster.py",  # a Redis Cluster of its own, a node killed and restarted twice
    "tests/app/replicas/",  # a primary and a streaming replica of their own, replay held and caught up per test
    "tests/app/live/test_consistency.py",
    "tests/app/live/test_processes.py",
    "tests/app/live/test_rebuild.py",
    "tests/devstack/test_dev_stack.py",
    # Single tests over thousands of rows, or in a browser, or building the wheel.
    "tests/app/graphql/test_statement_count.py::test_statements_do_not_grow_with_batches_or_essays",
    "tests/app/graphql/test_execution_equivalence.py::test_mirrored__statement_count__statements_do_not_grow",
    "tests/app/graphql/test_query_flood.py::test_unique_query_texts_do_not_grow_the_caches",
    "tests/app/graphql/test_graphiql.py::test_graphiql_in_headless_chromium",
    "tests/test_deploy.py::test_the_wheel_the_image_installs",
    "tests/test_packaging.py",  # fresh interpreters importing every module, several seconds each
    "tests/app/cache/test_busy_loop.py",  # a loop kept busy for seconds on purpose
    "tests/app/live/test_disconnects.py::test_clients_leaving_mid_operation_leave_no_error_behind",
    "tests/app/rest/test_statement_count.py::test_list_statements_do_not_grow_with_batches_or_essays",
    "tests/consumer/test_replay.py::test_replay_applies_what_now_fits_and_keeps_the_rest",  # the `ras` command
    "tests/app/graphql/test_persisted_documents.py::test_another_process_finds_a_registration_in_redis_or_else_postgresql",
)


# The hang guard of a slow test (the default, pyproject's `timeout`, is 300 s): a long stream that takes two minutes
# alone can take several times that on two cores that CI shares with other work, and only a hang should fail it.
SLOW_TIMEOUT_SECONDS = 900


def mark(items: list[pytest.Item]) -> None:
    """Mark every collected test under a name in SLOW as `slow`, with the longer hang guard unless it sets its own."""
    missing = [name for name in SLOW if not (ROOT / name.split("::")[0]).exists()]
    if missing:
        raise pytest.UsageError(f"tests/helpers/slow.py names what does not exist: {missing}")
    for item in items:
        if item.nodeid.startswith(SLOW):
            item.add_marker(pytest.mark.slow)
            if item.get_closest_marker("timeout") is None:
                item.add_marker(pytest.mark.timeout(SLOW_TIMEOUT_SECONDS))
