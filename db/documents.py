"""Persisted GraphQL documents in PostgreSQL, by the SHA-256 of their text (lowercase hex): Apollo APQ
registrations the API writes, and trusted documents `ras documents add` writes. The API keeps them in Redis too
(app/graphql/persisted.py); this table is where every one of them lasts."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection


@dataclass(frozen=True, slots=True)
class StoredDocument:
    sha256: str
    body: str
    trusted: bool
    name: str | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class NewDocument:
    sha256: str
    body: str
    name: str | None = None


async def find(conn: AsyncConnection, sha256: str) -> StoredDocument | None:
    found = await conn.execute(
        text("SELECT sha256, body, trusted, name, created_at FROM persisted_documents WHERE sha256 = :sha256"),
        {"sha256": sha256},
    )
    row = found.one_or_none()
    return None if row is None else StoredDocument(*row)


async def register(conn: AsyncConnection, document: NewDocument) -> None:
    """An APQ registration: kept unless the document is there already (trusted or not, it stays as it is)."""
    await conn.execute(
        text("INSERT INTO persisted_documents (sha256, body) VALUES (:sha256, :body) ON CONFLICT (sha256) DO NOTHING"),
        {"sha256": document.sha256, "body": document.body},
    )


async def add_trusted(conn: AsyncConnection, documents: Sequence[NewDocument]) -> int:
    """Trusts `documents` (an APQ registration of one becomes trusted; a name given replaces the stored one);
    returns how many were not trusted before."""
    before = await conn.scalar(
        text("SELECT count(*) FROM persisted_documents WHERE trusted AND sha256 = ANY(:ids)"),
        {"ids": [d.sha256 for d in documents]},
    )
    for document in documents:
        await conn.execute(
            text(
                "INSERT INTO persisted_documents (sha256, body, trusted, name) VALUES (:sha256, :body, true, :name) "
                "ON CONFLICT (sha256) DO UPDATE "
                "SET trusted = true, name = coalesce(excluded.name, persisted_documents.name)"
            ),
            {"sha256": document.sha256, "body": document.body, "name": document.name},
        )
    return len({d.sha256 for d in documents}) - int(before or 0)


async def listing(conn: AsyncConnection) -> list[StoredDocument]:
    rows = await conn.execute(
        text("SELECT sha256, body, trusted, name, created_at FROM persisted_documents ORDER BY created_at, sha256")
    )
    return [StoredDocument(*row) for row in rows]
