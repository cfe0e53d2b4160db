"""`ras quarantine list/replay`: records quarantined for a reason since removed are applied on replay."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

from sqlalchemy.ext.asyncio import AsyncEngine

from consumer.apply import apply_fetch
from consumer.pure import topics as t
from consumer.pure.fetch import decode_fetch
from consumer.tools.replay import replay
from tests.helpers.consumer import as_records, dump
from tests.helpers.scenario import fixture_messages


async def ras_quarantine_list(database_url: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RAS_DATABASE_URL": database_url}
    command = [sys.executable, "-m", "ras.cli", "quarantine", "list"]
    return await asyncio.to_thread(subprocess.run, command, env=env, capture_output=True, text=True, check=True)


async def test_replay_applies_what_now_fits_and_keeps_the_rest(engine: AsyncEngine, database_url: str) -> None:
    registration = next(v for n, _t, _k, v in fixture_messages("gen2") if n.startswith("batch_essays_registered"))
    records = as_records([(t.BATCH_ESSAYS_REGISTERED, b"k", registration), (t.ESSAY_SLOT_ASSIGNED, b"k", b"{oops")])
    async with engine.begin() as conn:  # an operator had set the size limit too low
        applied = await apply_fetch(conn, decode_fetch(records, max_bytes=1_024))
    assert sum(applied.quarantined.values()) == 2 and (await dump(engine))["batches"] == []

    listing = await ras_quarantine_list(database_url)
    assert "2 record(s)" in listing.stdout and "over the 1024-byte limit" in listing.stdout

    report = await replay(engine, max_bytes=1_048_576)
    assert len(report.replayed) == 1 and report.user_ids == {"teacher-3f9a"}
    [reason] = report.still_failing.values()
    assert reason.startswith("not valid JSON: unexpected character")
    [batch] = (await dump(engine))["batches"]
    assert batch["batch_id"] == "7b1f0c52-3d7e-4a51-9a57-5a0f3c1e2b01"

    listing = await ras_quarantine_list(database_url)
    assert "1 record(s)" in listing.stdout and "not valid JSON" in listing.stdout
    again = await replay(engine, max_bytes=1_048_576)
    assert again.replayed == [] and len(again.still_failing) == 1
