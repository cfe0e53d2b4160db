"""For any arrival order, duplication and transaction grouping, the read model equals in-order delivery.

The reference applies every event in event-timestamp order, one transaction each (as the original service did).
Hypothesis then shuffles the same events, adds none or more relay re-sends, and cuts the stream into transactions
of random sizes; the four read-model tables must come out identical, row for row. Some batches also get a rival
registration naming another user, stamped before, with or after their own: whichever arrives first, the earliest
holds the batch (db/writes.py, upsert_registrations).
"""

from __future__ import annotations

import json
import random
from datetime import timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.helpers.consumer import apply, as_records, dump, in_event_order, truncate
from tests.helpers.events import registered
from tests.helpers.scenario import Message, batch_life, with_resends


def rival(life: list[Message], user_id: str, seconds: int) -> Message:
    """Another registration of the batch `life` registers, naming `user_id`, `seconds` from the original's stamp."""
    own = life[0]
    data = json.loads(own.value)["data"]
    gen = "gen1" if "essay_instructions" in data else "gen2"
    return registered(gen, data["entity_id"], user_id, data["essay_ids"][:1], own.at + timedelta(seconds=seconds))


@st.composite
def scenarios(draw: st.DrawFn) -> list[Message]:
    rng = random.Random(draw(st.integers(0, 2**32)))
    messages: list[Message] = []
    for i in range(draw(st.integers(1, 3))):
        gen = draw(st.sampled_from(["gen1", "gen2"]))
        essays = draw(st.integers(1, 5))
        fail_rate = draw(st.sampled_from([0.0, 0.3, 1.0]))
        life = batch_life(rng, gen, f"teacher-{i % 2}", essays, fail_rate)
        messages += life
        offset = draw(st.sampled_from([None, -60, 0, 60]))
        if offset is not None:
            messages.append(rival(life, "mallory", offset))
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
