"""Which executor the API runs: RAS_GRAPHQL_EXECUTOR, the fast path's start-up check, and the fallback.

The fast path (app/graphql/execution.py) relies on Strawberry's and graphql-core's internals. Where they are missing or
behave differently — simulated here by patching them as a newer release might have changed them — the app must log
one warning and answer through Strawberry's stock executor, correctly; the setting selects the stock executor by
hand. Every answer below comes from the real app over HTTP against the suite's PostgreSQL.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, MutableMapping
from typing import Any

import httpx
import pytest
from graphql import GraphQLString
from prometheus_client import REGISTRY
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext
from strawberry.schema.schema_converter import GraphQLCoreConverter
from structlog.testing import capture_logs

import app.graphql
from app.graphql import execution
from app.graphql.endpoint import GraphQLEndpoint
from app.graphql.schema import Executor, Schema, build_schema
from app.limits import limits_from
from app.main import create_app
from tests.app.graphql.conftest import FIXTURE_BATCH, Api, settings_for

BATCH_WITH_ESSAYS = """
query($id: ID!) {
  batch(id: $id) {
    __typename id userId status statusCode currentPhase essayCount completedEssayCount registeredEssayIds
    phaseOutcomes { phase status completedCount failedCount completedAt }
    essays(first: 100) {
      totalCount
      nodes {
        id filename slotAssignedAt
        spellcheck { status correctionCount correctedTextStorageId details }
        cjAssessment { status rank score letterGrade }
        phaseResults { __typename phase status }
      }
    }
  }
}
"""


def schema_of(application: Starlette) -> Schema:
    for route in application.routes:
        endpoint = getattr(route, "endpoint", None)
        if isinstance(endpoint, GraphQLEndpoint):
            assert isinstance(endpoint.schema, Schema)
            return endpoint.schema
    raise LookupError("the app has no GraphQL endpoint")


def gauge(executor: str) -> float | None:
    return REGISTRY.get_sample_value("ras_graphql_executor", {"executor": executor})


async def answer(engine: AsyncEngine, **settings: Any) -> tuple[Any, Schema, list[MutableMapping[str, Any]]]:
    """The real app's answer to BATCH_WITH_ESSAYS (built as `ras serve` builds it, from settings), its schema, and
    what it logged while it was built."""
    with capture_logs() as logs:
        application = create_app(settings_for(**settings), engine)
    transport = httpx.ASGITransport(app=application)
    async with httpx.AsyncClient(transport=transport, base_url="http://ras.test") as client:
        response = await Api(client).post(BATCH_WITH_ESSAYS, {"id": FIXTURE_BATCH})
    assert response.status_code == 200, response.text
    return response.json(), schema_of(application), logs


# --- the healthy path and the setting ----------------------------------------------------------------------------


def test_the_installed_internals_pass_the_check() -> None:
    assert execution.self_check() is None
    assert build_schema(announce=False).executor == Executor("fast", execution.FastExecutionContext)
    assert limits_from(settings_for()).executor == "fast"


async def test_by_default_the_app_serves_through_the_fast_path(engine: AsyncEngine, gen2: None) -> None:
    body, schema, logs = await answer(engine)
    assert "errors" not in body and body["data"]["batch"]["essays"]["totalCount"] == 4
    assert schema.executor.name == "fast" and schema.execution_context_class is execution.FastExecutionContext
    assert [(e["log_level"], e["executor"]) for e in logs if e["event"] == "graphql executor"] == [("info", "fast")]
    assert not [e for e in logs if e["log_level"] == "warning"]
    assert (gauge("fast"), gauge("stock")) == (1, 0)


async def test_the_setting_selects_the_stock_executor_with_the_same_answers(
    engine: AsyncEngine, gen2: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    fast, _, _ = await answer(engine)

    def no_check() -> str | None:
        raise AssertionError("the stock executor was chosen by hand: the fast path is not checked")

    monkeypatch.setattr(execution, "self_check", no_check)
    stock, schema, logs = await answer(engine, graphql_executor="stock")
    assert schema.executor == Executor("stock", None)
    # Strawberry's own executor, exactly as without an execution_context_class.
    assert schema.execution_context_class is StrawberryGraphQLCoreExecutionContext
    assert [(e["log_level"], e["executor"]) for e in logs if e["event"] == "graphql executor"] == [("info", "stock")]
    assert not [e for e in logs if e["log_level"] == "warning"]
    assert (gauge("fast"), gauge("stock")) == (0, 1)
    assert stock == fast


def test_the_environment_variable_reaches_the_schema(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAS_GRAPHQL_EXECUTOR", "stock")
    monkeypatch.setenv("RAS_DATABASE_URL", "postgresql+asyncpg://u:p@h/d")
    from infra.settings import Settings

    limits = limits_from(Settings())
    assert limits.executor == "stock"
    assert build_schema(limits, announce=False).executor.name == "stock"


# --- simulated changes of the internals --------------------------------------------------------------------------


def rename_strawberry_resolvers(monkeypatch: pytest.MonkeyPatch) -> None:
    """A Strawberry release that names its resolver functions differently: same behaviour, unrecognised names."""
    original = GraphQLCoreConverter.from_resolver

    def from_resolver(self: GraphQLCoreConverter, field: Any) -> Callable[..., Any]:
        resolve = original(self, field)
        resolve.__name__ = f"{resolve.__name__}_renamed"
        return resolve

    monkeypatch.setattr(GraphQLCoreConverter, "from_resolver", from_resolver)


def change_an_executor_method(monkeypatch: pytest.MonkeyPatch) -> None:
    """A graphql-core release whose `complete_value` takes another parameter (the stock executor still works)."""
    original = StrawberryGraphQLCoreExecutionContext.complete_value

    def complete_value(
        self: Any,
        return_type: Any,
        field_details_list: Any,
        info: Any,
        path: Any,
        result: Any,
        position_context: Any,
        incremental: Any = None,
    ) -> Any:
        return original(self, return_type, field_details_list, info, path, result, position_context)

    monkeypatch.setattr(StrawberryGraphQLCoreExecutionContext, "complete_value", complete_value)


def remove_an_internal_module(monkeypatch: pytest.MonkeyPatch) -> None:
    """A graphql-core release without a module app/graphql/execution.py imports: the fast path's module cannot be
    imported
    (a fresh process imports it for the first time when the schema is built)."""
    monkeypatch.setitem(sys.modules, "graphql.pyutils.gather_with_cancel", None)
    monkeypatch.delitem(sys.modules, "app.graphql.execution")
    monkeypatch.delattr(app.graphql, "execution")


def change_string_output(monkeypatch: pytest.MonkeyPatch) -> None:
    """A graphql-core release whose String output coercion changes a string's text: the fast path, which hands a str
    over as it is, would answer differently from the stock executor. Everything is present; only behaviour differs."""
    original = GraphQLString.coerce_output_value
    monkeypatch.setattr(GraphQLString, "coerce_output_value", lambda value: f"«{original(value)}»")


SIMULATIONS: dict[str, tuple[Callable[[pytest.MonkeyPatch], None], str]] = {
    "renamed resolver functions": (rename_strawberry_resolvers, "resolver functions are"),
    "changed executor method": (change_an_executor_method, "complete_value takes"),
    "missing internal module": (remove_an_internal_module, "cannot be imported"),
    "changed behaviour": (change_string_output, "answered"),
}


@pytest.mark.parametrize("simulation", list(SIMULATIONS))
async def test_changed_internals_give_one_warning_and_the_stock_executor_with_correct_answers(
    engine: AsyncEngine, gen2: None, monkeypatch: pytest.MonkeyPatch, simulation: str
) -> None:
    unpatched, _, _ = await answer(engine)
    change, reason = SIMULATIONS[simulation]
    change(monkeypatch)

    # The stock executor chosen by hand, under the same change: what a correct answer is now.
    expected, _, _ = await answer(engine, graphql_executor="stock")
    body, schema, logs = await answer(engine)

    [warning] = [e for e in logs if e["log_level"] == "warning"]
    assert warning["event"].startswith("graphql fast executor unavailable")
    assert warning["executor"] == "stock" and reason in warning["reason"], warning
    assert warning["strawberry_graphql"] and warning["graphql_core"]
    assert not [e for e in logs if e["event"] == "graphql executor"], "one line: the warning"
    assert schema.executor.name == "stock" and schema.executor.reason == warning["reason"]
    assert schema.execution_context_class is StrawberryGraphQLCoreExecutionContext
    assert (gauge("fast"), gauge("stock")) == (0, 1)

    assert "errors" not in body
    assert body == expected
    if simulation == "changed behaviour":
        # The change is visible in the answer (every String is quoted now), and the fast path would have missed it.
        assert body != unpatched
        assert body["data"]["batch"]["userId"] == f"«{unpatched['data']['batch']['userId']}»"
    else:
        assert body == unpatched
