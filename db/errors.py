"""Which database errors are worth retrying and which are caused by the data being written."""

from __future__ import annotations

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

# SQLSTATE classes: 08 connection, 40 transaction rollback (deadlock, serialization), 53 resources,
# 57 operator intervention (shutdown), 58 system error.
_TRANSIENT_CLASSES = ("08", "40", "53", "57", "58")
# 22 data exception (value out of range, bad encoding…), 23 integrity constraint.
_DATA_CLASSES = ("22", "23")


def _sqlstate(exc: BaseException) -> str | None:
    orig = getattr(exc, "orig", None)
    return getattr(orig, "sqlstate", None) or getattr(exc, "sqlstate", None)


def is_data_error(exc: BaseException) -> bool:
    """The statement failed because of a value in it: retrying the same rows can never succeed."""
    state = _sqlstate(exc)
    return isinstance(exc, DBAPIError) and state is not None and state.startswith(_DATA_CLASSES)


def is_transient(exc: BaseException) -> bool:
    """Connection loss, shutdown, deadlock: the same work may succeed on a later attempt."""
    if isinstance(exc, OSError | ConnectionError | TimeoutError | InterfaceError | OperationalError):
        return True
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return True
        state = _sqlstate(exc)
        return state is not None and state.startswith(_TRANSIENT_CLASSES)
    return False
