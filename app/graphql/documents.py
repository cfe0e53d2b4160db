"""Parsed query documents kept by query text, so a text clients send again is not parsed again.

Strawberry's own ParserCache parses inside its hook, where a syntax error escapes the parse-error handling (and
ParseLimits' messages for the length and token limits). This extension only hands Strawberry a document it parsed
before for the same text; Strawberry parses everything else itself, and documents that parsed are kept.
Validation is cached by Strawberry's ValidationCache, keyed on the (then identical) document.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator

from graphql import DocumentNode
from strawberry.extensions import SchemaExtension


class Documents:
    """The most recently used `size` documents by query text, shared by the operations of one schema."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._documents: OrderedDict[str, DocumentNode] = OrderedDict()

    def get(self, query: str) -> DocumentNode | None:
        document = self._documents.get(query)
        if document is not None:
            self._documents.move_to_end(query)
        return document

    def put(self, query: str, document: DocumentNode) -> None:
        self._documents[query] = document
        self._documents.move_to_end(query)
        while len(self._documents) > self.size:
            self._documents.popitem(last=False)


class DocumentCache(SchemaExtension):
    def __init__(self, documents: Documents) -> None:
        self.documents = documents

    def on_parse(self) -> Iterator[None]:
        context = self.execution_context
        query = context.query
        if query is not None and context.graphql_document is None:
            context.graphql_document = self.documents.get(query)
        yield
        if query is not None and context.graphql_document is not None and not context.pre_execution_errors:
            self.documents.put(query, context.graphql_document)
