"""The operation a request asks for, read from a POSTed JSON body or a GET's query parameters, and every shape of
request this endpoint refuses before anything is parsed as GraphQL (a `Refusal`, answered with the documented error
JSON): a body that is not JSON, not UTF-8 or not an object, parameters of the wrong type, variables nested deeper
than `MAX_VARIABLES_DEPTH`, a persisted document's id of the wrong form or not the SHA-256 of the text sent with
it, and a query text above the length or token limit.

A request may name a persisted document by the SHA-256 of its text (app/graphql/persisted.py), in Apollo's APQ form
(`extensions.persistedQuery = {"version": 1, "sha256Hash": "<hex>"}`) or GraphQL over HTTP's
(`documentId: "sha256:<hex>"`), with or without the text itself.

The text limits are checked here, before the cache key (which parses the text) and before Strawberry: a query of
60 KB parsed for its key cost a second of CPU before the limits refused it. Length is compared first, in constant
time; tokens are counted by the lexer, which stops one past the limit.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from app.errors import BAD_USER_INPUT, LIMIT_EXCEEDED
from app.graphql.limits import lexical_tokens

MAX_VARIABLES_DEPTH = 32
"""Nesting of `variables` (objects and lists in each other): the schema's deepest input is 2 levels. Deeper values
reached recursive code that failed with RecursionError (an INTERNAL error), even when no variable used them."""


_SHA256 = re.compile(r"[0-9a-fA-F]{64}")


@dataclass(frozen=True, slots=True)
class Operation:
    """`query` is None when the request names its document by `document_id` only (the SHA-256 of its text, lowercase
    hex); when both are there, the id is the text's."""

    query: str | None
    name: str | None
    variables: dict[str, Any] | None
    extensions: dict[str, Any] | None
    document_id: str | None = None


def sha256_of(query: str) -> str:
    """A document's id: the SHA-256 of its text as the client sends it (UTF-8), as APQ and manifests compute it."""
    return hashlib.sha256(query.encode()).hexdigest()


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
HASH_MISMATCH = _malformed("provided sha does not match query")  # Apollo's words: its clients know them
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
    data: dict[str, Any] = {name: params.get(name) for name in ("query", "operationName", "documentId")}
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
    document_id = _document_id(data.get("documentId"), (extensions or {}).get("persistedQuery"))
    if isinstance(document_id, Refusal):
        return document_id
    if query is None and document_id is None:
        return NO_QUERY
    if query is not None and document_id is not None and sha256_of(query) != document_id:
        return HASH_MISMATCH
    return Operation(query, name, variables, extensions, document_id)


def _document_id(document_id: object, persisted_query: object) -> str | Refusal | None:
    """The SHA-256 a request names its document by, if it does, in either form (the same one when both are given)."""
    named: set[str] = set()
    if document_id is not None:
        text = document_id if isinstance(document_id, str) else ""
        if not (text.startswith("sha256:") and _SHA256.fullmatch(text[7:])):
            return _malformed('`documentId` must be "sha256:" and the 64 hex digits of the document\'s SHA-256.')
        named.add(text[7:].lower())
    if persisted_query is not None:
        wanted = '`extensions.persistedQuery` must be {"version": 1, "sha256Hash": "<the 64 hex digits of a SHA-256>"}.'
        if not isinstance(persisted_query, dict) or persisted_query.get("version") != 1:
            return _malformed(wanted)
        digest = persisted_query.get("sha256Hash")
        if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
            return _malformed(wanted)
        named.add(digest.lower())
    if len(named) > 1:
        return _malformed("`documentId` and `extensions.persistedQuery` name different documents.")
    return named.pop() if named else None


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
