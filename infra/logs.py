"""Logs of every `ras` process: one JSON object per line on stderr, or a console rendering for people.

structlog's loggers and the standard library's (uvicorn, Alembic, aiokafka, asyncio, SQLAlchemy, `warnings`) go
through one handler whose `structlog.stdlib.ProcessorFormatter` renders both alike: `timestamp`, `level`, `logger`,
`event`, then the call's own fields (and `trace_id`, `span_id` while a span is active: tracing on, infra/tracing.py);
a traceback, when there is one, is the `exception` field of the same line.
Warnings (`warnings.warn`) and exceptions Python could only ignore (`sys.unraisablehook`) are logged the same way.
JSON unless stderr is a terminal (or the caller asks for the console, as `ras dev` does); tests and log shippers
read the JSON.
"""

from __future__ import annotations

import logging
import sys
from typing import Literal

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from infra.trace_ids import current_ids

Renderer = Literal["json", "console"]

# Chatter of libraries that is only useful when debugging them: Alembic announces each plugin it sets up.
_QUIET_UNLESS_DEBUG = ("alembic",)
# SQLAlchemy logs every statement at INFO once its loggers are enabled; RAS_LOG_LEVEL=DEBUG should not mean that.
_ALWAYS_QUIET = ("sqlalchemy",)


def _add_trace_ids(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
    """The active span's ids, so a log line and the trace of the same request or transaction find each other."""
    ids = current_ids()
    if ids is not None:
        event.setdefault("trace_id", ids[0])
        event.setdefault("span_id", ids[1])
    return event


def _shared_processors() -> list[Processor]:
    """Applied to structlog's and the standard library's entries alike, before rendering."""
    return [
        structlog.contextvars.merge_contextvars,
        _add_trace_ids,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]


def formatter(renderer: Renderer) -> structlog.stdlib.ProcessorFormatter:
    """The formatter of the one stderr handler: JSON lines, or the console rendering."""
    final: list[Processor] = [structlog.stdlib.ProcessorFormatter.remove_processors_meta]
    if renderer == "json":
        final += [structlog.processors.format_exc_info, structlog.processors.JSONRenderer()]
    else:
        final.append(structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty()))
    return structlog.stdlib.ProcessorFormatter(foreign_pre_chain=_shared_processors(), processors=final)


def _log_unraisable(unraisable: sys.UnraisableHookArgs) -> None:
    """What Python would print as "Exception ignored in: …" (say, an exception in a finalizer run by the garbage
    collector), logged as one entry instead of a bare traceback on stderr."""
    logging.getLogger("py.unraisable").error(
        "%s: %r",
        unraisable.err_msg or "Exception ignored in",
        unraisable.object,
        exc_info=(unraisable.exc_type, unraisable.exc_value or unraisable.exc_type(), unraisable.exc_traceback),
    )


def configure_logging(level: str = "INFO", renderer: Renderer | None = None) -> None:
    """Route every logger of the process through one stderr handler at `level`.

    `renderer` None: the console rendering when stderr is a terminal, JSON otherwise.
    """
    if renderer is None:
        renderer = "console" if sys.stderr.isatty() else "json"
    numeric = logging.getLevelName(level)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(renderer))
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(numeric)
    for name in _QUIET_UNLESS_DEBUG:
        logging.getLogger(name).setLevel(logging.DEBUG if numeric <= logging.DEBUG else logging.WARNING)
    for name in _ALWAYS_QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.captureWarnings(True)  # `warnings.warn` (SQLAlchemy's, asyncio's) as log entries, not bare stderr text
    sys.unraisablehook = _log_unraisable
    structlog.configure(
        processors=[*_shared_processors(), structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=True,
    )
