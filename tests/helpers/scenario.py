"""The platform's fixture payloads as test input; generated streams come from devstack.demo."""

from __future__ import annotations

import json

from devstack.demo import EPOCH, Message, batch_life, with_resends
from tests.helpers import ROOT

__all__ = ["EPOCH", "FIXTURES", "Message", "batch_life", "fixture_messages", "with_resends"]

FIXTURES = ROOT / "contracts" / "fixtures"


def fixture_messages(gen: str) -> list[tuple[str, str, bytes, bytes]]:
    """(file name, topic, key, value) of every fixture of one generation, in index order."""
    index = json.loads((FIXTURES / f"index-{gen}.json").read_text())
    return [
        (name, meta["topic"], meta["kafka_key"].encode(), (FIXTURES / gen / name).read_bytes())
        for name, meta in index.items()
    ]
