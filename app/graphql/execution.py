"""A graphql-core executor with a fast path for fields that are plain reads, keeping GraphQL's semantics.

Why: graphql-core resolves every field of every object through the same general machinery — a response path, a
resolve-info object, argument coercion, the middleware chain, Strawberry's resolver wrapper (an `Info`, argument
conversion, the field-extension chain), awaitable checks and a chain of type dispatches before a scalar is
coerced. A batch screen of 1,000 essays with ~45 fields each makes ~45,000 such trips, and they were nearly all
of the time of that query. Yet almost every field is a column of a db/rows.py row read by attribute
(app/graphql/types.py), or a one-line function of the row (`result_status`, `cj_job_id`).

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
* **Objects of plain fields are completed inline.** When a plain field's type is a concrete object type, or a
  list of one, and its value is an object (or a list or tuple of objects) that is neither awaitable nor an
  exception, its selection set is executed directly (`complete_object_value` / `complete_iterable_value` without
  a resolve info per object), with the same paths and error handling per field and per item. A type with an
  `is_type_of` takes this path only when the function is marked `ignores_info` (it is then called with None);
  interfaces, unions, nested lists, null items and `@stream` stay with graphql-core.
* **Resolvers of the parent and `info` are called directly.** A synchronous resolver without arguments whose
  parameters are the parent and `info` gets a resolve info built as `execute_field` builds it, wrapped in
  Strawberry's `Info` as Strawberry wraps it, and its value is completed as `execute_field` completes it.
* **Everything else is graphql-core's.** A value that is null for a non-null field, an exception, an awaitable,
  another kind of object, or a failed coercion, and every object-typed plain field, is completed by graphql-core's
  `complete_value` with a proper resolve info and path, exactly as `execute_field` does after calling a resolver
  (`_complete_resolved` is that tail); a read or call that raises is reported by `handle_field_error` as there.
  Nothing is read or called twice. Fields that are not plain go through `execute_field` itself. Fields run in
  selection order and results keep it, so aliases, fragments, @skip/@include (applied while fields are collected,
  before any of this), null propagation and error order are unchanged.

`tests/app/graphql/test_execution_equivalence.py` runs every query of the API test suite through this executor and
Strawberry's stock one and compares the results byte for byte, and adds cases for each irregular value.

**Checked at start-up.** All of this leans on internals of Strawberry (the names of its resolver functions, its
field and resolver objects, its directive middleware) and of graphql-core 3.3 (the executor's methods, field
details), which pyproject.toml fences to the versions the equivalence test has passed. `self_check` verifies, each
time the schema is built (app/graphql/schema.py), that those internals are present with the expected shapes, and runs a
probe query through this executor and the stock one: the answers must be the same, with the fast path engaged. When
anything differs (a fence lifted by hand, an internal renamed) the schema logs one warning and executes with
Strawberry's stock executor: slower on large answers, the same answers.

**One module, on purpose** (about 770 lines): the executor, its per-request plans and its hot loop are one piece of
code that must stay equivalent to graphql-core's as a whole, and the start-up check verifies exactly the internals
they lean on (FIELD_ATTRIBUTES and the rest stand beside the code that reads them). app/graphql/schema.py imports this
module as one unit, so that any of those internals failing to import falls back to the stock executor (see
`tests/app/graphql/test_executor_choice.py`). Splitting the check from what it checks would let them drift apart.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import date, datetime
from math import isfinite
from operator import attrgetter
from typing import Any, TypeVar

import strawberry
from graphql import (
    GraphQLBoolean,
    GraphQLEnumType,
    GraphQLField,
    GraphQLFloat,
    GraphQLID,
    GraphQLInt,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLOutputType,
    GraphQLResolveInfo,
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
Settled = TypeVar("Settled", dict[str, Any], list[Any])
InfoResolver = Callable[[Any, "GraphQLResolveInfo[Any]"], Any]


# --------------------------------------------------------------------------------------------------------------
# Plans
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Objects:
    """How a plain field of a concrete object type, or of a list of one, is completed inline.

    `check`: the type's `is_type_of` when it has one (only ones marked `ignores_info`, called without an info).
    `kinds`: value types already seen to be neither awaitable nor exceptions, for this request's plan.
    """

    object_type: GraphQLObjectType
    is_list: bool
    item_type: GraphQLOutputType  # the list's item type (with its non-null wrapper), or the object type
    check: Callable[[Any, Any], Any] | None
    kinds: set[type]


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
    # An object-typed plain field whose objects can be completed inline (see `objects`), or None.
    objects: Objects | None = None
    # A synchronous resolver of the parent and `info` only: called with a resolve info built here.
    call: InfoResolver | None = None

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
    if handlers:
        return standard
    get = _plain_getter(field_def)
    if get is None:
        call = _info_resolver(schema, field_def)
        non_null = isinstance(field_def.type, GraphQLNonNull)
        return standard if call is None else Step(name, details, field_def, non_null=non_null, call=call)
    return_type: GraphQLOutputType = field_def.type
    non_null = isinstance(return_type, GraphQLNonNull)
    nullable = return_type.of_type if isinstance(return_type, GraphQLNonNull) else return_type
    if not is_leaf_type(nullable):
        return Step(name, details, field_def, get, non_null=non_null, objects=_objects(nullable, details))
    coerce, same = _coercion(nullable)
    return Step(name, details, field_def, get, coerce, same, non_null)


def ignores_info(is_type_of: Callable[..., bool]) -> Callable[..., bool]:
    """Marks an `is_type_of` function that does not use its `info` argument, so the fast path may call it
    without building one (graphql-core builds one for every object it completes)."""
    setattr(is_type_of, _IGNORES_INFO, True)
    return is_type_of


_IGNORES_INFO = "__ras_ignores_info__"


def _objects(field_type: GraphQLOutputType, details: list[FieldDetails]) -> Objects | None:
    """Inline completion for a field of a concrete object type or a list of one; None for anything else
    (interfaces and unions, nested lists, `@stream`, an `is_type_of` that may use its info)."""
    is_list = isinstance(field_type, GraphQLList)
    item_type: GraphQLOutputType = field_type.of_type if isinstance(field_type, GraphQLList) else field_type
    object_type = item_type.of_type if isinstance(item_type, GraphQLNonNull) else item_type
    if not isinstance(object_type, GraphQLObjectType):
        return None
    if any(directive.name.value == "stream" for d in details for directive in d.node.directives or ()):
        return None
    check = object_type.is_type_of
    if check is not None and not getattr(getattr(check, "__func__", check), _IGNORES_INFO, False):
        return None
    return Objects(object_type, is_list, item_type, check, set())


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
    if isinstance(leaf, GraphQLEnumType):
        return _remembered(leaf.coerce_output_value), None
    return leaf.coerce_output_value, None


_REMEMBERED = 256  # distinct values an enum's coercion remembers per plan (an enum has a handful)


def _remembered(coerce: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """An enum's output coercion remembering its result per str value: for a plain str (not an enum member) it is
    the lookup of the value among the enum's values, the same every time; anything else is coerced each time."""
    seen: dict[str, Any] = {}

    def output(value: Any) -> Any:
        if type(value) is not str:
            return coerce(value)
        found = seen.get(value)
        if found is None:
            found = coerce(value)
            if len(seen) < _REMEMBERED:
                seen[value] = found
        return found

    return output


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
    # Strawberry's `get_arguments` passes the parent as this one keyword argument and nothing else; a parameter that
    # may be passed by position binds the same way when passed so (no keyword dictionary per call).
    function, keyword = resolver.wrapped_func, parent.name
    if parameters[keyword].kind is inspect.Parameter.POSITIONAL_OR_KEYWORD:
        return function
    return lambda source: function(**{keyword: source})


def _info_resolver(schema: GraphQLSchema, field_def: GraphQLField) -> InfoResolver | None:
    """How Strawberry calls a synchronous resolver whose parameters are the parent and `info`, when it does nothing
    more; else None. Strawberry wraps graphql-core's resolve info in its `Info` and calls the resolver with the
    parent and that `Info` as keyword arguments (`get_arguments`; the `info` key is how it finds it again)."""
    field = (field_def.extensions or {}).get(GraphQLCoreConverter.DEFINITION_BACKREF)
    strawberry_schema = getattr(schema, "_strawberry_schema", None)
    if not isinstance(field, StrawberryField) or field.extensions or strawberry_schema is None:
        return None
    resolver = field.base_resolver
    if resolver is None or getattr(field_def.resolve, "__name__", None) != _SYNC_RESOLVER:
        return None
    if field.is_async or resolver.is_async or field.arguments or resolver.self_parameter is not None:
        return None
    parent = resolver.root_parameter or resolver.parent_parameter
    info = resolver.info_parameter
    if parent is None or info is None or info.name != "info" or len(resolver.signature.parameters) != 2:
        return None
    if not callable(resolver.wrapped_func):
        return None
    function, keyword, info_class = resolver.wrapped_func, parent.name, strawberry_schema.config.info_class
    return lambda source, raw: function(**{keyword: source, "info": info_class(_raw_info=raw, _field=field)})


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
                    objects = step.objects
                    if objects is not None and self._inline(objects, value):
                        result = self._complete_objects(step, objects, parent_type, path, value)
                    else:
                        result = self._complete_resolved(step, parent_type, path, value)
                elif typename:
                    results[name] = parent_type.name
                    continue
                elif step.call is not None:
                    result = self._call_resolver(step, step.call, parent_type, path, source_value)
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

    def _call_resolver(
        self, step: Step, call: InfoResolver, parent_type: GraphQLObjectType, path: Path | None, source: Any
    ) -> Any:
        """graphql-core's `execute_field` for a field without arguments, calling the resolver as Strawberry would."""
        assert step.field_def is not None
        field_path = Path(path, step.response_name, parent_type.name)
        info = self.build_resolve_info(step.field_def, [d.node for d in step.field_details], parent_type, field_path)
        try:
            result = call(source, info)
        except Exception as raw_error:
            self.handle_field_error(raw_error, step.field_def.type, step.field_details, field_path)
            return None
        if result is None and not step.non_null:
            return None
        return self._complete_resolved(step, parent_type, path, result, info)

    def _complete_resolved(
        self,
        step: Step,
        parent_type: GraphQLObjectType,
        path: Path | None,
        result: Any,
        info: GraphQLResolveInfo[Any] | None = None,
    ) -> Any:
        """graphql-core's `execute_field` from the point where the resolver has returned `result`."""
        assert step.field_def is not None
        return_type = step.field_def.type
        details = step.field_details
        if info is None:
            field_path = Path(path, step.response_name, parent_type.name)
            info = self.build_resolve_info(step.field_def, [d.node for d in details], parent_type, field_path)
        else:
            field_path = info.path
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

    def _inline(self, objects: Objects, value: Any) -> bool:
        """Whether `value` (not None) can be completed by `_complete_objects`: an object, or a list or tuple of
        objects, of kinds that are neither awaitable nor exceptions and that pass the type's `is_type_of`."""
        if objects.is_list:
            if type(value) is not list and type(value) is not tuple:
                return False
            return all(item is not None and self._plain_object(objects, item) for item in value)
        return self._plain_object(objects, value)

    def _plain_object(self, objects: Objects, value: Any) -> bool:
        kind = type(value)
        if kind not in objects.kinds:
            if issubclass(kind, Exception) or self.is_awaitable(value):
                return False
            objects.kinds.add(kind)
        return objects.check is None or objects.check(value, None) is True

    def _complete_objects(
        self, step: Step, objects: Objects, parent_type: GraphQLObjectType, path: Path | None, value: Any
    ) -> Any:
        """graphql-core's completion of an object (`complete_object_value`) or of a list of objects
        (`complete_iterable_value`) for values `_inline` accepted, without a resolve info per object."""
        field_path = Path(path, step.response_name, parent_type.name)
        assert step.field_def is not None
        return_type = step.field_def.type
        details = step.field_details
        try:
            grouped_field_set, new_defer_usages, _ = self.collect_subfields(objects.object_type, details)
            if new_defer_usages:
                return self._complete_resolved(step, parent_type, path, value)
            if objects.is_list:
                completed = self._complete_items(objects, details, field_path, grouped_field_set, value)
            else:
                completed = self.execute_fields(objects.object_type, value, field_path, grouped_field_set, None)
            if self.is_awaitable(completed):
                return self._await_completed(completed, return_type, details, field_path)
        except Exception as raw_error:
            self.handle_field_error(raw_error, return_type, details, field_path)
            return None
        return completed

    def _complete_items(
        self,
        objects: Objects,
        details: list[FieldDetails],
        path: Path,
        grouped_field_set: dict[str, list[FieldDetails]],
        items: list[Any] | tuple[Any, ...],
    ) -> Any:
        object_type, item_type = objects.object_type, objects.item_type
        completed: list[Any] = []
        awaitable_indices: list[int] = []
        try:
            for index, item in enumerate(items):
                item_path = Path(path, index, None)
                try:
                    result = self.execute_fields(object_type, item, item_path, grouped_field_set, None)
                except Exception as raw_error:
                    self.handle_field_error(raw_error, item_type, details, item_path)  # raises for non-null items
                    result = None
                if self.is_awaitable(result):
                    result = self._await_completed(result, item_type, details, item_path)
                    awaitable_indices.append(index)
                completed.append(result)
        except Exception:
            if awaitable_indices:
                self.settle_in_background([completed[index] for index in awaitable_indices])
            raise
        if not awaitable_indices:
            return completed
        return _gathered(completed, awaitable_indices)

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


async def _gathered(results: Settled, keys: list[Any]) -> Settled:
    """graphql-core's tail of `execute_fields` (a dict by response name) and `complete_iterable_value` (a list by
    index): the awaitable values at `keys` replaced by their results."""
    if len(keys) == 1:
        results[keys[0]] = await results[keys[0]]
    else:
        awaited = await gather_with_cancel(*(results[key] for key in keys))
        for key, value in zip(keys, awaited, strict=True):
            results[key] = value
    return results


# --------------------------------------------------------------------------------------------------------------
# Start-up check
# --------------------------------------------------------------------------------------------------------------

# The executor methods the fast path overrides or calls positionally, with their parameters (after `self`) in
# graphql-core 3.3.
EXECUTOR_METHODS: dict[str, tuple[str, ...]] = {
    "execute_fields": ("parent_type", "source_value", "path", "grouped_field_set", "position_context"),
    "execute_field": ("parent_type", "source", "field_details_list", "path", "position_context"),
    "build_resolve_info": ("field_def", "field_nodes", "parent_type", "path"),
    "complete_value": ("return_type", "field_details_list", "info", "path", "result", "position_context"),
    "complete_awaitable_value": ("return_type", "field_details_list", "info", "path", "result", "position_context"),
    "handle_field_error": ("raw_error", "return_type", "field_details_list", "path"),
    "collect_subfields": ("return_type", "field_details_list"),
    "settle_in_background": ("awaitables",),
}
# Attributes read from Strawberry's field and resolver objects and from graphql-core's field details.
FIELD_ATTRIBUTES = ("base_resolver", "default_resolver", "python_name", "extensions", "is_async", "arguments")
RESOLVER_ATTRIBUTES = (
    "is_async",
    "info_parameter",
    "self_parameter",
    "root_parameter",
    "parent_parameter",
    "signature",
    "wrapped_func",
)
FIELD_DETAILS_ATTRIBUTES = ("node", "defer_usage", "fragment_variable_values")


@dataclass
class _ProbeRow:
    name: str
    children: list[_ProbeRow]

    @property
    def broken(self) -> str | None:
        raise ValueError(f"probe {self.name}")


@strawberry.type(name="ProbeChild")
class _ProbeChild:
    name: str


@strawberry.type(name="ProbeItem")
class _ProbeItem:
    name: str  # no resolver: Strawberry's basic-field function, read by attribute on the fast path
    broken: str | None  # raises: reported the same way by both
    children: list[_ProbeChild]  # objects completed inline

    @strawberry.field
    def upper(root: _ProbeRow) -> str:  # a resolver of the parent only: called directly
        return root.name.upper()

    @strawberry.field
    def where(root: _ProbeRow, info: strawberry.Info) -> str:  # the parent and `info`: called with a built info
        return f"{info.field_name} {info.path.key} {root.name}"


@strawberry.type(name="ProbeQuery")
class _ProbeQuery:
    @strawberry.field
    def items(self) -> list[_ProbeItem]:
        rows = [_ProbeRow(f"r{n}", [_ProbeRow(f"r{n}.{i}", []) for i in range(2)]) for n in range(2)]
        return rows  # type: ignore[return-value]  # rows are read as ProbeItems


@strawberry.directive(locations=[DirectiveLocation.QUERY], name="probe")
def _probe_directive(value: str) -> str:
    """An operation directive, as the app's @consistent: Strawberry then adds the middleware the fast path drops."""
    return value


class _ProbeSchema(strawberry.Schema):
    def process_errors(self, errors: list[Any], execution_context: Any = None) -> None:
        """The probe's field error is expected; Strawberry would log it."""


_PROBE_QUERY = "query Probe { __typename items { __typename name n: name upper where broken children { name } } }"
# Strawberry's resolver function for each field of ProbeItem, as `_plain_getter` and `_info_resolver` recognise them.
_PROBE_RESOLVERS = {
    "name": _BASIC_RESOLVER,
    "broken": _BASIC_RESOLVER,
    "children": _BASIC_RESOLVER,
    "upper": _SYNC_RESOLVER,
    "where": _SYNC_RESOLVER,
}


def self_check() -> str | None:
    """None when the fast path can run here; otherwise what is missing or differs, in one line.

    The internals it recognises must be present with the expected shapes, and a probe query (plain fields, resolvers
    of the parent and of `info`, inline objects, an alias, a field error, an operation directive) must answer the
    same through `FastExecutionContext` as through Strawberry's stock executor, with the fast path engaged."""
    try:
        return _missing_internals() or _probe()
    except Exception as exc:  # the probe itself failing is a sign of changed internals too
        return f"the probe failed: {type(exc).__name__}: {exc}"


def _missing_internals() -> str | None:
    for name, expected in EXECUTOR_METHODS.items():
        method = getattr(StrawberryGraphQLCoreExecutionContext, name, None)
        if not callable(method):
            return f"graphql-core's executor has no method {name}"
        found = tuple(inspect.signature(method).parameters)[1:]
        if found != expected:
            return f"graphql-core's {name} takes {found}, not {expected}"
    if not callable(getattr(StrawberryGraphQLCoreExecutionContext, "is_awaitable", None)):
        return "graphql-core's executor has no is_awaitable"
    if not isinstance(getattr(GraphQLCoreConverter, "DEFINITION_BACKREF", None), str):
        return "Strawberry's GraphQLCoreConverter has no DEFINITION_BACKREF"
    return None


def _outcome(result: Any) -> dict[str, Any]:
    return {"data": result.data, "errors": [error.formatted for error in result.errors or ()]}


def _difference(a: Any, b: Any, path: str = "") -> tuple[str, Any, Any]:
    """The first place where two JSON-like values differ, and the values there."""
    if type(a) is type(b) and isinstance(a, dict) and a.keys() == b.keys():
        key = next(k for k in a if a[k] != b[k])
        return _difference(a[key], b[key], f"{path}.{key}")
    if type(a) is type(b) and isinstance(a, list | tuple) and len(a) == len(b):
        index = next(i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y)
        return _difference(a[index], b[index], f"{path}[{index}]")
    return path or ".", a, b


def _probe() -> str | None:
    schema = _ProbeSchema(query=_ProbeQuery, directives=[_probe_directive])
    schema.execution_context_class = StrawberryGraphQLCoreExecutionContext
    stock = schema.execute_sync(_PROBE_QUERY)
    contexts: list[FastExecutionContext] = []

    class Recording(FastExecutionContext):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            contexts.append(self)

    schema.execution_context_class = Recording
    fast = schema.execute_sync(_PROBE_QUERY)
    if _outcome(fast) != _outcome(stock):
        where, on_fast, on_stock = _difference(_outcome(fast), _outcome(stock))
        return f"a probe query answered {on_fast!r} on the fast path, {on_stock!r} on the stock one, at {where}"
    if stock.data is None or len(stock.errors or ()) != 2:
        return f"the probe query answered {_outcome(stock)!r}, not its data with two field errors"

    item_type = schema._schema.get_type("ProbeItem")
    assert isinstance(item_type, GraphQLObjectType)
    resolvers = {name: getattr(item_type.fields[name].resolve, "__name__", None) for name in _PROBE_RESOLVERS}
    if resolvers != _PROBE_RESOLVERS:
        return f"Strawberry's resolver functions are {resolvers}, not {_PROBE_RESOLVERS}"
    for name in _PROBE_RESOLVERS:
        field = (item_type.fields[name].extensions or {}).get(GraphQLCoreConverter.DEFINITION_BACKREF)
        lacking = [a for a in FIELD_ATTRIBUTES if not hasattr(field, a)]
        resolver = getattr(field, "base_resolver", None)
        if resolver is not None:
            lacking += [a for a in RESOLVER_ATTRIBUTES if not hasattr(resolver, a)]
        if not isinstance(field, StrawberryField) or lacking:
            return f"Strawberry's field {name} is {type(field).__name__} lacking {lacking}"

    if len(contexts) != 1:
        return f"the fast executor was built {len(contexts)} times for one probe query"
    context = contexts[0]
    if context.middleware_manager is not None:
        return "Strawberry's directive middleware is not recognised (it would run on every field)"
    plans = [plan for plan in context.plans.values() if plan.parent_type is item_type]
    if not plans:
        return "the fast executor planned no selection of the probe's items"
    steps = {step.response_name: step for step in plans[0].steps}
    details = [d for step in plans[0].steps for d in step.field_details]
    if any(not hasattr(d, a) for d in details for a in FIELD_DETAILS_ATTRIBUTES):
        return f"graphql-core's field details lack some of {FIELD_DETAILS_ATTRIBUTES}"
    engaged = {
        "__typename": steps["__typename"].typename,
        "name": steps["name"].get is not None,
        "n": steps["n"].get is not None,
        "upper": steps["upper"].get is not None,
        "where": steps["where"].call is not None,
        "children": steps["children"].objects is not None,
    }
    if not all(engaged.values()):
        return f"the fast path did not engage for {sorted(k for k, v in engaged.items() if not v)} of the probe"
    return None
