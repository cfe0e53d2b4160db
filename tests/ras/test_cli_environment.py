"""Insecure defaults (SECURITY.md, finding 4): the environment is stated, and production refuses a guessable key.

A bare `ras serve` used to run as development (GraphiQL, introspection on), and RAS_ENVIRONMENT=production still
accepted the public `dev-internal-api-key`. Each case runs the real `ras` command, as an operator would.
"""

from __future__ import annotations

import pytest

from devstack.process import free_port
from infra.settings import DEVELOPMENT_API_KEY, ENVIRONMENT_FORM, MIN_PRODUCTION_KEY_LENGTH, PRODUCTION_KEY_FORM
from tests.ras.test_cli_errors import FAST, clean_env, failure_line, ras


def unstated(**variables: str) -> dict[str, str]:
    """A clean environment without RAS_ENVIRONMENT."""
    env = clean_env(**variables)
    del env["RAS_ENVIRONMENT"]
    return env


@pytest.mark.parametrize("command", ["serve", "consume", "migrate"])
def test_a_bare_command_names_the_missing_environment(command: str) -> None:
    env = unstated(RAS_DATABASE_URL="postgresql+asyncpg://u@127.0.0.1:1/d", RAS_PORT=str(free_port()))
    line = failure_line(ras(command, env=env), 2)
    assert line == f"ras: invalid configuration: RAS_ENVIRONMENT: not set; expected {ENVIRONMENT_FORM}"


def test_an_unknown_environment_is_refused() -> None:
    env = clean_env(RAS_DATABASE_URL="postgresql+asyncpg://u@127.0.0.1:1/d", RAS_ENVIRONMENT="prod")
    line = failure_line(ras("serve", env=env), 2)
    assert line.startswith("ras: invalid configuration: RAS_ENVIRONMENT: ") and "'production'" in line


@pytest.mark.parametrize(
    ("key", "problem"),
    [
        (None, "the public development key is refused in production"),
        (DEVELOPMENT_API_KEY, "the public development key is refused in production"),
        (
            "x" * (MIN_PRODUCTION_KEY_LENGTH - 1),
            f"{MIN_PRODUCTION_KEY_LENGTH - 1} characters is too short for production",
        ),
    ],
)
def test_production_refuses_the_development_key_and_short_keys(key: str | None, problem: str) -> None:
    keyed = {} if key is None else {"RAS_INTERNAL_API_KEY": key}
    env = clean_env(RAS_DATABASE_URL="postgresql+asyncpg://u@127.0.0.1:1/d", RAS_ENVIRONMENT="production", **keyed)
    line = failure_line(ras("serve", "--port", str(free_port()), env=env), 2)
    assert line == f"ras: invalid configuration: RAS_INTERNAL_API_KEY: {problem}; expected {PRODUCTION_KEY_FORM}"
    if key is not None:
        assert key not in line, "the key itself is never echoed"


def test_production_accepts_a_long_key() -> None:
    # The configuration passes: what stops this server is the database nothing listens on (exit 1, not 2).
    env = clean_env(
        RAS_DATABASE_URL=f"postgresql+asyncpg://u@127.0.0.1:{free_port()}/d",
        RAS_ENVIRONMENT="production",
        RAS_INTERNAL_API_KEY="k" * MIN_PRODUCTION_KEY_LENGTH,
        **FAST,
    )
    line = failure_line(ras("serve", "--host", "127.0.0.1", "--port", str(free_port()), env=env), 1)
    assert "cannot connect to the database at" in line


def test_development_keeps_the_development_key() -> None:
    env = clean_env(RAS_DATABASE_URL=f"postgresql+asyncpg://u@127.0.0.1:{free_port()}/d", **FAST)
    line = failure_line(ras("serve", "--host", "127.0.0.1", "--port", str(free_port()), env=env), 1)
    assert "cannot connect to the database at" in line
