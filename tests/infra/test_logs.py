"""Every log line of a `ras` process is one JSON object, the standard library's loggers included.

Logging is process-wide state, so each case configures it in a subprocess of its own, as `ras` does at start.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

from devstack.process import free_port
from tests.helpers import ROOT
from tests.helpers.processes import RasProcess, wait_for_status

EMIT = """
import asyncio, gc, logging, warnings
import structlog
from infra.logs import configure_logging
configure_logging({level!r}{renderer})
structlog.get_logger("ras.example").info("from structlog", answer=42)
for name in ("uvicorn.error", "uvicorn.access", "aiokafka", "asyncio", "alembic.runtime.migration", "sqlalchemy.pool"):
    logging.getLogger(name).warning("warning from %s", name)
logging.getLogger("alembic.runtime.plugins").info("setup plugin alembic.autogenerate.schemas")
logging.getLogger("uvicorn.error").info("Started server process [%d]", 1)
try:
    raise ValueError("boom")
except ValueError:
    logging.getLogger("uvicorn.error").exception("Exception in ASGI application")
warnings.warn("a library warns", UserWarning)

class Finalized:
    def __del__(self):
        raise RuntimeError("in a finalizer")

Finalized()
gc.collect()
"""


def emitted(level: str = "INFO", renderer: str = "") -> subprocess.CompletedProcess[str]:
    code = textwrap.dedent(EMIT.format(level=level, renderer=renderer))
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAS_")}
    return subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)


def test_standard_library_loggers_write_json_through_structlog() -> None:
    result = emitted()
    assert result.returncode == 0, result.stderr
    entries = [json.loads(line) for line in result.stderr.splitlines()]  # every line is one JSON object
    by_logger = {entry["logger"]: entry for entry in entries}
    assert by_logger["ras.example"]["event"] == "from structlog" and by_logger["ras.example"]["answer"] == 42
    for name in ("uvicorn.error", "uvicorn.access", "aiokafka", "asyncio", "alembic.runtime.migration"):
        assert any(e["logger"] == name and e["event"] == f"warning from {name}" for e in entries), name
    assert all({"timestamp", "level", "logger", "event"} <= entry.keys() for entry in entries)
    [failure] = [e for e in entries if e["event"] == "Exception in ASGI application"]
    assert failure["level"] == "error" and "ValueError: boom" in str(failure["exception"])
    [warned] = [e for e in entries if e["logger"] == "py.warnings"]
    assert "a library warns" in str(warned["event"])
    [ignored] = [e for e in entries if e["logger"] == "py.unraisable"]
    assert "RuntimeError: in a finalizer" in str(ignored["exception"])


def test_alembic_and_sqlalchemy_chatter_is_quiet_unless_debugging() -> None:
    info = emitted("INFO").stderr
    assert "setup plugin" not in info
    assert "warning from sqlalchemy.pool" in info  # quiet means below WARNING
    assert "setup plugin" in emitted("DEBUG").stderr


def test_the_console_rendering_is_for_people() -> None:
    result = emitted("INFO", ', renderer="console"')
    assert result.returncode == 0, result.stderr
    assert "from structlog" in result.stderr and "answer=42" in result.stderr
    assert not any(line.startswith("{") for line in result.stderr.splitlines())


async def test_serve_logs_json_only_and_a_client_leaving_mid_request_at_debug(
    database_url: str, redis_url: str, tmp_path: Path
) -> None:
    port = free_port()
    env = {"RAS_DATABASE_URL": database_url, "RAS_REDIS_URL": redis_url, "RAS_LOG_LEVEL": "DEBUG"}
    serve = RasProcess("serve", env, tmp_path / "serve.log", ["--host", "127.0.0.1", "--port", str(port)])
    try:
        await wait_for_status(f"http://127.0.0.1:{port}/healthz", 200)
        # A POST that announces 1,000 bytes, sends a few and hangs up.
        with socket.create_connection(("127.0.0.1", port)) as client:
            client.sendall(
                b"POST /graphql HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n"
                b"X-Internal-API-Key: dev-internal-api-key\r\nX-Service-ID: api-gateway-service\r\n\r\n{"
            )
            await asyncio.sleep(0.2)
        await serve.wait_for_output('"event": "client disconnected"')
        # uvicorn re-raises the SIGTERM it handled once it has shut down: killed by it is a clean exit here.
        assert await serve.stop(signal.SIGTERM) in (0, -signal.SIGTERM)
    finally:
        serve.kill()
    output = serve.output()
    entries = [json.loads(line) for line in output.splitlines()]  # every line, uvicorn's included
    [left] = [e for e in entries if e["event"] == "client disconnected"]
    assert left["level"] == "debug" and left["path"] == "/graphql"
    assert "Traceback" not in output and not [e for e in entries if e["level"] == "error"]
    assert {"uvicorn.error", "uvicorn.access", "app.main"} <= {e["logger"] for e in entries}
