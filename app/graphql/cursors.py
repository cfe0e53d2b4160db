"""Opaque pagination cursors: base64url of a kind-tagged position, so a cursor of one list is rejected by another.

Callers must treat cursors as opaque; they are stable across requests (a position, not an offset), so a page read
after new batches arrived continues where the previous one ended.
"""

from __future__ import annotations

import base64
import binascii
from datetime import datetime

from app.errors import BadUserInput
from db.reads import BatchCursor

_BATCH = "batch:"
_ESSAY = "essay:"


def _encode(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _decode(cursor: str, kind: str) -> str:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        text = ""
    # A decoded NUL goes nowhere but into a SQL parameter PostgreSQL refuses (no stored id can hold one).
    if not text.startswith(kind) or "\x00" in text:
        raise BadUserInput(f"Invalid cursor {cursor!r}: pass an endCursor or edge cursor from this list.")
    return text[len(kind) :]


def batch_cursor(created_at: datetime, batch_id: str) -> str:
    return _encode(f"{_BATCH}{created_at.isoformat()}|{batch_id}")


def parse_batch_cursor(cursor: str) -> BatchCursor:
    created_at, _, batch_id = _decode(cursor, _BATCH).partition("|")
    try:
        instant = datetime.fromisoformat(created_at)
    except ValueError:
        raise BadUserInput(f"Invalid cursor {cursor!r}: pass an endCursor or edge cursor from this list.") from None
    return BatchCursor(instant, batch_id)


def essay_cursor(essay_id: str) -> str:
    return _encode(_ESSAY + essay_id)


def parse_essay_cursor(cursor: str) -> str:
    return _decode(cursor, _ESSAY)
