"""RAS composes into a supergraph: Apollo's composition library (npm `@apollo/composition`, what `rover supergraph
compose` and GraphOS run) composes the SDL RAS serves at `_service { sdl }` with a small second subgraph that adds
a field to Batch and refers to Essay, and reports no error; the supergraph has RAS resolving both entities by id.

Needs node and npm reaching its registry (skipped otherwise); the library is installed at a pinned version, so a new
release's rules cannot fail an unchanged service.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from tests.app.graphql.conftest import Api
from tests.helpers.npm import installed

COMPOSE_SCRIPT = Path(__file__).with_name("compose_supergraph.cjs")
PACKAGES = ("@apollo/composition@2.14.4", "graphql@16.11.0")
# Guards against a hang only, never a measure of speed.
COMPOSE_GUARD_SECONDS = 120

NOTES_SUBGRAPH = """
extend schema @link(url: "https://specs.apollo.dev/federation/v2.0", import: ["@key"])

type Batch @key(fields: "id") {
  id: ID!
  teacherNotes: [String!]!
}

type Essay @key(fields: "id", resolvable: false) {
  id: ID!
}

type Note {
  text: String!
  essay: Essay
}

type Query {
  notedBatches: [Batch!]!
  notes(batchId: ID!): [Note!]!
}
"""


@pytest.fixture(scope="session")
def composition(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    return installed(tmp_path_factory, "apollo-composition", PACKAGES)


async def _compose(node: str, prefix: Path, subgraphs: list[dict[str, str]]) -> dict[str, Any]:
    process = await asyncio.create_subprocess_exec(
        node,
        str(COMPOSE_SCRIPT),
        str(prefix),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(COMPOSE_GUARD_SECONDS):
        out, err = await process.communicate(json.dumps(subgraphs).encode())
    assert process.returncode == 0, err.decode()
    outcome: dict[str, Any] = json.loads(out)
    return outcome


async def test_ras_composes_with_a_subgraph_extending_batch(composition: tuple[str, Path], api: Api) -> None:
    node, prefix = composition
    sdl = (await api.data("{ _service { sdl } }"))["_service"]["sdl"]
    outcome = await _compose(
        node,
        prefix,
        [
            {"name": "ras", "url": "http://ras:4003/graphql", "sdl": sdl},
            {"name": "notes", "url": "http://notes:4001/graphql", "sdl": NOTES_SUBGRAPH},
        ],
    )
    print("composition hints:", *outcome["hints"], sep="\n  ")
    assert outcome["errors"] == []
    supergraph = outcome["supergraph"]
    assert 'type Batch\n  @join__type(graph: NOTES, key: "id")\n  @join__type(graph: RAS, key: "id")' in supergraph
    assert '@join__type(graph: RAS, key: "id")' in supergraph.split("type Essay", 1)[1].split("{", 1)[0]
    assert "teacherNotes: [String!]! @join__field(graph: NOTES)" in supergraph
