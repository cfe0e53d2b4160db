"""Service-to-service authentication, the same for GraphQL and the REST routes (REST.md §9).

A caller sends `X-Internal-API-Key` (the shared secret) and `X-Service-ID` (a service on the allow-list). The API
gateway also sends `X-User-ID` for requests made on behalf of a teacher; every read is then limited to that user's
batches (see docs/graphql.md, "Scoping").

Values are taken exactly as sent, and each of the three headers at most once. A gateway that appends its
`X-User-ID` to the one a client sent, instead of replacing it, must not let the client's value win (the first one
was used before), and `teacher-01\\xa0` must not read as `teacher-01` (`.strip()` removed Unicode spaces): a repeated
credential header, or a user id outside USER_ID_CHARACTERS, is refused with 400 naming the header.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from infra.settings import Settings

API_KEY_HEADER = "X-Internal-API-Key"
SERVICE_HEADER = "X-Service-ID"
USER_HEADER = "X-User-ID"
CREDENTIAL_HEADERS = (API_KEY_HEADER, SERVICE_HEADER, USER_HEADER)

MISSING = "Missing authentication"
INVALID = "Invalid credentials"
EMPTY_USER = "Empty X-User-ID"
BAD_HEADER = "Invalid header"

USER_ID_MAX_LENGTH = 256
USER_ID_CHARACTERS = "visible ASCII (! to ~) except the comma, no spaces"
# Visible ASCII without the comma: no whitespace of any kind, and nothing a proxy's folding of repeated headers into
# one comma-separated line could produce.
_USER_ID = re.compile(rf"[\x21-\x2b\x2d-\x7e]{{1,{USER_ID_MAX_LENGTH}}}")
_BY_LOWER_NAME = {name.lower().encode(): name for name in CREDENTIAL_HEADERS}


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is asking: the calling service, and the end user it acts for (None: the service itself)."""

    service_id: str
    user_id: str | None


@dataclass(frozen=True, slots=True)
class AuthError:
    """Why a request was refused; `reason` is one of MISSING, INVALID, EMPTY_USER (401, REST returns it verbatim)
    or BAD_HEADER (400: `problem` says which header and why)."""

    reason: str
    problem: str = ""

    @property
    def status(self) -> int:
        return 400 if self.reason == BAD_HEADER else 401

    @property
    def hint(self) -> str:
        if self.reason == MISSING:
            return f"{MISSING}: send the {API_KEY_HEADER} and {SERVICE_HEADER} headers."
        if self.reason == EMPTY_USER:
            return f"{USER_HEADER} is present but empty; omit it or send the user's id."
        if self.reason == BAD_HEADER:
            return self.problem
        return f"{INVALID}: the API key or the service id is not accepted."


def repeated(header: str) -> AuthError:
    return AuthError(BAD_HEADER, f"{header} was sent more than once; send it once.")


def credential_headers(raw: Iterable[tuple[bytes, bytes]]) -> dict[str, str] | AuthError:
    """The credential headers of a request's ASGI header list, by their canonical names, or the error for one that
    is repeated."""
    found: dict[str, str] = {}
    for name, value in raw:
        header = _BY_LOWER_NAME.get(name.lower())
        if header is None:
            continue
        if header in found:
            return repeated(header)
        found[header] = value.decode("latin-1")
    return found


def credential_params(params: Mapping[str, object]) -> dict[str, str] | AuthError:
    """The credentials of a WebSocket's `connection_init` payload, under the header names in any case: each at most
    once, and a string."""
    found: dict[str, str] = {}
    for key, value in params.items():
        header = _BY_LOWER_NAME.get(str(key).lower().encode())
        if header is None:
            continue
        if header in found:
            return repeated(header)
        if not isinstance(value, str):
            return AuthError(BAD_HEADER, f"{header} in connection_init must be a string.")
        found[header] = value
    return found


def authenticate(raw: Iterable[tuple[bytes, bytes]], settings: Settings) -> Caller | AuthError:
    """Check a request's headers, given as ASGI's list of (name, value) byte pairs (`scope["headers"]`)."""
    found = credential_headers(raw)
    return found if isinstance(found, AuthError) else check(found, settings)


def check(credentials: Mapping[str, str], settings: Settings) -> Caller | AuthError:
    """Check credentials already gathered by their canonical header names (a WebSocket's come from two places)."""
    key = credentials.get(API_KEY_HEADER)
    service_id = credentials.get(SERVICE_HEADER)
    if not key or not service_id:
        return AuthError(MISSING)
    expected = settings.internal_api_key.get_secret_value().encode()
    # Both checks always run, and the key comparison takes the same time wherever the first difference is.
    key_ok = hmac.compare_digest(key.encode(), expected)
    service_ok = service_id in settings.allowed_service_ids
    if not (key_ok and service_ok):
        return AuthError(INVALID)
    user_id = credentials.get(USER_HEADER)
    if user_id is not None and not user_id.strip():
        # A blank value must not silently widen the scope to every user's batches. (Stripped only to tell "blank"
        # from "malformed": both are refused, and an accepted id is never stripped.)
        return AuthError(EMPTY_USER)
    if user_id is not None and not _USER_ID.fullmatch(user_id):
        problem = f"{USER_HEADER} must be 1 to {USER_ID_MAX_LENGTH} characters of {USER_ID_CHARACTERS}."
        return AuthError(BAD_HEADER, problem)
    return Caller(service_id, user_id)
