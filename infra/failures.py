"""What a `ras` command says when it cannot do its job: one line naming what failed, where, and what to check.

Commands raise `CommandFailure` (exit status 1: a dependency is unreachable, a port is taken) or
`ConfigurationError` (exit status 2: a setting is wrong, an optional extra is missing); `ras.cli.main` prints the
message after `ras: ` on stderr, without a traceback unless `--debug` or RAS_LOG_LEVEL=DEBUG asks for one.

`reaching` turns a failure to connect to one dependency (PostgreSQL, the Kafka broker) into such a line, and lets
every other exception through unchanged: an error that is not about reaching a server is a bug, and keeps its
traceback.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from dataclasses import dataclass

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

EXIT_FAILURE = 1
EXIT_CONFIGURATION = 2


class CommandFailure(Exception):
    """A failure the operator can fix: `ras` prints `ras: <message>` per line and exits with `exit_code`."""

    exit_code = EXIT_FAILURE


class ConfigurationError(CommandFailure):
    """A setting (or the installation) is wrong: nothing was attempted."""

    exit_code = EXIT_CONFIGURATION


@dataclass(frozen=True, slots=True)
class Dependency:
    """A server a command connects to, described as the operator configured it."""

    name: str  # "the database"
    where: str  # "db.internal:5432/ras", never with the password
    variable: str  # "RAS_DATABASE_URL"
    check: str  # what to check when it does not answer


def database(url: str) -> Dependency:
    try:
        parsed = make_url(url)
        where = f"{parsed.host or 'localhost'}:{parsed.port or 5432}/{parsed.database or ''}"
    except (ArgumentError, ValueError):
        where = "the configured URL"
    return Dependency(
        "the database", where, "RAS_DATABASE_URL", "check that PostgreSQL is running and the URL is right"
    )


def broker(bootstrap: str) -> Dependency:
    return Dependency(
        "the Kafka broker",
        bootstrap,
        "RAS_KAFKA_BOOTSTRAP_SERVERS",
        "check that the broker is running and the host:port list is right",
    )


@dataclass(frozen=True, slots=True)
class _Problem:
    reason: str
    check: str | None = None  # overrides the dependency's own advice


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """`exc` and the exceptions it was raised from or while handling, outermost first."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _problem(exc: BaseException) -> _Problem | None:
    """Why connecting failed, when `exc` (or one it came from) is a failure to connect; None for anything else."""
    from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError
    from asyncpg.exceptions import (
        CannotConnectNowError,
        InvalidAuthorizationSpecificationError,
        InvalidCatalogNameError,
        TooManyConnectionsError,
    )

    for error in _chain(exc):
        if isinstance(error, InvalidCatalogNameError):
            return _Problem(str(error), "create it or correct the database name at the end of the URL")
        if isinstance(error, InvalidAuthorizationSpecificationError):  # unknown role, wrong password, pg_hba.conf
            return _Problem(str(error), "check the user and password in the URL")
        if isinstance(error, CannotConnectNowError | TooManyConnectionsError):
            return _Problem(str(error))
        if isinstance(error, KafkaConnectionError | KafkaTimeoutError):
            return _Problem("no Kafka broker answered")
        if isinstance(error, ConnectionRefusedError):
            return _Problem("connection refused")
        if isinstance(error, socket.gaierror):
            return _Problem(f"host name not resolved ({error.strerror})")
        if isinstance(error, TimeoutError):
            return _Problem("no answer in time")
        if isinstance(error, OSError):
            return _Problem(error.strerror or str(error) or type(error).__name__)
    return None


def is_permanent(exc: BaseException) -> bool:
    """A refusal waiting will not cure (unknown database, wrong credentials): give up at once, don't retry."""
    from asyncpg.exceptions import InvalidAuthorizationSpecificationError, InvalidCatalogNameError

    return any(
        isinstance(error, InvalidCatalogNameError | InvalidAuthorizationSpecificationError) for error in _chain(exc)
    )


def cannot_connect(dependency: Dependency, exc: BaseException) -> CommandFailure | None:
    """The one-line failure for `exc` if it is a failure to connect to `dependency`, else None."""
    from infra.wait import DependencyUnavailable

    problem = _problem(exc)
    if problem is None:
        return None
    reason = problem.reason
    waited = next((e for e in _chain(exc) if isinstance(e, DependencyUnavailable)), None)
    if waited is not None and waited.retried:
        reason += f", still after {waited.budget_seconds:g} s (RAS_STARTUP_TIMEOUT_SECONDS)"
    return CommandFailure(
        f"cannot connect to {dependency.name} at {dependency.where} ({dependency.variable}): {reason}; "
        f"{problem.check or dependency.check}"
    )


@contextlib.contextmanager
def reaching(dependency: Dependency) -> Iterator[None]:
    """Inside this block, a failure to connect becomes the one-line `CommandFailure` naming `dependency`."""
    try:
        yield
    except CommandFailure:
        raise
    except Exception as exc:
        failure = cannot_connect(dependency, exc)
        if failure is None:
            raise
        raise failure from exc
