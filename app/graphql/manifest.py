"""Trusted documents as operators hand them to `ras documents add`: `.graphql` (or `.gql`) files, each one document
whose text is the file's, or JSON manifests in the common formats:

* Apollo's persisted query manifest (`generate-persisted-query-manifest`):
  `{"format": "apollo-persisted-query-manifest", "version": 1, "operations": [{"id", "name", "type", "body"}]}`;
* Relay's (`relay-compiler` with `persistConfig`), and any flat map: `{"<id>": "<document text>", ...}`.

A document's id is the SHA-256 of its text (hex, `sha256:` prefix allowed): that is what clients send, so a manifest
whose id is another hash (Relay's default MD5, say: configure `"algorithm": "SHA256"`) or does not match its text is
refused, naming the entry. Every document must also parse and validate against this service's schema and limits, so
that what is trusted can run; nothing is added unless every document given is right.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from graphql import GraphQLError, GraphQLSchema, parse, specified_rules, validate

from app.graphql.limits import IntrospectionDisabled, alias_rule, depth_rule
from app.graphql.operation import sha256_of, text_refusal
from app.limits import ApiLimits

APOLLO_FORMAT = "apollo-persisted-query-manifest"
_ID = re.compile(r"(?:sha256:)?([0-9a-fA-F]{64})")


@dataclass(frozen=True, slots=True)
class Document:
    sha256: str
    body: str
    name: str | None
    source: str  # where it came from, for messages: "path" or "path: id"


def read(path: Path) -> tuple[list[Document], list[str]]:
    """The documents of one file and the problems found reading it (one line each)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return [], [f"{path}: cannot be read: {exc}"]
    if path.suffix.lower() != ".json":
        return [Document(sha256_of(text), text, None, str(path))], []
    try:
        manifest = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        return [], [f"{path}: not JSON: {exc}"]
    if isinstance(manifest, dict) and manifest.get("format") == APOLLO_FORMAT:
        return _apollo(path, manifest)
    if isinstance(manifest, dict) and all(isinstance(value, str) for value in manifest.values()):
        return _entries(path, [(key, value, None) for key, value in manifest.items()])
    return [], [f"{path}: neither an Apollo persisted query manifest nor a map of ids to document texts"]


def _apollo(path: Path, manifest: dict[str, Any]) -> tuple[list[Document], list[str]]:
    operations = manifest.get("operations")
    if manifest.get("version") != 1 or not isinstance(operations, list):
        return [], [f'{path}: an Apollo manifest needs "version": 1 and a list of "operations"']
    entries: list[tuple[str, object, str | None]] = []
    for index, operation in enumerate(operations):
        if not isinstance(operation, dict) or not isinstance(operation.get("id"), str):
            return [], [f"{path}: operations[{index}] has no string id"]
        name = operation.get("name")
        entries.append((operation["id"], operation.get("body"), name if isinstance(name, str) else None))
    return _entries(path, entries)


def _entries(path: Path, entries: list[tuple[str, object, str | None]]) -> tuple[list[Document], list[str]]:
    documents, problems = [], []
    for given, body, name in entries:
        source = f"{path}: {given}"
        matched = _ID.fullmatch(given)
        if not isinstance(body, str):
            problems.append(f"{source}: the document text is not a string")
        elif matched is None:
            problems.append(f"{source}: the id is not a SHA-256 (64 hex digits, `sha256:` allowed)")
        elif matched.group(1).lower() != sha256_of(body):
            problems.append(f"{source}: the id does not match the document (its SHA-256 is {sha256_of(body)})")
        else:
            documents.append(Document(matched.group(1).lower(), body, name, source))
    return documents, problems


def problems_running(document: Document, schema: GraphQLSchema, limits: ApiLimits) -> list[str]:
    """Why `document` could not run on this service (empty: it can): the text limits, syntax, and validation (the
    schema's rules and the depth and alias limits)."""
    refusal = text_refusal(document.body, limits.max_query_length, limits.max_tokens)
    if refusal is not None:
        return [f"{document.source}: {refusal.message}"]
    try:
        parsed = parse(document.body)
    except GraphQLError as exc:
        return [f"{document.source}: {exc.message}"]
    rules = [*specified_rules, depth_rule(limits.max_depth), alias_rule(limits.max_aliases)]
    if not limits.introspection:
        rules.append(IntrospectionDisabled)
    return [f"{document.source}: {error.message}" for error in validate(schema, parsed, rules)]
