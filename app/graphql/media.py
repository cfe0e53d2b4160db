"""GraphQL over HTTP's two response media types, chosen by the request's Accept header, and the status codes the
specification sets for `application/graphql-response+json`.

`application/json` is the legacy type and the default (no Accept, `*/*`, `application/*`): every executed or refused
GraphQL request is a 200, as it always was here; only malformed HTTP requests get a 4xx. A client that asks for
`application/graphql-response+json` (explicitly: wildcards never select it, since legacy clients send them) gets the
same bodies under that type, and a response without `data` (the request failed before execution: a parse,
validation or variable error, a limit) is a 4xx or 5xx with no `data` entry. Results that executed are 200, field
errors and a null `data` included.
"""

from __future__ import annotations

import functools
from typing import Final, Literal

from app.errors import DOCUMENT_NOT_TRUSTED, FORBIDDEN, INTERNAL, SERVICE_UNAVAILABLE, UNAUTHENTICATED
from app.graphql.consistency import CONSISTENCY_TIMEOUT

MediaType = Literal["application/json", "application/graphql-response+json"]
JSON: Final = "application/json"
GRAPHQL_RESPONSE: Final = "application/graphql-response+json"

_STATUS_BY_CODE = {
    UNAUTHENTICATED: 401,
    FORBIDDEN: 403,  # introspection when it is off: the request is not permitted
    DOCUMENT_NOT_TRUSTED: 403,  # RAS_DOCUMENTS=trusted and a text that is no trusted document
    INTERNAL: 500,
    SERVICE_UNAVAILABLE: 503,
    CONSISTENCY_TIMEOUT: 504,  # the projection, upstream of every read, did not reach the awaited record in time
}


@functools.lru_cache(maxsize=64)
def negotiated(accept: str) -> MediaType:
    """The response type for an Accept header ("" when absent): `application/graphql-response+json` when the header
    names it with a quality at least that of anything that selects `application/json`, else `application/json`
    (also when nothing acceptable is named: the specification allows answering with the default then)."""
    if not accept or accept == JSON:
        return JSON
    graphql_response = json = 0.0
    for item in accept.split(","):
        kind, _, parameters = item.partition(";")
        kind = kind.strip().lower()
        quality = _quality(parameters)
        if kind == GRAPHQL_RESPONSE:
            graphql_response = max(graphql_response, quality)
        elif kind in (JSON, "application/*", "*/*"):
            json = max(json, quality)
    return GRAPHQL_RESPONSE if graphql_response > 0 and graphql_response >= json else JSON


def _quality(parameters: str) -> float:
    for parameter in parameters.split(";"):
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "q":
            try:
                return min(max(float(value), 0.0), 1.0)
            except ValueError:
                return 0.0
    return 1.0


def request_error_status(code: str) -> int:
    """The status of a `application/graphql-response+json` response without `data`, by its first error's code:
    the specification's 400 for a request that could not be executed, a more precise one where there is one."""
    return _STATUS_BY_CODE.get(code, 400)
