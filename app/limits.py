"""Limits that keep one request from costing the service too much, each refused with a LIMIT_EXCEEDED error.

* query length and lexical tokens: enforced by the parser itself, so an oversized document is never fully parsed;
* depth: fields nested in fields, introspection fields not counted (GraphiQL's schema query is deep);
* aliases: every aliased field, counted as executed (a fragment spread twice counts twice);
* page sizes: `first` of each connection, checked by the resolvers against the values here.

Introspection and GraphiQL are switches too (on in development). The values come from settings (`limits_from`);
the request body size (RAS_MAX_REQUEST_BYTES) is enforced by the endpoint.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, cast

from graphql import (
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLSyntaxError,
    InlineFragmentNode,
    Lexer,
    OperationDefinitionNode,
    SelectionSetNode,
    Source,
    TokenKind,
    ValidationContext,
    ValidationRule,
)
from strawberry.extensions import SchemaExtension

from app.errors import FORBIDDEN, LIMIT_EXCEEDED, BadUserInput, LimitExceeded
from ras.settings import Settings

DEFAULT_BATCHES_PAGE = 20


@dataclass(frozen=True, slots=True)
class ApiLimits:
    """The API's limits and switches; `limits_from` reads them from settings, tests build them directly."""

    max_depth: int = 12
    max_tokens: int = 2_000
    max_aliases: int = 30
    max_query_length: int = 20_000
    max_request_bytes: int = 65_536
    batches_page_default: int = DEFAULT_BATCHES_PAGE
    batches_page_max: int = 100
    essays_page_default: int = 100
    essays_page_max: int = 1_000
    introspection: bool = True
    graphiql: bool = True


def limits_from(settings: Settings) -> ApiLimits:
    return ApiLimits(
        max_depth=settings.max_query_depth,
        max_tokens=settings.max_query_tokens,
        max_aliases=settings.max_query_aliases,
        max_query_length=settings.max_query_length,
        max_request_bytes=settings.max_request_bytes,
        batches_page_max=settings.max_page_size,
        essays_page_max=settings.max_essays_page_size,
        essays_page_default=min(100, settings.max_essays_page_size),
        batches_page_default=min(DEFAULT_BATCHES_PAGE, settings.max_page_size),
        introspection=settings.introspection,
        graphiql=settings.graphiql,
    )


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
    def enter_field(self, node: FieldNode, *_: Any) -> None:
        if node.name.value in ("__schema", "__type"):
            message = "Introspection is disabled on this server (RAS_INTROSPECTION_ENABLED)."
            self.report_error(GraphQLError(message, node, extensions={"code": FORBIDDEN}))


def _lexical_tokens(query: str, stop_after: int) -> int:
    """Tokens in `query` (comments not counted), counting no further than `stop_after` + 1."""
    lexer = Lexer(Source(query))
    count = 0
    try:
        while count <= stop_after and lexer.advance().kind != TokenKind.EOF:
            count += 1
    except GraphQLSyntaxError:
        pass
    return count


class ParseLimits(SchemaExtension):
    """Has the parser stop at the length and token limits, and marks its refusal as LIMIT_EXCEEDED."""

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
            elif _lexical_tokens(query, self.limits.max_tokens) > self.limits.max_tokens:
                error.message = f"Query has more than {self.limits.max_tokens} tokens, the limit."
                error.extensions = {"code": LIMIT_EXCEEDED, "limit": self.limits.max_tokens}


def check_page_size(first: int, maximum: int, what: str) -> None:
    """Refuses a `first` argument outside 0..maximum."""
    if first < 0:
        raise BadUserInput(f"`first` must not be negative; got {first}.")
    if first > maximum:
        raise LimitExceeded(f"`first` is {first}, above the limit of {maximum} {what} per page.", limit=maximum)
