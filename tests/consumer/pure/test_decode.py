"""Wire bytes → contract models, for every fixture and for the ways a record can be unreadable."""

from __future__ import annotations

import json

import pytest

from consumer.pure import contracts as c
from consumer.pure import topics as t
from consumer.pure.decode import PoisonMessage, Record, decode, payload_digest
from tests.helpers.scenario import fixture_messages

EXPECTED = {
    ("gen1", "batch_essays_registered__default.json"): c.BatchEssaysRegisteredGen1,
    ("gen1", "cj_assessment_completed__with_rankings.json"): c.CJAssessmentCompletedGen1,
    ("gen1", "essay_slot_assigned__default.json"): c.EssaySlotAssignedGen1,
    ("gen1", "spellcheck_completed__failure.json"): c.SpellcheckResultDataGen1,
    ("gen1", "spellcheck_completed__success.json"): c.SpellcheckResultDataGen1,
    ("gen2", "assessment_result_published__with_rankings_and_anchor.json"): c.AssessmentResultGen2,
    ("gen2", "batch_essays_registered__default.json"): c.BatchEssaysRegisteredGen2,
    ("gen2", "batch_pipeline_completed__completed_with_failures.json"): c.BatchPipelineCompletedGen2,
    ("gen2", "essay_slot_assigned__default.json"): c.EssaySlotAssignedGen2,
    ("gen2", "spellcheck_results__failure.json"): c.SpellcheckResultGen2,
    ("gen2", "spellcheck_results__success.json"): c.SpellcheckResultGen2,
}


def _record(topic: str, value: bytes | None) -> Record:
    return Record(topic, 0, 7, b"key", value)


@pytest.mark.parametrize("gen", ["gen1", "gen2"])
def test_every_fixture_decodes_to_its_generation_model(gen: str) -> None:
    for name, topic, _key, value in fixture_messages(gen):
        if "NOT_CONSUMED" in name and topic not in t.ALL_TOPICS:
            with pytest.raises(PoisonMessage, match="not one RAS consumes"):
                decode(_record(topic, value), 1_000_000)
            continue
        event = decode(_record(topic, value), 1_000_000)
        if name.startswith("els_batch_phase_outcome"):
            assert event is not None and isinstance(event.payload, c.ELSBatchPhaseOutcome)
        elif (gen, name) in EXPECTED:
            assert event is not None and type(event.payload) is EXPECTED[(gen, name)], name
        else:
            assert name == "cj_assessment_completed__thin_NOT_CONSUMED_BY_RAS.json"
            assert event is None  # the thin gen 2 CJ event is acknowledged, not applied


def test_generation_is_told_apart_by_the_fields_present() -> None:
    by_name = {name: value for name, _t, _k, value in fixture_messages("gen1")}
    gen1 = decode(_record(t.BATCH_ESSAYS_REGISTERED, by_name["batch_essays_registered__default.json"]), 10**6)
    assert gen1 is not None and isinstance(gen1.payload, c.BatchEssaysRegisteredGen1)
    assert gen1.payload.essay_instructions.startswith("Write a 300-word")


def _fixture_envelope(gen: str, name: str) -> dict[str, object]:
    for fixture, _topic, _key, value in fixture_messages(gen):
        if fixture == name:
            return dict(json.loads(value))
    raise KeyError(name)


def test_unknown_enum_values_are_kept_as_text() -> None:
    envelope = _fixture_envelope("gen2", "batch_pipeline_completed__completed_with_failures.json")
    envelope["data"]["final_status"] = "student_validation_rejected"  # type: ignore[index]
    event = decode(_record(t.BATCH_PIPELINE_COMPLETED, json.dumps(envelope).encode()), 10**6)
    assert event is not None and isinstance(event.payload, c.BatchPipelineCompletedGen2)
    assert event.payload.final_status == "student_validation_rejected"


def test_unknown_keys_are_ignored() -> None:
    envelope = _fixture_envelope("gen2", "essay_slot_assigned__default.json")
    envelope["brand_new"] = {"x": 1}
    envelope["data"]["also_new"] = [1, 2]  # type: ignore[index]
    assert decode(_record(t.ESSAY_SLOT_ASSIGNED, json.dumps(envelope).encode()), 10**6) is not None


def test_gen1_slot_without_file_name_still_reads() -> None:
    envelope = _fixture_envelope("gen1", "essay_slot_assigned__default.json")
    event = decode(_record(t.ESSAY_SLOT_ASSIGNED, json.dumps(envelope).encode()), 10**6)
    assert event is not None and type(event.payload) is c.EssaySlotAssignedGen1


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, "no value"),
        (b"\xff\xfe not json", "not valid JSON"),
        (b"[1, 2]", "JSON list, not an object"),
        (b'{"event_type": "x"}', "envelope.source_service: Field required"),
        (b'{"event_type": "x", "source_service": "s", "data": 5}', "envelope.data"),
        (b"[" * 5000 + b"]" * 5000, "not valid JSON"),
    ],
)
def test_unreadable_records_are_poison_with_a_reason(value: bytes | None, reason: str) -> None:
    with pytest.raises(PoisonMessage, match=reason.replace("[", r"\[")):
        decode(_record(t.BATCH_ESSAYS_REGISTERED, value), 10**6)


def test_missing_payload_field_names_the_field_and_model() -> None:
    envelope = _fixture_envelope("gen2", "spellcheck_results__success.json")
    del envelope["data"]["correction_metrics"]  # type: ignore[attr-defined]
    with pytest.raises(PoisonMessage, match=r"data\[SpellcheckResultGen2\]\.correction_metrics: Field required"):
        decode(_record(t.SPELLCHECK_RESULTS, json.dumps(envelope).encode()), 10**6)


def test_oversized_record_is_refused_before_parsing() -> None:
    with pytest.raises(PoisonMessage, match="over the 1024-byte limit"):
        decode(_record(t.SPELLCHECK_RESULTS, b"{" + b" " * 5000 + b"}"), 1024)


def test_digest_ignores_key_order_and_envelope() -> None:
    a = {"x": 1, "y": [1, 2]}
    b = {"y": [1, 2], "x": 1}
    assert payload_digest("t", a) == payload_digest("t", b)
    assert payload_digest("t", a) != payload_digest("u", a)


def test_packaged_templates_are_the_contract_fixtures() -> None:
    from devstack.demo import TEMPLATES
    from tests.helpers.scenario import FIXTURES

    packaged = sorted(p.relative_to(TEMPLATES) for p in TEMPLATES.rglob("*.json"))
    assert packaged, "devstack/templates ships the example envelopes the demo generator starts from"
    for path in packaged:
        assert (TEMPLATES / path).read_bytes() == (FIXTURES / path).read_bytes(), (
            f"{path} drifted from contracts/fixtures"
        )
