"""How a GraphQL document is held to the API's limits (app/limits.py describes them), each refused with
LIMIT_EXCEEDED before anything executes: validation rules for depth, aliases and introspection; `ParseLimits`, which
has the parser stop at the length and token limits; and `operation_refusal`, the checks that need the variables'
values (the node limit, the representations of federation's `_entities`, NUL characters in string arguments).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, cast

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLSyntaxError,
    InlineFragmentNode,
    IntValueNode,
    Lexer,
    OperationDefinitionNode,
    SelectionSetNode,
    Source,
    StringValueNode,
    TokenKind,
    ValidationContext,
    ValidationRule,
    VariableNode,
    get_operation_ast,
)
from graphql import ExecutionResult as GraphQLResult
from graphql.language import Visitor, visit
from strawberry.extensions import SchemaExtension

from app.errors import BAD_USER_INPUT, FORBIDDEN, LIMIT_EXCEEDED
from app.graphql import entities
from app.limits import ApiLimits


def _limit_error(message: str, limit: int, node: Any = None) -> GraphQLError:
    return GraphQLError(message, node, extensions={"code": LIMIT_EXCEEDED, "limit": limit})


class _Walker:
    """Measures selection sets, visiting each fragment once however often it is spread (no fragment bombs)."""

    def __init__(self, document_fragments: dict[str, FragmentDefinitionNode]) -> None:
        self.fragments = document_fragments
        self._depths: dict[str, int] = {}
        self._aliases: dict[str, int] = {}

    def _fragment(self, name: str) -> SelectionSetNode | None:
        fragment = self.fragments.get(name)
        return fragment.selection_set if fragment else None

    def depth(self, selections: SelectionSetNode | None) -> int:
        deepest = 0
        for node in selections.selections if selections else ():
            if isinstance(node, FieldNode):
                # __typename, __schema and __type describe the schema, not data.
                here = 0 if node.name.value.startswith("__") else 1 + self.depth(node.selection_set)
            elif isinstance(node, InlineFragmentNode):
                here = self.depth(node.selection_set)
            elif isinstance(node, FragmentSpreadNode):
                name = node.name.value
                if name not in self._depths:
                    self._depths[name] = 0  # a cycle (reported by the standard rules) stops here
                    self._depths[name] = self.depth(self._fragment(name))
                here = self._depths[name]
            else:
                here = 0
            deepest = max(deepest, here)
        return deepest

    def aliases(self, selections: SelectionSetNode | None) -> int:
        total = 0
        for node in selections.selections if selections else ():
            if isinstance(node, FieldNode):
                total += (1 if node.alias else 0) + self.aliases(node.selection_set)
            elif isinstance(node, InlineFragmentNode):
                total += self.aliases(node.selection_set)
            elif isinstance(node, FragmentSpreadNode):
                name = node.name.value
                if name not in self._aliases:
                    self._aliases[name] = 0
                    self._aliases[name] = self.aliases(self._fragment(name))
                total += self._aliases[name]
        return total


def _walker(context: ValidationContext) -> _Walker:
    fragments = {d.name.value: d for d in context.document.definitions if isinstance(d, FragmentDefinitionNode)}
    return _Walker(fragments)


def depth_rule(max_depth: int) -> type[ValidationRule]:
    class DepthLimit(ValidationRule):
        def enter_operation_definition(self, node: OperationDefinitionNode, *_: Any) -> None:
            depth = _walker(self.context).depth(node.selection_set)
            if depth > max_depth:
                name = node.name.value if node.name else "anonymous operation"
                message = f"Query depth {depth} of {name} exceeds the limit of {max_depth} nested fields."
                self.report_error(_limit_error(message, max_depth, node))

    return DepthLimit


def alias_rule(max_aliases: int) -> type[ValidationRule]:
    class AliasLimit(ValidationRule):
        def enter_operation_definition(self, node: OperationDefinitionNode, *_: Any) -> None:
            count = _walker(self.context).aliases(node.selection_set)
            if count > max_aliases:
                message = f"Query uses {count} aliases; the limit is {max_aliases}."
                self.report_error(_limit_error(message, max_aliases, node))

    return AliasLimit


class IntrospectionDisabled(ValidationRule):
    """Refuses what spells out the schema: introspection, and federation's `_service { sdl }` (a gateway composes
    from schema.graphql instead, docs/gateway.md)."""

    def enter_field(self, node: FieldNode, *_: Any) -> None:
        if node.name.value in ("__schema", "__type"):
            message = "Introspection is disabled on this server (RAS_INTROSPECTION_ENABLED)."
            self.report_error(GraphQLError(message, node, extensions={"code": FORBIDDEN}))
        elif node.name.value == "_service":
            message = (
                "_service (the subgraph SDL) is disabled with introspection on this server (RAS_INTROSPECTION_ENABLED);"
                " compose from the release's schema.graphql."
            )
            self.report_error(GraphQLError(message, node, extensions={"code": FORBIDDEN}))


def lexical_tokens(query: str, stop_after: int) -> int:
    """Tokens in `query` (comments not counted), counting no further than `stop_after` + 1; a syntax error ends the
    count (the parser reports it)."""
    lexer = Lexer(Source(query))
    count = 0
    try:
        while count <= stop_after and lexer.advance().kind != TokenKind.EOF:
            count += 1
    except GraphQLSyntaxError:
        pass
    return count


class ParseLimits(SchemaExtension):
    """Has the parser stop at the length and token limits, and marks its refusal as LIMIT_EXCEEDED; after
    validation, refuses what `operation_refusal` refuses (checks that need the variables) without executing it."""

    def __init__(self, limits: ApiLimits) -> None:
        self.limits = limits

    def on_operation(self) -> Iterator[None]:
        # graphql-core's parser takes these options; Strawberry's ParseOptions type only declares `max_tokens`.
        options = cast(dict[str, Any], self.execution_context.parse_options)
        options["max_lexical_tokens"] = self.limits.max_tokens
        options["max_source_length"] = self.limits.max_query_length
        yield

    def on_parse(self) -> Iterator[None]:
        yield
        errors = self.execution_context.pre_execution_errors or []
        query = self.execution_context.query or ""
        for error in errors:
            if not isinstance(error, GraphQLSyntaxError):
                continue
            # The parser's own message is not a stable interface; measure again (cheap: both are bounded).
            if len(query) > self.limits.max_query_length:
                error.message = f"Query is {len(query)} characters long; the limit is {self.limits.max_query_length}."
                error.extensions = {"code": LIMIT_EXCEEDED, "limit": self.limits.max_query_length}
            elif lexical_tokens(query, self.limits.max_tokens) > self.limits.max_tokens:
                error.message = f"Query has more than {self.limits.max_tokens} tokens, the limit."
                error.extensions = {"code": LIMIT_EXCEEDED, "limit": self.limits.max_tokens}

    def on_execute(self) -> Iterator[None]:
        context = self.execution_context
        if context.graphql_document is not None:
            error = operation_refusal(
                self.limits, context.graphql_document, context.operation_name, context.variables or {}
            )
            if error is not None:
                # A result set before execution replaces it: Strawberry then executes nothing.
                context.result = GraphQLResult(data=None, errors=[error])
        yield


# The schema's connections by field name (Query.batches, Batch.essays); no other field has either name.
_CONNECTIONS = ("batches", "essays")


class _NodeCounter:
    """Counts the list items an operation may return: a connection's `first` (its default when omitted, clamped to
    0..maximum since the resolver refuses more anyway) times the items of the connections around it; `_entities`
    returns one item per representation, which it keeps for `operation_refusal` to check."""

    def __init__(
        self, limits: ApiLimits, fragments: dict[str, FragmentDefinitionNode], operation: OperationDefinitionNode
    ) -> None:
        self.limits = limits
        self.fragments = fragments
        self.variables: dict[str, Any] = {}
        for definition in operation.variable_definitions or ():
            default = definition.default_value
            if isinstance(default, IntValueNode):
                self.variables[definition.variable.name.value] = int(default.value)
        self._per_fragment: dict[str, int] = {}
        self.representations: list[Any] = []

    def _first(self, node: FieldNode, name: str) -> int:
        if name == "batches":
            default, maximum = self.limits.batches_page_default, self.limits.batches_page_max
        else:
            default, maximum = self.limits.essays_page_default, self.limits.essays_page_max
        value: Any = default
        for argument in node.arguments or ():
            if argument.name.value != "first":
                continue
            given = argument.value
            if isinstance(given, IntValueNode):
                value = int(given.value)
            elif isinstance(given, VariableNode):
                value = self.variables.get(given.name.value)
        if value is None:  # omitted, or null: the resolver uses the default
            value = default
        # A value of the wrong type fails variable coercion later with its own clear error.
        if not isinstance(value, int) or isinstance(value, bool):
            return 0
        return max(0, min(value, maximum))

    def count(self, selections: SelectionSetNode | None, multiplier: int) -> int:
        total = 0
        for node in selections.selections if selections else ():
            if isinstance(node, FieldNode):
                name = node.name.value
                if name in _CONNECTIONS:
                    items = multiplier * self._first(node, name)
                    total += items + self.count(node.selection_set, items)
                elif name == entities.ENTITIES_FIELD:
                    given = entities.representations(node, self.variables)
                    self.representations += given
                    items = multiplier * len(given)
                    total += items + self.count(node.selection_set, items)
                else:
                    total += self.count(node.selection_set, multiplier)
            elif isinstance(node, InlineFragmentNode):
                total += self.count(node.selection_set, multiplier)
            elif isinstance(node, FragmentSpreadNode):
                # The count is linear in the multiplier: one walk per fragment however often it is spread.
                name = node.name.value
                if name not in self._per_fragment:
                    self._per_fragment[name] = 0  # cycles are refused by validation, which ran before
                    fragment = self.fragments.get(name)
                    self._per_fragment[name] = self.count(fragment.selection_set if fragment else None, 1)
                total += multiplier * self._per_fragment[name]
        return total


def _has_nul(value: Any) -> bool:
    # Walked without recursion: variables nested a few hundred levels deep (even unused ones) raised RecursionError.
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return True
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


class _NulLiteral(Visitor):
    found = False

    def enter_string_value(self, node: StringValueNode, *_: Any) -> None:
        if "\x00" in node.value:
            self.found = True


def operation_refusal(
    limits: ApiLimits, document: DocumentNode, operation_name: str | None, variables: dict[str, Any]
) -> GraphQLError | None:
    """The error refusing an operation before it executes, or None: NUL characters in string arguments, and the node
    limit. Both need the variables' values, which validation rules never see."""
    operation = get_operation_ast(document, operation_name)
    if operation is None:
        return None  # graphql-core reports the missing or ambiguous operation itself
    finder = _NulLiteral()
    visit(document, finder)
    if finder.found or _has_nul(variables):
        message = "String arguments must not contain the NUL character (U+0000); no stored value can hold it."
        return GraphQLError(message, operation, extensions={"code": BAD_USER_INPUT})
    fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
    counter = _NodeCounter(limits, fragments, operation)
    counter.variables.update(variables)
    nodes = counter.count(operation.selection_set, 1)
    given = counter.representations
    if len(given) > limits.max_entities:
        message = (
            f"_entities is given {len(given)} representations; the limit is {limits.max_entities} "
            "(RAS_MAX_ENTITY_REPRESENTATIONS). Fetch them in smaller groups."
        )
        return _limit_error(message, limits.max_entities, operation)
    if nodes > limits.max_nodes:
        message = (
            f"Query may return {nodes} list items (each connection's `first` multiplied through its nesting); "
            f"the limit is {limits.max_nodes}. Ask for smaller pages."
        )
        return _limit_error(message, limits.max_nodes, operation)
    for index, representation in enumerate(given):
        problem = entities.problem(index, representation)
        if problem is not None:
            return GraphQLError(problem, operation, extensions={"code": BAD_USER_INPUT})
    return None
