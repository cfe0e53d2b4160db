"""db/engine.py decodes JSON columns with orjson, falling back to the json module where orjson would lose digits."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from db.engine import loads

_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text()
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


@given(_values)
def test_decodes_what_the_json_module_decodes(value: Any) -> None:
    text = json.dumps(value)
    assert loads(text) == json.loads(text)
    assert loads(text.encode()) == json.loads(text)


def test_integers_beyond_64_bits_stay_exact() -> None:
    big = 2**70 + 1
    decoded = loads(f'{{"count": {big}, "nested": [{-big}]}}')
    assert decoded == {"count": big, "nested": [-big]}
    assert type(decoded["count"]) is int
