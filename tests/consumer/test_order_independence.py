"""For any arrival order, duplication and transaction grouping, the read model equals in-order delivery.

The reference applies every event in event-timestamp order, one transaction each (as the original service did).
Hypothesis then shuffles the same events, adds none or more relay re-sends, and cuts the stream into transactions
of random sizes; the four read-model tables must come out identical, row for row.
"""

from __future__ import annotations

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.helpers.consumer import apply, as_records, dump, in_event_order, truncate
from tests.helpers.scenario import Message, batch_life, with_resends


@st.composite
def scenarios(draw: st.DrawFn) -> list[Message]:
    rng = random.Random(draw(st.integers(0, 2**32)))
    messages: list[Message] = []
    for i in range(draw(st.integers(1, 3))):
        gen = draw(st.sampled_from(["gen1", "gen2"]))
        essays = draw(st.integers(1, 5))
        fail_rate = draw(st.sampled_from([0.0, 0.3, 1.0]))
        messages += batch_life(rng, gen, f"teacher-{i % 2}", essays, fail_rate)
    return with_resends(rng, messages, draw(st.sampled_from([0.0, 0.2, 0.5])))


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(messages=scenarios(), data=st.data())
async def test_any_order_and_grouping_gives_the_in_order_tables(
    engine: AsyncEngine, messages: list[Message], data: st.DataObject
) -> None:
    await truncate(engine)
    in_order = in_event_order(messages)
    await apply(engine, as_records(in_order), per_transaction=1)
    expected = await dump(engine)

    await truncate(engine)
    shuffled = data.draw(st.permutations(messages))
    per_transaction = data.draw(st.integers(1, len(messages)))
    await apply(engine, as_records(shuffled), per_transaction=per_transaction)
    assert await dump(engine) == expected
    assert expected["batches"], "every scenario registers at least one batch"
