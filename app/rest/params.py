"""Validation of the REST shim's path and query parameters. Pure: values in, a value or a message out.

The original read `limit`/`offset` with a fallback to the default on anything unparsable and passed `status`
unchecked into SQL; the shim refuses what it cannot honour instead (400 with a message saying what is accepted),
since a silently ignored filter hands a caller the wrong list. An empty value counts as absent, as the original's
`if status:` treated it, so URL builders that always write every parameter keep working.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

from app.reads.status import BATCH_STATUSES

DEFAULT_LIMIT = 20
MAX_LIMIT = 100
MAX_OFFSET = 2_147_483_647
"""PostgreSQL's OFFSET is a bigint; anything near it is nonsense for a list of one user's batches."""
MAX_ID_LENGTH = 256
"""Longest batch or user id accepted in a path: ids are UUIDs or short tokens; a longer one cannot exist."""

_INTEGER = re.compile(r"[+-]?[0-9]{1,19}")


@dataclass(frozen=True, slots=True)
class ListParams:
    limit: int
    offset: int
    status: str | None

    def canonical(self) -> list[tuple[str, str]]:
        """The parameters as they shape the answer, defaults filled in: `?limit=20` and no limit are one request."""
        return [("limit", str(self.limit)), ("offset", str(self.offset)), ("status", self.status or "")]


@dataclass(frozen=True, slots=True)
class InvalidParameter:
    message: str


def _single(name: str, values: Sequence[str]) -> str | InvalidParameter | None:
    given = [v for v in values if v != ""]
    if len(given) > 1:
        return InvalidParameter(f"{name} must be given at most once")
    return given[0] if given else None


def _integer(name: str, values: Sequence[str], default: int, low: int, high: int, rule: str) -> int | InvalidParameter:
    value = _single(name, values)
    if value is None:
        return default
    if isinstance(value, InvalidParameter):
        return value
    if not _INTEGER.fullmatch(value):
        return InvalidParameter(f"{name} must be an integer; got {value[:40]!r}")
    number = int(value)
    return number if low <= number <= high else InvalidParameter(f"{name} must be {rule}")


def list_params(query: dict[str, list[str]]) -> ListParams | InvalidParameter:
    """`limit` (default 20, 1–100), `offset` (default 0, ≥ 0) and `status` (an internal BatchStatus value).

    `query` maps each parameter name to all its values; parameters with other names are ignored, as before.
    """
    limit = _integer("limit", query.get("limit", []), DEFAULT_LIMIT, 1, MAX_LIMIT, f"between 1 and {MAX_LIMIT}")
    if isinstance(limit, InvalidParameter):
        return limit
    offset = _integer("offset", query.get("offset", []), 0, 0, MAX_OFFSET, f"between 0 and {MAX_OFFSET}")
    if isinstance(offset, InvalidParameter):
        return offset
    status = _single("status", query.get("status", []))
    if isinstance(status, InvalidParameter):
        return status
    if status is not None and status not in BATCH_STATUSES:
        return InvalidParameter(
            f"status must be one of the internal BatchStatus values ({', '.join(BATCH_STATUSES)}); got {status[:60]!r}"
        )
    return ListParams(limit, offset, status)


def valid_id(value: str) -> bool:
    """A path id the read model could hold: non-blank, at most MAX_ID_LENGTH characters, no control characters."""
    return bool(value.strip()) and len(value) <= MAX_ID_LENGTH and value.isprintable()


def utf8_path(raw_path: bytes | None) -> bool:
    """Whether a request's path, percent-decoded, is UTF-8. The server decodes it for routing with replacement
    characters, so `%FF` and `%FE` would both read as the id U+FFFD; ids are UTF-8 text, so such a path names
    none and is refused instead. (`raw_path` is the path as sent; a test client may append the query.)"""
    if raw_path is None:
        return True
    try:
        unquote_to_bytes(raw_path.partition(b"?")[0]).decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
