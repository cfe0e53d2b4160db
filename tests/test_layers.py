"""The layers' import rules (tests/layers.py) hold, and the check catches each kind of wrong import."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.layers import ROOT, Import, imports_of, sources, violations


def test_every_import_follows_the_rules() -> None:
    edges = [edge for path in sources() for edge in imports_of(path)]
    assert len(edges) > 300, "the check read the packages' imports"
    assert violations(edges) == []


@pytest.mark.parametrize(
    ("module", "target"),
    [
        ("db.reads", "app.errors.ApiError"),
        ("infra.settings", "consumer.pure.topics.ALL_TOPICS"),
        ("consumer.runner", "app.live.EventHub"),
        ("app.reads.loaders", "consumer.apply.Applied"),
        ("app.reads.context", "app.graphql.limits.ParseLimits"),
        ("app.rest.routes", "app.graphql.schema.build_schema"),
        ("app.graphql.resolvers", "app.rest.shape.batch_status"),
        ("app.cache", "app.reads.session.ReadSession"),
        ("consumer.pure.decode", "sqlalchemy.text"),
        ("consumer.pure.mapping", "consumer.apply.Applied"),
        ("app.main", "devstack.postgres.PostgresProcess"),
        ("consumer.main", "ras.cli.main"),
    ],
)
def test_a_wrong_import_is_refused(module: str, target: str) -> None:
    assert len(violations([Import(module, target, 1)])) == 1


def test_allowed_imports_pass() -> None:
    allowed = [
        Import("app.graphql.resolvers", "app.reads.loaders.Loaders", 1),
        Import("app.rest.routes", "app.cache.QueryCache", 1),
        Import("consumer.runner", "db.positions.load_positions", 1),
        Import("devstack.dev", "app.main.create_app", 1),
        Import("ras.cli", "devstack.dev.run_dev", 1),
        Import("consumer.pure.decode", "pydantic.ValidationError", 1),
    ]
    assert violations(allowed) == []


def test_the_command_fails_on_a_wrong_import() -> None:
    probe = ROOT / "db" / "_layers_probe.py"
    probe.write_text("from app.errors import ApiError\n")
    try:
        done = subprocess.run([sys.executable, "-m", "tests.layers"], cwd=ROOT, capture_output=True, text=True)
    finally:
        probe.unlink()
    assert done.returncode == 1
    assert "db._layers_probe:1 imports app.errors.ApiError: db imports nothing of ours" in done.stdout
