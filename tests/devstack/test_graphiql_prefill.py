"""`ras dev` gives GraphiQL its key and ids of the demo it produces (the ids are checked against the stream itself;
tests/devstack/test_dev_stack.py runs the whole stack)."""

from __future__ import annotations

import json

from pydantic import SecretStr

from consumer.pure.topics import BATCH_ESSAYS_REGISTERED, ELS_BATCH_PHASE_OUTCOME
from devstack.demo import demo_stream
from devstack.dev import _graphiql_prefill
from infra.settings import Settings

SETTINGS = Settings(
    database_url="postgresql+asyncpg://unused/unused",
    internal_api_key=SecretStr("dev-internal-api-key"),
    environment="development",
)


def test_the_prefill_names_a_batch_with_failed_and_assessed_essays_of_the_demo() -> None:
    messages = demo_stream(24, users=4)
    prefill = _graphiql_prefill(SETTINGS, messages)
    assert prefill.api_key == "dev-internal-api-key"  # what the banner prints
    owners = {
        m.key.decode(): json.loads(m.value)["data"]["user_id"] for m in messages if m.topic == BATCH_ESSAYS_REGISTERED
    }
    spellcheck = {
        data["batch_id"]: data
        for data in (json.loads(m.value)["data"] for m in messages if m.topic == ELS_BATCH_PHASE_OUTCOME)
        if data["phase_name"] == "spellcheck"
    }
    batch = prefill.variables["batchId"]
    assert isinstance(batch, str) and prefill.variables["userId"] == owners[batch]
    assert spellcheck[batch]["failed_essay_ids"]  # FailedSpellchecks shows something
    assert prefill.variables["essayId"] in {e["essay_id"] for e in spellcheck[batch]["processed_essays"]}
    newest = list(owners)[-1]  # the last batch registered (re-sends come at the end of the stream, but repeat one)
    assert prefill.operations == {"LiveBatchProgress": {"batchId": newest}}


def test_without_a_demo_only_the_key() -> None:
    prefill = _graphiql_prefill(SETTINGS, [])
    assert (prefill.api_key, dict(prefill.variables), dict(prefill.operations)) == ("dev-internal-api-key", {}, {})
