"""The operation a request asks for, read from a POSTed JSON body or a GET's query parameters, and every shape of
request this endpoint refuses before anything is parsed as GraphQL (a `Refusal`, answered with the documented error
JSON): a body that is not JSON, not UTF-8 or not an object, parameters of the wrong type, variables nested deeper
than `MAX_VARIABLES_DEPTH`, and a query text above the length or token limit.

The text limits are checked here, before the cache key (which parses the text) and before Strawberry: a query of
60 KB parsed for its key cost a second of CPU before the limits refused it. Length is compared first, in constant
time; tokens are counted by the lexer, which stops one past the limit.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from app.errors import BAD_USER_INPUT, LIMIT_EXCEEDED
from app.graphql.limits import lexical_tokens

MAX_VARIABLES_DEPTH = 32
"""Nesting of `variables` (objects and lists in each other): the schema's deepest input is 2 levels. Deeper values
reached recursive code that failed with RecursionError (an INTERNAL error), even when no variable used them."""


@dataclass(frozen=True, slots=True)
class Operation:
    query: str
    name: str | None
    variables: dict[str, Any] | None
    extensions: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class Refusal:
    """A request refused before GraphQL parsing. `status` is the HTTP status under `application/json`: 400 for a
    malformed request (an error body without `data`), 200 for a GraphQL-level refusal (`"data": null` beside the
    error, as the limits were always answered)."""

    message: str
    code: str = BAD_USER_INPUT
    status: int = 400
    extensions: Mapping[str, Any] = field(default_factory=dict)


def _malformed(message: str) -> Refusal:
    return Refusal(message)


NO_QUERY = _malformed("No GraphQL query found in the request")
UNSUPPORTED_CONTENT_TYPE = _malformed("Unsupported content type: POST a JSON body with Content-Type: application/json.")


def posted(body: bytes) -> Operation | Refusal:
    """The operation of a POSTed JSON body."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        return _malformed(f"Unable to parse request body as JSON (UTF-8): {exc}.")
    if isinstance(data, list):
        return _malformed("Batching is not enabled")
    if not isinstance(data, dict):
        return _malformed(f"The request body must be a JSON object holding `query`; got {_kind(data)}.")
    return _operation(data)


def got(params: Mapping[str, str]) -> Operation | Refusal:
    """The operation of a GET's query parameters (`variables` and `extensions` are JSON text)."""
    data: dict[str, Any] = {"query": params.get("query"), "operationName": params.get("operationName")}
    for name in ("variables", "extensions"):
        text = params.get(name)
        if not text:
            continue
        try:
            data[name] = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            return _malformed(f"The `{name}` parameter is not JSON: {exc}.")
    return _operation(data)


def _operation(data: dict[str, Any]) -> Operation | Refusal:
    query, name = data.get("query"), data.get("operationName")
    variables, extensions = data.get("variables"), data.get("extensions")
    for parameter, value, wanted in (
        ("query", query, "a string"),
        ("operationName", name, "a string"),
        ("variables", variables, "an object"),
        ("extensions", extensions, "an object"),
    ):
        if value is not None and not isinstance(value, str if wanted == "a string" else dict):
            return _malformed(f"The GraphQL operation's `{parameter}` must be {wanted} or null, if provided.")
    depth = _depth(variables)
    if depth > MAX_VARIABLES_DEPTH:
        return _malformed(f"`variables` are nested {depth} levels deep; the limit is {MAX_VARIABLES_DEPTH}.")
    if query is None:
        return NO_QUERY
    return Operation(query, name, variables, extensions)


def _kind(value: object) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string"}.get(type(value), "another value")


def _depth(value: object) -> int:
    """How deep objects and lists nest in `value`, walked without recursion (stopping one past the limit)."""
    deepest = 0
    stack = [(value, 0)]
    while stack:
        item, level = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        deepest = max(deepest, level + 1)
        if deepest > MAX_VARIABLES_DEPTH:
            break
        stack.extend((child, level + 1) for child in children)
    return deepest


def text_refusal(query: str, max_length: int, max_tokens: int) -> Refusal | None:
    """LIMIT_EXCEEDED for a query text above the length or token limit (messages as app/graphql/limits.py's parser
    limits give them), else None."""
    if len(query) > max_length:
        return Refusal(
            f"Query is {len(query)} characters long; the limit is {max_length}.",
            LIMIT_EXCEEDED,
            200,
            {"limit": max_length},
        )
    if lexical_tokens(query, max_tokens) > max_tokens:
        message = f"Query has more than {max_tokens} tokens, the limit."
        return Refusal(message, LIMIT_EXCEEDED, 200, {"limit": max_tokens})
    return None
