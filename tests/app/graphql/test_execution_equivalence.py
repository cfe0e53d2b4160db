"""The fast path of app/graphql/execution.py answers exactly what Strawberry's stock executor answers.

Two parts:

1. **Every API test, mirrored.** The tests of the modules in `MIRRORED` run again here (same functions, same
   fixtures) with every query operation executed twice inside the same request: by `FastExecutionContext`, whose
   result the test sees and checks as usual, and then by Strawberry's stock executor on the same context (its
   loaders have cached the rows, so both see the same data and no extra statement is issued). The two results
   must serialize to the same bytes — data, errors with messages, locations, paths and extensions, in order — and
   their errors must wrap the same exception types (ErrorShaping maps those to codes). A mismatch fails the test.
2. **Irregular values.** A small schema whose rows hold what the API's rows never do: nulls in non-null fields,
   attributes and resolvers that raise, out-of-range ints, NaN, unknown enum values, awaitables from plain
   fields, abstract types; queried with aliases, fragments, `__typename`, @skip/@include and merged fields, and
   once more with a field directive and with a resolver middleware, which must switch the fast path off.

One module (about 520 lines, most of it part 2's schema): together the two parts are the evidence pyproject.toml's
fences on Strawberry and graphql-core cite by this file's name, and a newer version is taken only once all of it passes.
"""

from __future__ import annotations

import asyncio
import enum
import importlib
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
import strawberry
import strawberry.schema.schema as strawberry_schema
from graphql import ExecutionResult, OperationType
from graphql.execution import Executor
from sqlalchemy.ext.asyncio import AsyncEngine
from strawberry.directive import DirectiveLocation, DirectiveValue
from strawberry.extensions import SchemaExtension
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext
from strawberry.types import ExecutionResult as StrawberryResult

from app.graphql import execution
from app.graphql.execution import FastExecutionContext, ignores_info
from tests.app.graphql.conftest import FIXTURE_BATCH, Api
from tests.helpers.events import project, teacher_batches

# --------------------------------------------------------------------------------------------------------------
# The mirror
# --------------------------------------------------------------------------------------------------------------


@dataclass
class Mirror:
    """What the mirrored executions of one test compared."""

    compared: int = 0
    mismatches: list[str] = field(default_factory=list)
    plain_fields: int = 0  # response keys the fast side completed on its fast path, over all plans


_MIRROR = Mirror()


def _rendered(result: ExecutionResult | StrawberryResult) -> bytes:
    """What a client would see of a result (graphql-core's or Strawberry's), and the exception types behind it."""
    errors = result.errors or []
    formatted = {"data": result.data, "errors": [error.formatted for error in errors] or None}
    kinds = [type(error.original_error).__name__ for error in errors]
    return orjson.dumps({"result": formatted, "original_errors": kinds})


class MirrorExecutionContext(FastExecutionContext):
    """Executes a query operation with the fast path, then with the stock executor, and records any difference."""

    stock: Executor[Any] | None = None

    @classmethod
    def build(cls, *args: Any, **kwargs: Any) -> Any:
        built = super().build(*args, **kwargs)
        if isinstance(built, list) or built.operation.operation is not OperationType.QUERY:
            return built
        stock = StrawberryGraphQLCoreExecutionContext.build(*args, **kwargs)
        assert not isinstance(stock, list)
        assert isinstance(built, MirrorExecutionContext)
        built.stock = stock
        return built

    def execute_operation(self, serially: bool | None = None) -> Any:
        fast = super().execute_operation(serially)
        stock_executor = self.stock
        if stock_executor is None:
            return fast

        async def both() -> Any:
            fast_result = await fast if self.is_awaitable(fast) else fast
            stock = stock_executor.execute_operation(serially)
            stock_result = await stock if self.is_awaitable(stock) else stock
            assert isinstance(fast_result, ExecutionResult) and isinstance(stock_result, ExecutionResult)
            _MIRROR.compared += 1
            _MIRROR.plain_fields += sum(plan.plain for plan in self.plans.values())
            fast_bytes, stock_bytes = _rendered(fast_result), _rendered(stock_result)
            if fast_bytes != stock_bytes:
                _MIRROR.mismatches.append(f"fast:  {fast_bytes[:3000]!r}\nstock: {stock_bytes[:3000]!r}")
            return fast_result

        return both()


def _mirrored_class_kwargs(execution_context_class: type[Any] | None) -> dict[str, Any]:
    if execution_context_class is FastExecutionContext:
        execution_context_class = MirrorExecutionContext
    return {} if execution_context_class is None else {"executor_class": execution_context_class}


@pytest.fixture(autouse=True)
def mirrored(monkeypatch: pytest.MonkeyPatch) -> Iterator[Mirror]:
    """Every schema that executes with the fast path mirrors its queries while a test of this module runs.

    Strawberry hands `execution_context_class` to graphql-core through this one function, for schemas built before
    the test as well (tests/app/graphql/test_tags.py builds its schema at import).
    """
    global _MIRROR
    _MIRROR = Mirror()
    monkeypatch.setattr(strawberry_schema, "execution_context_class_kwargs", _mirrored_class_kwargs)
    yield _MIRROR
    assert not _MIRROR.mismatches, "the fast path answered differently:\n" + "\n\n".join(_MIRROR.mismatches)


# --------------------------------------------------------------------------------------------------------------
# 1. Every API test, mirrored
# --------------------------------------------------------------------------------------------------------------

# Modules whose tests execute queries (test_app: start-up; test_graphiql: the browser page; test_schema: SDL).
MIRRORED = (
    "test_access",
    "test_batch",
    "test_batches",
    "test_errors",
    "test_essay",
    "test_federation",
    "test_limits",
    "test_projection",
    "test_statement_count",
    "test_status",
    "test_tags",
)


def _adopt(module_names: tuple[str, ...]) -> int:
    """Bind the modules' tests (as `test_mirrored__<module>__<test>`) and their module-level fixtures here."""
    adopted = 0
    namespace = globals()
    for module_name in module_names:
        module = importlib.import_module(f"tests.app.graphql.{module_name}")
        for name, value in vars(module).items():
            if getattr(value, "__module__", None) != module.__name__:
                continue  # imported helpers and conftest fixtures: found the usual way
            if name.startswith("test_") and callable(value):
                namespace[f"test_mirrored__{module_name.removeprefix('test_')}__{name.removeprefix('test_')}"] = value
                adopted += 1
            elif type(value).__name__ == "FixtureFunctionDefinition":
                assert name not in namespace, f"fixture {name} of {module_name} collides"
                namespace[name] = value
    return adopted


ADOPTED = _adopt(MIRRORED)

LIST_WITH_EVERYTHING = """
query($user: String!) {
  batches(userId: $user, first: 100) {
    totalCount
    edges {
      cursor
      node {
        __typename id userId status statusCode clientStatus currentPhase essayCount completedEssayCount
        failedEssayCount registeredEssayIds requestedPipelines completedPhases createdAt lastUpdated
        phaseOutcomes { phase phaseCode status statusCode completedCount failedCount completedAt }
        essays(first: 1000) {
          totalCount
          nodes {
            __typename id batchId filename fileUploadId originalTextStorageId slotAssignedAt
            spellcheck { ...Common correctionCount correctedTextStorageId totalCorrections wordCount correctionDensity }
            cjAssessment { ...Common rank score normalizedScore letterGrade jobId assessmentMethod modelUsed }
            phaseResults { __typename ...Common ... on CJAssessmentResult { rank r: rank } }
            again: spellcheck { statusCode error { errorCode message details } }
          }
        }
      }
    }
  }
}
fragment Common on PhaseResult { phase phaseCode status statusCode reportedStatus essayId batchId recordedAt details }
"""


async def test_the_mirror_compares_and_the_fast_path_engages(engine: AsyncEngine, api: Api, mirrored: Mirror) -> None:
    await project(engine, teacher_batches("t-eq", batches=3, essays=20, gen="gen1"))
    await project(engine, teacher_batches("t-eq", batches=3, essays=20, gen="gen2", seed=8))
    data = await api.data(LIST_WITH_EVERYTHING, {"user": "t-eq"})
    assert len(data["batches"]["edges"]) == 6
    assert mirrored.compared == 1
    # Essay 7 + spellcheck 14 + CJ 16 + 3 phase results × 11 + 3 (again: …) plain keys, per plan shape.
    assert mirrored.plain_fields > 60
    assert ADOPTED >= 40  # the mirrored API tests above are really there


# --------------------------------------------------------------------------------------------------------------
# 2. Irregular values
# --------------------------------------------------------------------------------------------------------------


@strawberry.enum
class Stage(enum.Enum):
    OPEN = "open"
    DONE = "done"


async def _later(value: int) -> int:
    await asyncio.sleep(0)
    return value


class Row:
    """One item of the test schema; `n` picks which irregular value each field holds."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.id = f"r{n}"
        self.name: str | None = None if n % 3 == 0 else f"name {n}"
        self.required: str | None = None if n == 4 else f"req {n}"
        self.count: Any = [7, 2**31, -(2**31) - 1, True, 3.0, 2.5, "12", None][n % 8]
        self.ratio: Any = [0.5, math.nan, 2, None, "x"][n % 5]
        self.flag: Any = [True, 0, 1.0, None][n % 4]
        self.stage: Any = ["open", "done", "gone", Stage.DONE][n % 4]
        self.at: datetime | None = datetime(2025, 1, 1, 12, n, tzinfo=UTC) if n % 2 else None
        self.blob: Any = [{"k": n}, [n, n], "text", None][n % 4]
        self.ident: Any = [f"id{n}", n, None][n % 3]
        self.items = [Child(n, i) for i in range(3)] if n % 2 else []
        # Objects completed inline, and values that send them back to graphql-core.
        self.child: Child | None = Child(n, 2) if n % 2 else None
        self.checked = tuple(Child(n, i) for i in (0, 1, 9 if n == 5 else 2))  # Checked refuses i == 9
        self.sparse = [Child(n, 0), None] if n == 2 else [Child(n, 1)]

    @property
    def maybe_awaitable(self) -> Any:
        return _later(self.n) if self.n == 5 else self.n  # made on access: never left un-awaited

    @property
    def fragile(self) -> str | None:
        if self.n == 6:
            raise ValueError(f"fragile {self.n}")
        return f"ok {self.n}"

    @property
    def fragile_required(self) -> str:
        if self.n == 7:
            raise ValueError("fragile required")
        return "ok"


@dataclass
class Child:
    n: int
    i: int

    @property
    def label(self) -> str | None:
        return None if self.i == 1 else f"{self.n}.{self.i}"

    @property
    def required(self) -> str | None:
        return None if (self.n, self.i) == (3, 2) else "c"


@strawberry.type
class ChildType:
    i: int
    label: str | None
    required: str


@strawberry.type
class Checked:
    """A type with an `is_type_of` marked `ignores_info`: completed inline while it accepts every object."""

    is_type_of = classmethod(ignores_info(lambda cls, obj, info: isinstance(obj, Child) and obj.i != 9))

    i: int
    label: str | None
    required: str


@strawberry.interface
class Named:
    name: str | None


@strawberry.type
class ItemType(Named):
    is_type_of = classmethod(lambda cls, obj, info: isinstance(obj, Row))

    id: strawberry.ID
    required: str
    count: int | None
    ratio: float | None
    flag: bool | None
    stage: Stage | None
    at: datetime | None
    blob: strawberry.scalars.JSON | None
    ident: strawberry.ID | None
    maybe_awaitable: int | None
    fragile: str | None
    fragile_required: str
    items: list[ChildType]
    child: ChildType | None
    checked: list[Checked]
    sparse: list[ChildType | None]

    @strawberry.field
    def required_child(root: Row) -> ChildType:
        return Child(root.n, 2)  # type: ignore[return-value]  # row 3's child has a null `required`

    @strawberry.field
    def upper(root: Row) -> str | None:
        return None if root.name is None else root.name.upper()

    @strawberry.field
    def exploding(root: Row) -> str | None:
        if root.n % 4 == 1:
            raise RuntimeError(f"exploded {root.n}")
        return "calm"

    @strawberry.field
    def promised(root: Row) -> int | None:
        return _later(root.n)  # type: ignore[return-value]  # a sync resolver returning an awaitable

    @strawberry.field
    async def eventually(root: Row) -> int:
        return await _later(root.n)

    # Resolvers of the parent and `info`, called by the fast path with an info it builds.
    @strawberry.field
    def with_info(root: Row, info: strawberry.Info) -> str | None:
        if root.n % 5 == 2:
            raise RuntimeError(f"info exploded {root.n}")
        return None if root.n % 3 == 0 else f"{info.field_name} {info.path.key} {info.python_name} {root.n}"

    @strawberry.field
    def later_with_info(root: Row, info: strawberry.Info) -> int | None:
        return None if root.n % 2 else _later(root.n)  # type: ignore[return-value]

    @strawberry.field
    def stage_with_info(root: Row, info: strawberry.Info) -> Stage | None:
        return root.stage  # type: ignore[no-any-return]  # row 2's "gone" is no Stage


@strawberry.type
class Query:
    @strawberry.field
    def items(self, first: int = 10) -> list[ItemType]:
        return [Row(n) for n in range(first)]  # type: ignore[misc]

    @strawberry.field
    def strict_items(self) -> list[ItemType]:
        return [Row(n) for n in (1, 2, 4)]  # type: ignore[misc]  # row 4's `required` is null

    @strawberry.field
    def named(self) -> list[Named]:
        return [Row(n) for n in range(4)]  # type: ignore[misc]


ALL_ITEM_FIELDS = """
  __typename id name required count ratio flag stage at blob ident maybeAwaitable fragile fragileRequired
  upper exploding promised eventually withInfo laterWithInfo stageWithInfo items { __typename i label required }
"""
QUERIES = {
    # Rows 4 (null `required`) and 7 (`fragileRequired` raises) null the whole non-null list, so data is null:
    # which errors are still reported then depends on the order fields ran in.
    "every field": f"{{ items {{ {ALL_ITEM_FIELDS} }} }}",
    "nullable fields only": "{ items { id name count ratio flag stage at blob ident fragile upper exploding } }",
    "aliases and merged fields": "{ items(first: 6) { a: id b: id id name n: name name c: count upper u: upper } }",
    "fragments": """
      query { items(first: 5) { ...F ... on ItemType { ratio ...G } } }
      fragment F on ItemType { id name count }
      fragment G on ItemType { flag name }
    """,
    "skip and include": """
      query($yes: Boolean!, $no: Boolean!) {
        items(first: 6) {
          id name @include(if: $yes) count @skip(if: $yes) ratio @include(if: $no) upper @skip(if: $no)
        }
      }
    """,
    "non-null error nulls the item": "{ strictItems { id required name } }",
    "non-null error in a child list": "{ items(first: 4) { id items { i required label } } }",
    "abstract type": "{ named { __typename name ... on ItemType { id count } } }",
    "resolvers with info": "{ items(first: 8) { id withInfo w: withInfo laterWithInfo stageWithInfo } }",
    "only typenames": "{ __typename items(first: 2) { __typename items { __typename } } }",
    # Objects completed inline (app/graphql/execution.py `Objects`), and the values that send them back to graphql-core.
    "objects": "{ items(first: 6) { id child { __typename i label } checked { __typename i label } } }",
    "objects with null non-null fields": "{ items(first: 4) { id child { i required } checked { required } } }",
    "a non-null object with a null non-null field": "{ items(first: 4) { id requiredChild { i required } } }",
    "an object its check refuses": "{ items(first: 6) { id checked { i } } }",
    "a list with a null item": "{ items(first: 3) { id sparse { i label } } }",
    "nested lists of objects": "{ items(first: 4) { id items { i label } again: items { required } } }",
}


@strawberry.directive(locations=[DirectiveLocation.FIELD], description="Upper-cases a string field.")
def shout(value: DirectiveValue[str]) -> str:
    return value.upper() if isinstance(value, str) else value


class Exclaim(SchemaExtension):
    """A resolver middleware: the fast path must step aside for it."""

    def resolve(self, _next: Any, root: Any, info: Any, *args: Any, **kwargs: Any) -> Any:
        value = _next(root, info, *args, **kwargs)
        return f"{value}!" if isinstance(value, str) else value


def _schemas(**options: Any) -> tuple[strawberry.Schema, strawberry.Schema]:
    fast = strawberry.Schema(query=Query, types=[ItemType], execution_context_class=FastExecutionContext, **options)
    stock = strawberry.Schema(query=Query, types=[ItemType], **options)
    return fast, stock


async def _both(query: str, **options: Any) -> tuple[bytes, bytes]:
    fast, stock = _schemas(**options)
    variables = {"yes": True, "no": False}
    results = [await schema.execute(query, variable_values=variables) for schema in (fast, stock)]
    return _rendered(results[0]), _rendered(results[1])


@pytest.mark.parametrize("query", list(QUERIES.values()), ids=list(QUERIES))
async def test_irregular_values_answer_alike(query: str) -> None:
    fast, stock = await _both(query)
    assert fast == stock
    assert b'"data"' in fast


async def test_errors_really_happen_in_those_queries() -> None:
    """The queries above are not trivially equal: they carry the errors the fast path must hand over."""
    fast, _ = await _both(QUERIES["nullable fields only"])
    body = orjson.loads(fast)["result"]
    messages = " ".join(error["message"] for error in body["errors"])
    for expected in ("fragile 6", "exploded 1", "non 32-bit signed integer", "non-integer", "non numeric", "gone"):
        assert expected in messages, expected
    assert len(body["data"]["items"]) == 10
    everything = orjson.loads((await _both(QUERIES["every field"]))[0])["result"]
    assert everything["data"] is None
    assert any("Cannot return null for non-nullable field" in e["message"] for e in everything["errors"])


@pytest.mark.parametrize("query", [QUERIES["nullable fields only"], "{ items { id name @shout upper @shout } }"])
async def test_a_field_directive_keeps_the_directive_middleware(query: str) -> None:
    fast, stock = await _both(query, directives=[shout])
    assert fast == stock
    if "@shout" in query:
        assert b"NAME 1" in fast


async def test_resolver_middleware_switches_the_fast_path_off() -> None:
    fast, stock = await _both(QUERIES["nullable fields only"], extensions=[Exclaim])
    assert fast == stock
    assert b"name 1!" in fast


class Capturing(FastExecutionContext):
    """Keeps its executors, so a test can look at their plans."""

    made: list[FastExecutionContext] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        Capturing.made.append(self)


async def test_plans_classify_fields() -> None:
    schema = strawberry.Schema(query=Query, types=[ItemType], execution_context_class=Capturing)
    Capturing.made.clear()
    await schema.execute(QUERIES["every field"])
    [executor] = Capturing.made
    [plan] = [p for p in executor.plans.values() if p.parent_type.name == "ItemType"]
    kinds = {
        step.response_name: "typename" if step.typename else "plain" if step.get is not None else "standard"
        for step in plan.steps
    }
    assert kinds["__typename"] == "typename"
    plain = ("id", "name", "count", "stage", "at", "blob", "fragile", "upper", "exploding", "promised", "items")
    assert {kinds[name] for name in plain} == {"plain"}
    assert kinds["eventually"] == "standard"  # an async resolver
    assert plan_of(plan, "withInfo").call is not None
    assert execution.effective_middleware(None, schema._schema) is None
    assert plan_of(plan, "items").objects is not None  # a list of a concrete type without is_type_of


def plan_of(plan: execution.Plan, name: str) -> execution.Step:
    return next(step for step in plan.steps if step.response_name == name)


async def test_objects_are_completed_inline_only_where_equivalent() -> None:
    schema = strawberry.Schema(query=Query, types=[ItemType], execution_context_class=Capturing)
    Capturing.made.clear()
    await schema.execute("{ items(first: 2) { child { i } checked { i } requiredChild { i } } named { name } }")
    [executor] = Capturing.made
    [items] = [p for p in executor.plans.values() if "child" in p.grouped_field_set]
    assert plan_of(items, "child").objects is not None
    assert plan_of(items, "checked").objects is not None  # is_type_of marked ignores_info
    assert plan_of(items, "requiredChild").objects is not None  # a plain resolver
    [root] = [p for p in executor.plans.values() if p.parent_type.name == "Query"]
    assert plan_of(root, "named").objects is None  # an interface (and a resolver with arguments)


async def test_batch_queries_of_the_api_answer_alike(engine: AsyncEngine, api: Api, gen2: None) -> None:
    """A few shapes the API tests do not use, on the gen 2 fixtures (the mirror compares them)."""
    queries = [
        '{ batch(id: "%s") { ...B essays { nodes { ... on Essay { id } spellcheck { ... on SpellcheckResult '
        "{ correctionCount } ...on PhaseResult { phase } } } } } } fragment B on Batch { id status id }",
        '{ a: batch(id: "%s") { id } b: batch(id: "%s") { id userId } }',
    ]
    for query in queries:
        await api.post(query.replace("%s", FIXTURE_BATCH))
    assert _MIRROR.compared == len(queries)
