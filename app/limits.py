"""Limits that keep one request from costing the service too much, each refused with a LIMIT_EXCEEDED error.

* query length and lexical tokens: enforced by the parser itself, so an oversized document is never fully parsed;
* depth: fields nested in fields, introspection fields not counted (GraphiQL's schema query is deep);
* aliases: every aliased field, counted as executed (a fragment spread twice counts twice);
* page sizes: `first` of each connection, checked by the resolvers against the values here;
* nodes: the list items a query may ask for, each connection's `first` multiplied through its nesting and summed
  over aliases and fragment spreads (`batches(first: 100) { essays(first: 1000) }` is 100,100). Page sizes alone
  bound one list, not thirty aliased copies of it nested in each other; this is checked before execution, with the
  variables' values, so a refused query reads nothing;
* entities: the representations a federation gateway passes to `_entities` (RAS_MAX_ENTITY_REPRESENTATIONS), checked
  with the nodes; each is a list item too, so connections nested under `_entities` multiply by their number.

String arguments holding U+0000 are refused too: PostgreSQL text cannot store it, so no id can match, and the
database would answer such a parameter with an error rather than with "nothing found".

Introspection and GraphiQL are switches too (on in development), and so is the executor (RAS_GRAPHQL_EXECUTOR). The
values come from settings (`limits_from`); the request body size (RAS_MAX_REQUEST_BYTES) is enforced by the endpoint,
a GraphQL document's limits by app/graphql/limits.py, page sizes by `check_page_size` here (GraphQL and REST alike).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from app.errors import BadUserInput, LimitExceeded
from infra.settings import Settings

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
    max_nodes: int = 150_000
    max_entities: int = 1_000
    introspection: bool = True
    graphiql: bool = True
    # app/graphql/execution.py's fast path (checked at start-up, see app/graphql/schema.py), or Strawberry's stock
    # executor.
    executor: Literal["fast", "stock"] = "fast"


def limits_from(settings: Settings) -> ApiLimits:
    return ApiLimits(
        max_depth=settings.max_query_depth,
        max_tokens=settings.max_query_tokens,
        max_aliases=settings.max_query_aliases,
        max_query_length=settings.max_query_length,
        max_request_bytes=settings.max_request_bytes,
        batches_page_max=settings.max_page_size,
        essays_page_max=settings.max_essays_page_size,
        max_nodes=settings.max_query_nodes,
        max_entities=settings.max_entity_representations,
        essays_page_default=min(100, settings.max_essays_page_size),
        batches_page_default=min(DEFAULT_BATCHES_PAGE, settings.max_page_size),
        introspection=settings.introspection,
        graphiql=settings.graphiql,
        executor=settings.graphql_executor,
    )


def check_page_size(first: int, maximum: int, what: str) -> None:
    """Refuses a `first` argument outside 0..maximum."""
    if first < 0:
        raise BadUserInput(f"`first` must not be negative; got {first}.")
    if first > maximum:
        raise LimitExceeded(f"`first` is {first}, above the limit of {maximum} {what} per page.", limit=maximum)
