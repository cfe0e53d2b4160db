"""CPU time of the processes a scenario measures: one process, and a whole PostgreSQL server.

Requests or events per CPU-second are what the capacity section (bench/capacity.py) builds on: a rate on a machine
other work keeps busy says more about the machine than the code, CPU time per unit of work much less so.
"""

from __future__ import annotations

import contextlib
import math

import asyncpg
import psutil


def cpu_seconds(process: psutil.Process) -> float:
    """User and system time `process` has used so far, all its threads."""
    times = process.cpu_times()
    return float(times.user + times.system)


async def postgres_server(conn: asyncpg.Connection) -> psutil.Process | None:
    """The server process of `conn` (the parent of its backend) when it runs on this machine, else None."""
    try:
        return psutil.Process(await conn.fetchval("SELECT pg_backend_pid()")).parent()
    except psutil.Error:
        return None


def server_cpu_seconds(postmaster: psutil.Process | None) -> float:
    """CPU time of a PostgreSQL server so far: the postmaster, its live children (backends, writers, autovacuum) and
    the children that exited. NaN for a server that is not on this machine. On a server other work shares, that
    work counts too: the embedded server of `make bench` has only the bench's."""
    if postmaster is None:
        return math.nan
    times = postmaster.cpu_times()
    total = times.user + times.system + times.children_user + times.children_system
    for child in postmaster.children():
        with contextlib.suppress(psutil.Error):
            total += cpu_seconds(child)
    return float(total)
