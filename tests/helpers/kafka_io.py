"""Producing test streams onto the broker and waiting until the projection's stored positions reach them."""

from __future__ import annotations

import asyncio

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from devstack.produce import Offsets
from devstack.produce import send_all as produce

__all__ = ["Offsets", "produce", "stored_positions", "wait_for_positions"]


async def stored_positions(engine: AsyncEngine) -> Offsets:
    async with engine.connect() as conn:
        rows = await conn.execute(text("SELECT topic, partition, next_offset FROM consumer_positions"))
        return {(r.topic, r.partition): r.next_offset for r in rows}


async def wait_for_positions(engine: AsyncEngine, expected: Offsets, timeout: float) -> Offsets:
    """Poll the positions table (the projection's own record of progress) until it reaches `expected`."""
    async with asyncio.timeout(timeout):
        while True:
            positions = await stored_positions(engine)
            if all(positions.get(tp, 0) >= end for tp, end in expected.items()):
                return positions
            await asyncio.sleep(0.05)
