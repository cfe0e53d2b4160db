"""Service-to-service authentication, the same for GraphQL and the REST routes (REST.md §9).

A caller sends `X-Internal-API-Key` (the shared secret) and `X-Service-ID` (a service on the allow-list). The API
gateway also sends `X-User-ID` for requests made on behalf of a teacher; every read is then limited to that user's
batches (see docs/graphql.md, "Scoping").
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass

from infra.settings import Settings

API_KEY_HEADER = "X-Internal-API-Key"
SERVICE_HEADER = "X-Service-ID"
USER_HEADER = "X-User-ID"

MISSING = "Missing authentication"
INVALID = "Invalid credentials"
EMPTY_USER = "Empty X-User-ID"


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is asking: the calling service, and the end user it acts for (None: the service itself)."""

    service_id: str
    user_id: str | None


@dataclass(frozen=True, slots=True)
class AuthError:
    """Why a request was refused; `reason` is one of MISSING, INVALID, EMPTY_USER (REST returns it verbatim)."""

    reason: str

    @property
    def hint(self) -> str:
        if self.reason == MISSING:
            return f"{MISSING}: send the {API_KEY_HEADER} and {SERVICE_HEADER} headers."
        if self.reason == EMPTY_USER:
            return f"{USER_HEADER} is present but empty; omit it or send the user's id."
        return f"{INVALID}: the API key or the service id is not accepted."


def authenticate(headers: Mapping[str, str], settings: Settings) -> Caller | AuthError:
    """Check a request's headers (a case-insensitive mapping such as Starlette's `Headers`)."""
    key = headers.get(API_KEY_HEADER)
    service_id = headers.get(SERVICE_HEADER)
    if not key or not service_id:
        return AuthError(MISSING)
    expected = settings.internal_api_key.get_secret_value().encode()
    # Both checks always run, and the key comparison takes the same time wherever the first difference is.
    key_ok = hmac.compare_digest(key.encode(), expected)
    service_ok = service_id in settings.allowed_service_ids
    if not (key_ok and service_ok):
        return AuthError(INVALID)
    user_id = headers.get(USER_HEADER)
    if user_id is not None and not user_id.strip():
        # An empty value must not silently widen the scope to every user's batches.
        return AuthError(EMPTY_USER)
    return Caller(service_id, user_id.strip() if user_id is not None else None)
