"""A graphql-core executor with a fast path for fields that are plain reads, keeping GraphQL's semantics.

Why: graphql-core resolves every field of every object through the same general machinery — a response path, a
resolve-info object, argument coercion, the middleware chain, Strawberry's resolver wrapper (an `Info`, argument
conversion, the field-extension chain), awaitable checks and a chain of type dispatches before a scalar is
coerced. A batch screen of 1,000 essays with ~45 fields each makes ~45,000 such trips, and they were nearly all
of the time of that query. Yet almost every field is a column of a db/reads.py row read by attribute
(app/types.py), or a one-line function of the row (`result_status`, `cj_job_id`).

What the fast path does, only where it is certainly equivalent:

* **No-op directive middleware is dropped.** Strawberry wraps every resolver in `DirectivesExtension` as soon as
  the schema declares any custom directive (here the operation-level `@consistent`). That wrapper acts only on
  custom directives placed on *fields*; when no directive of the schema other than @include/@skip may stand on a
  field, validation guarantees it never acts — yet its `async` wrapper turned every field into a coroutine, a
  ~10× slowdown of large answers. Any other middleware is kept, and then the fast path stays off entirely, since
  middleware must see every resolver call.
* **Plain fields skip the machinery.** Each collected selection set is classified once per request (graphql-core
  caches collected fields per object type and field group, so one plan serves every item of a list). A field is
  plain when it has no arguments, is not deferred, and Strawberry would resolve it with nothing but
  - `getattr(row, name)` (a field without resolver, extensions or exception handlers: Strawberry's own "basic
    field" path), or
  - a synchronous resolver whose only parameter is the parent (`root`/`parent`), without field extensions or
    exception handlers: Strawberry would call it with exactly that keyword argument.
  `__typename` is the parent type's name. A plain field's value is obtained that way; when it is a str, int,
  float, bool, datetime, dict or list and the field is a scalar or enum, it is coerced with the type's own
  `coerce_output_value`, exactly what graphql-core calls.
* **Everything else is graphql-core's.** A value that is null for a non-null field, an exception, an awaitable,
  another kind of object, or a failed coercion, and every object-typed plain field, is completed by graphql-core's
  `complete_value` with a proper resolve info and path, exactly as `execute_field` does after calling a resolver
  (`_complete_resolved` is that tail); a read or call that raises is reported by `handle_field_error` as there.
  Nothing is read or called twice. Fields that are not plain go through `execute_field` itself. Fields run in
  selection order and results keep it, so aliases, fragments, @skip/@include (applied while fields are collected,
  before any of this), null propagation and error order are unchanged.

`tests/api/test_execution_equivalence.py` runs every query of the API test suite through this executor and
Strawberry's stock one and compares the results byte for byte, and adds cases for each irregular value.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import date, datetime
from math import isfinite
from operator import attrgetter
from typing import Any

from graphql import (
    GraphQLBoolean,
    GraphQLField,
    GraphQLFloat,
    GraphQLID,
    GraphQLInt,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLOutputType,
    GraphQLSchema,
    GraphQLString,
    TypeNameMetaFieldDef,
    is_leaf_type,
    specified_directives,
)
from graphql.execution import MiddlewareManager
from graphql.execution.collect_fields import FieldDetails
from graphql.language import DirectiveLocation
from graphql.pyutils import Path, Undefined
from graphql.pyutils.gather_with_cancel import gather_with_cancel
from strawberry.extensions.directives import DirectivesExtension, DirectivesExtensionSync
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext
from strawberry.schema.schema_converter import GraphQLCoreConverter
from strawberry.types.field import StrawberryField

_DIRECTIVE_MIDDLEWARE = (DirectivesExtension, DirectivesExtensionSync)
# Strawberry's resolver functions (strawberry/schema/schema_converter.py, from_resolver): `_get_basic_result` for a
# field without resolver, extensions or exception handlers; `_resolver` for a synchronous field with a resolver.
_BASIC_RESOLVER = "_get_basic_result"
_SYNC_RESOLVER = "_resolver"
# Exact types a row attribute or a plain resolver returns that are neither awaitable nor exceptions, so they can
# go straight to coercion (anything else takes graphql-core's completion).
_PLAIN_VALUES = frozenset({str, int, float, bool, datetime, date, dict, list})

Getter = Callable[[Any], Any]


# --------------------------------------------------------------------------------------------------------------
# Plans
# --------------------------------------------------------------------------------------------------------------


# A step unpacked for the executor's loop (tuple unpacking is cheaper than attribute reads, ~45,000 times per
# large answer): response name, get, coerce, same, non_null, typename, the step itself.
Row = tuple[str, "Getter | None", "Callable[[Any], Any] | None", "type | None", bool, bool, "Step"]


@dataclass(frozen=True, slots=True)
class Step:
    """How one response key of a selection set is executed.

    `typename`: the parent type's name. `get`: a plain field's value from its parent (an attribute read or a plain
    resolver call), completed inline with `coerce` for a scalar or enum, else by graphql-core. Neither: graphql-core's
    `execute_field`.
    """

    response_name: str
    field_details: list[FieldDetails]
    field_def: GraphQLField | None = None
    get: Getter | None = None
    coerce: Callable[[Any], Any] | None = None
    same: type | None = None  # values of exactly this type are their own coercion (str for String…)
    non_null: bool = False
    typename: bool = False

    @property
    def row(self) -> Row:
        return (self.response_name, self.get, self.coerce, self.same, self.non_null, self.typename, self)


@dataclass(frozen=True, slots=True)
class Plan:
    parent_type: GraphQLObjectType
    grouped_field_set: dict[str, list[FieldDetails]]  # held, so that its id() is not reused while cached
    steps: tuple[Step, ...]
    rows: tuple[Row, ...]

    @property
    def plain(self) -> int:
        """Response keys that take the fast path."""
        return sum(1 for step in self.steps if step.get is not None or step.typename)


def plan_selection(
    schema: GraphQLSchema, parent_type: GraphQLObjectType, grouped_field_set: dict[str, list[FieldDetails]]
) -> Plan:
    """Classify each response key of a collected selection set (see the module docstring)."""
    handlers = _exception_handlers(schema)
    steps = [_step(schema, parent_type, name, details, handlers) for name, details in grouped_field_set.items()]
    return Plan(parent_type, grouped_field_set, tuple(steps), tuple(step.row for step in steps))


def _step(
    schema: GraphQLSchema,
    parent_type: GraphQLObjectType,
    name: str,
    details: list[FieldDetails],
    handlers: bool,
) -> Step:
    standard = Step(name, details)
    if any(d.defer_usage is not None or d.fragment_variable_values is not None for d in details):
        return standard
    node = details[0].node
    field_def = schema.get_field(parent_type, node.name.value)
    if field_def is None or field_def.args or node.arguments:
        return standard
    if field_def is TypeNameMetaFieldDef:
        return Step(name, details, typename=True)
    get = None if handlers else _plain_getter(field_def)
    if get is None:
        return standard
    return_type: GraphQLOutputType = field_def.type
    non_null = isinstance(return_type, GraphQLNonNull)
    nullable = return_type.of_type if isinstance(return_type, GraphQLNonNull) else return_type
    if not is_leaf_type(nullable):
        return Step(name, details, field_def, get, non_null=non_null)
    coerce, same = _coercion(nullable)
    return Step(name, details, field_def, get, coerce, same, non_null)


def _coercion(leaf: Any) -> tuple[Callable[[Any], Any], type | None]:
    """The leaf type's output coercion, with shortcuts for graphql-core's own scalars that return the value itself:
    a str as String or ID, a bool as Boolean, an in-range int as Int, a finite float as Float (scalars.py)."""
    if leaf is GraphQLString or leaf is GraphQLID:
        return leaf.coerce_output_value, str
    if leaf is GraphQLBoolean:
        return leaf.coerce_output_value, bool
    if leaf is GraphQLInt:
        return _int_output, None
    if leaf is GraphQLFloat:
        return _float_output, None
    return leaf.coerce_output_value, None


_INT_MIN, _INT_MAX = -(2**31), 2**31 - 1


def _int_output(value: Any) -> Any:
    if type(value) is int and _INT_MIN <= value <= _INT_MAX:
        return value
    return GraphQLInt.coerce_output_value(value)


def _float_output(value: Any) -> Any:
    if type(value) is float and isfinite(value):
        return value
    return GraphQLFloat.coerce_output_value(value)


def _exception_handlers(schema: GraphQLSchema) -> bool:
    """Whether the Strawberry schema may have exception handlers (then no resolver is called directly)."""
    strawberry_schema = getattr(schema, "_strawberry_schema", None)
    handlers = getattr(strawberry_schema, "exception_handlers", None)
    return handlers is None or len(handlers) > 0


def _plain_getter(field_def: GraphQLField) -> Getter | None:
    """How Strawberry obtains a plain field's value from its parent, when it does nothing more; else None."""
    field = (field_def.extensions or {}).get(GraphQLCoreConverter.DEFINITION_BACKREF)
    resolve_name = getattr(field_def.resolve, "__name__", None)
    if not isinstance(field, StrawberryField) or field.extensions:
        return None
    if field.base_resolver is None:
        # `_get_basic_result` calls `field.default_resolver(source, field.python_name)`.
        if resolve_name != _BASIC_RESOLVER or field.default_resolver is not getattr:
            return None
        return attrgetter(field.python_name)
    resolver = field.base_resolver
    if resolve_name != _SYNC_RESOLVER or field.is_async or resolver.is_async or field.arguments:
        return None
    if resolver.info_parameter is not None or resolver.self_parameter is not None:
        return None
    parent = resolver.root_parameter or resolver.parent_parameter
    parameters = resolver.signature.parameters
    if parent is None or len(parameters) != 1 or not callable(resolver.wrapped_func):
        return None
    # Strawberry's `get_arguments` passes the parent as this one keyword argument and nothing else.
    function, keyword = resolver.wrapped_func, parent.name
    return lambda source: function(**{keyword: source})


def effective_middleware(manager: MiddlewareManager | None, schema: GraphQLSchema) -> MiddlewareManager | None:
    """`manager` without Strawberry's directive middleware when that can never act (see the module docstring)."""
    if manager is None or not manager.middlewares:
        return None
    if _field_directives(schema):
        return manager
    kept = [m for m in manager.middlewares if not isinstance(m, _DIRECTIVE_MIDDLEWARE)]
    if len(kept) == len(manager.middlewares):
        return manager
    return MiddlewareManager(*kept) if kept else None


def _field_directives(schema: GraphQLSchema) -> list[str]:
    """Directives other than @include/@skip that a valid document may place on a field."""
    builtin = {directive.name for directive in specified_directives}
    return [
        directive.name
        for directive in schema.directives
        if directive.name not in builtin and DirectiveLocation.FIELD in directive.locations
    ]


# --------------------------------------------------------------------------------------------------------------
# The executor
# --------------------------------------------------------------------------------------------------------------


class FastExecutionContext(StrawberryGraphQLCoreExecutionContext):
    """Strawberry's executor with the fast path of the module docstring (`strawberry.Schema(...,
    execution_context_class=FastExecutionContext)`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.middleware_manager = effective_middleware(self.middleware_manager, self.schema)
        # Sub-executors (subscription events, deferred work) are shallow copies and share this cache: their
        # operation, fragments and variables are the same, so are the plans.
        self.plans: dict[int, Plan] = {}

    def plan(self, parent_type: GraphQLObjectType, grouped_field_set: dict[str, list[FieldDetails]]) -> Plan:
        plan = self.plans.get(id(grouped_field_set))
        if plan is None or plan.parent_type is not parent_type or plan.grouped_field_set is not grouped_field_set:
            plan = plan_selection(self.schema, parent_type, grouped_field_set)
            self.plans[id(grouped_field_set)] = plan
        return plan

    def execute_fields(
        self,
        parent_type: GraphQLObjectType,
        source_value: Any,
        path: Path | None,
        grouped_field_set: dict[str, list[FieldDetails]],
        position_context: Any,
    ) -> Any:
        # Middleware wraps every resolver call, and a position context means incremental delivery (@defer,
        # @stream) is under way: both keep graphql-core's own loop.
        if self.middleware_manager is not None or position_context is not None:
            return super().execute_fields(parent_type, source_value, path, grouped_field_set, position_context)

        is_awaitable = self.is_awaitable
        plain_values = _PLAIN_VALUES
        results: dict[str, Any] = {}
        awaitable_fields: list[str] = []
        try:
            for name, get, coerce, same, non_null, typename, step in self.plan(parent_type, grouped_field_set).rows:
                if get is not None:
                    try:
                        value = get(source_value)
                    except Exception as raw_error:
                        self._field_error(raw_error, step, parent_type, path)  # raises for a non-null field
                        results[name] = None
                        continue
                    kind = type(value)
                    if kind is same:
                        results[name] = value
                        continue
                    if coerce is not None and kind in plain_values:
                        try:
                            coerced = coerce(value)
                        except Exception:
                            coerced = None
                        if coerced is not None and coerced is not Undefined:
                            results[name] = coerced
                            continue
                    elif value is None and not non_null:
                        results[name] = None
                        continue
                    result = self._complete_resolved(step, parent_type, path, value)
                elif typename:
                    results[name] = parent_type.name
                    continue
                else:
                    result = self.execute_field(
                        parent_type, source_value, step.field_details, Path(path, name, parent_type.name), None
                    )
                    if result is Undefined:
                        continue
                results[name] = result
                if is_awaitable(result):
                    awaitable_fields.append(name)
        except Exception:
            if awaitable_fields:
                self.settle_in_background([results[field] for field in awaitable_fields])
            raise

        if not awaitable_fields:
            return results
        return _gathered(results, awaitable_fields)

    def _complete_resolved(self, step: Step, parent_type: GraphQLObjectType, path: Path | None, result: Any) -> Any:
        """graphql-core's `execute_field` from the point where the resolver has returned `result`."""
        assert step.field_def is not None
        field_path = Path(path, step.response_name, parent_type.name)
        return_type = step.field_def.type
        details = step.field_details
        info = self.build_resolve_info(step.field_def, [d.node for d in details], parent_type, field_path)
        try:
            if self.is_awaitable(result):
                return self.complete_awaitable_value(return_type, details, info, field_path, result, None)
            completed = self.complete_value(return_type, details, info, field_path, result, None)
            if self.is_awaitable(completed):
                return self._await_completed(completed, return_type, details, field_path)
        except Exception as raw_error:
            self.handle_field_error(raw_error, return_type, details, field_path)
            return None
        return completed

    async def _await_completed(
        self, completed: Awaitable[Any], return_type: GraphQLOutputType, details: list[FieldDetails], path: Path
    ) -> Any:
        try:
            return await completed
        except Exception as raw_error:
            self.handle_field_error(raw_error, return_type, details, path)
            return None

    def _field_error(self, raw_error: Exception, step: Step, parent_type: GraphQLObjectType, path: Path | None) -> None:
        """A plain read or call raised: reported as `execute_field` reports a resolver's exception."""
        assert step.field_def is not None
        field_path = Path(path, step.response_name, parent_type.name)
        self.handle_field_error(raw_error, step.field_def.type, step.field_details, field_path)


async def _gathered(results: dict[str, Any], awaitable_fields: list[str]) -> dict[str, Any]:
    """graphql-core's `execute_fields` tail: the awaitable results replaced by their values."""
    if len(awaitable_fields) == 1:
        field = awaitable_fields[0]
        results[field] = await results[field]
    else:
        awaited = await gather_with_cancel(*(results[field] for field in awaitable_fields))
        results.update(zip(awaitable_fields, awaited, strict=True))
    return results
