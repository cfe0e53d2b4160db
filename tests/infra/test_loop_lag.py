"""Deadlines that do not count the loop's own lateness: which of the two bounds ends a wait, and that a stall of
the loop is not taken for a slow answer. No assertion is about time taken: each checks which bound ended a wait."""

from __future__ import annotations

import asyncio
import time

import pytest

from infra.loop_lag import LoopLag

BUDGET = 0.2


async def never() -> None:
    await asyncio.Event().wait()


async def test_an_on_time_loop_blames_the_other_side() -> None:
    deadline = LoopLag(interval=BUDGET / 10).deadline(BUDGET, limit=BUDGET * 100)
    with pytest.raises(TimeoutError):
        async with deadline:
            await never()
    assert deadline.other_side_slow


async def test_an_answer_that_arrived_during_a_stall_is_read() -> None:
    """The answer is there before the deadline, but the loop is blocked across it: a plain timeout (whose timer runs
    in the same turn as the answer's wake-up) would end the wait; this one waits for the loop's next turns."""
    answer = asyncio.get_running_loop().create_future()

    async def wait() -> str:
        async with LoopLag(interval=BUDGET / 10).deadline(BUDGET, limit=BUDGET * 100):
            return str(await answer)

    waiting = asyncio.create_task(wait())
    await asyncio.sleep(0)  # the wait has begun
    answer.get_loop().call_soon(answer.set_result, "answer")
    time.sleep(BUDGET * 3)  # noqa: ASYNC251  # the point: the loop is blocked past the deadline
    assert await waiting == "answer"


async def test_a_late_loop_gives_up_at_the_limit_without_blaming_the_other_side() -> None:
    deadline = LoopLag(interval=BUDGET / 20).deadline(BUDGET, limit=BUDGET * 2)

    async def stall_every_turn() -> None:
        while True:
            time.sleep(BUDGET / 2)  # noqa: ASYNC251  # a loop kept busy by other work
            await asyncio.sleep(0)

    staller = asyncio.create_task(stall_every_turn())
    try:
        with pytest.raises(TimeoutError):
            async with deadline:
                await never()
    finally:
        staller.cancel()
    assert not deadline.other_side_slow


async def test_the_heartbeat_stops_when_no_deadline_is_open() -> None:
    lag = LoopLag(interval=0.01)
    async with lag.deadline(BUDGET, limit=BUDGET):
        await asyncio.sleep(0)
    await asyncio.sleep(0.05)  # the last heartbeat runs and re-arms nothing
    before = lag.lateness()
    time.sleep(0.05)  # noqa: ASYNC251  # a stall nobody measures
    await asyncio.sleep(0)
    assert lag.lateness() == before


async def test_an_answer_that_keeps_coming_is_not_cut_off_by_the_budget() -> None:
    """Each part of the answer comes well within the budget, the whole of it after several budgets: a watched call
    starts its budget again at every part, so only silence ends it."""
    deadline = LoopLag(interval=BUDGET / 10).deadline(BUDGET, limit=BUDGET * 100)

    async def parts() -> int:
        for _ in range(8):
            await asyncio.sleep(BUDGET / 2)
        return 8

    async with deadline:
        assert await deadline.watched(parts()) == 8


async def test_a_watched_call_that_falls_silent_is_ended_and_closed() -> None:
    deadline = LoopLag(interval=BUDGET / 10).deadline(BUDGET, limit=BUDGET * 100)
    cleaned_up = False

    async def one_part_then_silence() -> None:
        nonlocal cleaned_up
        try:
            await asyncio.sleep(BUDGET / 2)
            await never()
        finally:
            cleaned_up = True

    with pytest.raises(TimeoutError):
        async with deadline:
            await deadline.watched(one_part_then_silence())
    assert deadline.other_side_slow and cleaned_up
