"""`ras documents add` and `ras documents list`, the real command against a migrated database: .graphql files and
JSON manifests (Apollo's format, Relay's map) become trusted documents; a manifest whose id is not its document's
SHA-256, or a document that would not run on this service, adds nothing and says why in one line each."""

from __future__ import annotations

import hashlib
from pathlib import Path

import orjson
from sqlalchemy.ext.asyncio import AsyncEngine

from db import documents
from tests.ras.test_cli_errors import clean_env, ras

BATCH = "query Batch($id: ID!) { batch(id: $id) { id status } }\n"
BATCHES = "query Batches { batches(first: 5) { totalCount } }"
ESSAY = 'query Essay { essay(id: "e1") { id } }'


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


async def _stored(engine: AsyncEngine) -> dict[str, documents.StoredDocument]:
    async with engine.connect() as conn:
        return {row.sha256: row for row in await documents.listing(conn)}


async def test_graphql_files_and_both_manifest_formats_are_trusted(
    database_url: str, engine: AsyncEngine, tmp_path: Path
) -> None:
    (tmp_path / "batch.graphql").write_text(BATCH)
    apollo = {
        "format": "apollo-persisted-query-manifest",
        "version": 1,
        "operations": [{"id": sha256(BATCHES), "name": "Batches", "type": "query", "body": BATCHES}],
    }
    (tmp_path / "apollo.json").write_bytes(orjson.dumps(apollo))
    (tmp_path / "relay.json").write_bytes(orjson.dumps({f"sha256:{sha256(ESSAY)}": ESSAY}))
    env = clean_env(RAS_DATABASE_URL=database_url)
    files = [str(tmp_path / name) for name in ("batch.graphql", "apollo.json", "relay.json")]
    added = ras("documents", "add", *files, env=env)
    assert added.returncode == 0, added.stderr
    assert added.stdout.splitlines()[-1] == "3 document(s) newly trusted, 0 already were"
    stored = await _stored(engine)
    assert {key: (row.body, row.trusted, row.name) for key, row in stored.items()} == {
        sha256(BATCH): (BATCH, True, None),
        sha256(BATCHES): (BATCHES, True, "Batches"),
        sha256(ESSAY): (ESSAY, True, None),
    }
    again = ras("documents", "add", files[0], env=env)
    assert again.stdout.splitlines()[-1] == "0 document(s) newly trusted, 1 already were"
    listed = ras("documents", "list", env=env)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert len(lines) == 3
    assert any(line.startswith(f"sha256:{sha256(BATCHES)} trusted ") and line.endswith(" Batches") for line in lines)


async def test_a_hash_that_does_not_match_its_document_adds_nothing(
    database_url: str, engine: AsyncEngine, tmp_path: Path
) -> None:
    (tmp_path / "batch.graphql").write_text(BATCH)
    wrong = sha256(BATCHES + " ")
    md5 = hashlib.md5(ESSAY.encode()).hexdigest()  # noqa: S324 (Relay's default id, refused)
    (tmp_path / "relay.json").write_bytes(orjson.dumps({wrong: BATCHES, md5: ESSAY}))
    result = ras(
        "documents",
        "add",
        str(tmp_path / "batch.graphql"),
        str(tmp_path / "relay.json"),
        env=clean_env(RAS_DATABASE_URL=database_url),
    )
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.startswith("ras: ")]
    assert lines == [
        f"ras: {tmp_path / 'relay.json'}: {wrong}: the id does not match the document (its SHA-256 is "
        f"{sha256(BATCHES)})",
        f"ras: {tmp_path / 'relay.json'}: {md5}: the id is not a SHA-256 (64 hex digits, `sha256:` allowed)",
        "ras: nothing added: 2 problem(s)",
    ]
    assert await _stored(engine) == {}


async def test_a_document_that_would_not_run_adds_nothing(
    database_url: str, engine: AsyncEngine, tmp_path: Path
) -> None:
    (tmp_path / "good.graphql").write_text(BATCH)
    (tmp_path / "bad.graphql").write_text("{ batchs { totalCount } }")
    deep = '{ batch(id: "x") { ' + "essays { nodes { batch { " * 5 + "id" + " } } }" * 5 + " } }"
    (tmp_path / "deep.graphql").write_text(deep)
    env = clean_env(RAS_DATABASE_URL=database_url, RAS_MAX_QUERY_DEPTH="6")
    result = ras(
        "documents", "add", *(str(tmp_path / n) for n in ("good.graphql", "bad.graphql", "deep.graphql")), env=env
    )
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.startswith("ras: ")]
    assert lines[0].startswith(f"ras: {tmp_path / 'bad.graphql'}: Cannot query field 'batchs' on type 'Query'.")
    assert lines[1].startswith(f"ras: {tmp_path / 'deep.graphql'}: Query depth 17 of anonymous operation exceeds")
    assert lines[-1] == "ras: nothing added: 2 problem(s)"
    assert await _stored(engine) == {}
