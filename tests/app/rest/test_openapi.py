"""The OpenAPI 3.1 document: served as checked in, a valid OpenAPI 3.1 document, and real responses validate."""

from __future__ import annotations

import copy
import json
from datetime import timedelta
from importlib.metadata import version
from typing import Any
from urllib.parse import quote

import jsonschema
import pytest
from openapi_spec_validator import OpenAPIV31SpecValidator
from referencing import Registry
from referencing.jsonschema import DRAFT202012
from sqlalchemy.ext.asyncio import AsyncEngine

from app.rest import shape as rest_shape
from app.rest.openapi import document, document_bytes, render
from infra.version import VERSION
from tests.app.graphql.conftest import AUTH, FIXTURE_BATCH, FIXTURE_USER
from tests.app.rest.conftest import Rest
from tests.helpers import ROOT
from tests.helpers.documented import (
    CLIENT_STATUSES,
    ERROR_DETAIL_KEYS,
    INTERNAL_STATUSES,
    PHASE_NAMES,
    PROCESSING_STAGES,
)
from tests.helpers.events import EPOCH, pipeline_completed, project, registered, slot_assigned, spellchecked

CHECKED_IN = ROOT / "openapi" / "rest.json"
DOC_URI = "urn:ras:rest-openapi"


def response_validator(path: str, status: int) -> jsonschema.Draft202012Validator:
    """A validator for the JSON body the document declares for `GET path` answering `status`."""
    doc = document()
    assert "schema" in doc["paths"][path]["get"]["responses"][str(status)]["content"]["application/json"]
    registry: Registry[Any] = Registry().with_resource(DOC_URI, DRAFT202012.create_resource(doc))
    # Point into the whole document, so the schema's own "#/components/..." references resolve within it.
    steps = ["paths", path, "get", "responses", str(status), "content", "application/json", "schema"]
    pointer = "".join("/" + quote(step.replace("~", "~0").replace("/", "~1"), safe="~") for step in steps)
    return jsonschema.Draft202012Validator({"$ref": f"{DOC_URI}#{pointer}"}, registry=registry)


def validate(path: str, status: int, body: Any) -> None:
    response_validator(path, status).validate(body)


def invalid(path: str, status: int, body: Any) -> bool:
    return not response_validator(path, status).is_valid(body)


STATUS_ROUTE = "/batches/{batch_id}/status"
LIST_ROUTE = "/batches/user/{user_id}"


async def test_the_served_document_is_the_checked_in_file(api: Rest) -> None:
    response = await api.client.get("/internal/v1/openapi.json")  # no credentials: it holds no data
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.content == document_bytes()
    # Byte for byte but for info.version, the package's version, which the checked-in copy may predate: a version
    # bump alone must not make the copy out of date.
    checked_in = CHECKED_IN.read_bytes()
    same_version = document()
    same_version["info"]["version"] = json.loads(checked_in)["info"]["version"]
    assert render(same_version) == checked_in, (
        "openapi/rest.json is out of date: .venv/bin/python -m app.rest.openapi > openapi/rest.json"
    )


def test_its_version_is_the_packages() -> None:
    assert document()["info"]["version"] == VERSION == version("result-aggregator-service")


def test_it_is_a_valid_openapi_3_1_document() -> None:
    doc = json.loads(CHECKED_IN.read_text())
    assert doc["openapi"] == "3.1.0"
    OpenAPIV31SpecValidator(doc).validate()


def test_its_enums_and_keys_are_the_documented_ones() -> None:
    schemas = document()["components"]["schemas"]
    batch = schemas["BatchStatusResponse"]["properties"]
    essay = schemas["EssayResultResponse"]["properties"]
    assert batch["overall_status"]["enum"] == list(CLIENT_STATUSES)
    assert batch["current_phase"]["enum"] == [*PHASE_NAMES, None]
    assert essay["spellcheck_status"]["enum"] == essay["cj_assessment_status"]["enum"] == [*PROCESSING_STAGES, None]
    status_parameter = next(p for p in document()["paths"][LIST_ROUTE]["get"]["parameters"] if p["name"] == "status")
    assert set(status_parameter["schema"]["enum"]) == set(INTERNAL_STATUSES)
    assert tuple(schemas["ErrorDetail"]["properties"]) == ERROR_DETAIL_KEYS == rest_shape.ERROR_DETAIL_KEYS


async def test_real_responses_validate(engine: AsyncEngine, api: Rest, gen2: None) -> None:
    # The gen 2 fixture batch plus a gen 1 one, one failed critically, one still running and one of an unknown status.
    at = EPOCH + timedelta(minutes=2)
    await project(
        engine,
        [
            registered("gen1", "b-gen1", FIXTURE_USER, ["g1"], EPOCH),
            slot_assigned("gen1", "b-gen1", "g1", EPOCH),
            spellchecked("gen1", "b-gen1", "g1", False, 0, at),
            registered("gen2", "b-run", FIXTURE_USER, ["r1", "r2"], EPOCH + timedelta(seconds=1)),
            slot_assigned("gen2", "b-run", "r1", EPOCH),
            spellchecked("gen2", "b-run", "r1", True, 1, at),
            pipeline_completed("b-run", 0, 0, "processing_pipelines", at),
            registered("gen2", "b-odd", FIXTURE_USER, [], EPOCH + timedelta(microseconds=7)),
            pipeline_completed("b-odd", 0, 0, "archived_by_newer_platform", at),
        ],
    )
    for batch_id in (FIXTURE_BATCH, "b-gen1", "b-run", "b-odd"):
        validate(STATUS_ROUTE, 200, await api.json(f"/batches/{batch_id}/status"))
    for params in ({}, {"limit": "2", "offset": "1"}, {"status": "processing_pipelines"}, {"offset": "99"}):
        listed = await api.json(f"/batches/user/{FIXTURE_USER}", params=params)
        validate(LIST_ROUTE, 200, listed)
    assert len((await api.json(f"/batches/user/{FIXTURE_USER}"))["batches"]) == 4


async def test_error_responses_validate(api: Rest, gen2: None) -> None:
    cases = [
        (STATUS_ROUTE, "/batches/nope/status", {}, AUTH, 404),
        (STATUS_ROUTE, f"/batches/{'x' * 300}/status", {}, AUTH, 400),
        (STATUS_ROUTE, f"/batches/{FIXTURE_BATCH}/status", {}, {}, 401),
        (STATUS_ROUTE, f"/batches/{FIXTURE_BATCH}/status", {}, {**AUTH, "X-Internal-API-Key": "no"}, 401),
        (LIST_ROUTE, f"/batches/user/{FIXTURE_USER}", {"limit": "0"}, AUTH, 400),
        (LIST_ROUTE, f"/batches/user/{FIXTURE_USER}", {}, {**AUTH, "X-User-ID": "other"}, 403),
        (LIST_ROUTE, f"/batches/user/{FIXTURE_USER}", {}, {"X-Service-ID": "x"}, 401),
    ]
    for route, path, params, headers, status in cases:
        response = await api.get(path, params=params, headers=headers)
        assert response.status_code == status, (path, response.text)
        validate(route, status, response.json())


def test_the_schemas_are_strict_enough_to_catch_drift() -> None:
    essay = dict.fromkeys(ERROR_DETAIL_KEYS)
    good_essay = {
        "essay_id": "e1",
        "filename": None,
        "file_upload_id": None,
        "spellcheck_status": "failed",
        "spellcheck_correction_count": None,
        "spellcheck_corrected_text_storage_id": None,
        "spellcheck_error_detail": essay,
        "cj_assessment_status": None,
        "cj_rank": None,
        "cj_score": 1.5,
        "cj_assessment_error_detail": None,
        "last_updated": "2025-08-01T12:00:00",
    }
    good = {
        "batch_id": "b",
        "user_id": "u",
        "overall_status": "processing",
        "essay_count": 1,
        "completed_essay_count": 0,
        "failed_essay_count": 0,
        "requested_pipeline": None,
        "current_phase": "spellcheck",
        "essays": [good_essay],
        "created_at": "2025-08-01T12:00:00.000001",
        "last_updated": "2025-08-01T12:00:00",
        "processing_started_at": None,
        "processing_completed_at": None,
        "assignment_id": None,
        "student_prompt_ref": None,
    }
    validate(STATUS_ROUTE, 200, good)

    def changed(path: list[Any], value: Any) -> dict[str, Any]:
        body = copy.deepcopy(good)
        target: Any = body
        for step in path[:-1]:
            target = target[step]
        target[path[-1]] = value
        return body

    assert invalid(STATUS_ROUTE, 200, changed(["overall_status"], "COMPLETED"))  # gen 1 API enum
    assert invalid(STATUS_ROUTE, 200, changed(["current_phase"], "SPELLCHECK"))  # gen 1's constant
    assert invalid(STATUS_ROUTE, 200, changed(["created_at"], "2025-08-01T12:00:00+00:00"))  # zone
    assert invalid(STATUS_ROUTE, 200, changed(["created_at"], "2025-08-01T12:00:00.1"))
    assert invalid(STATUS_ROUTE, 200, changed(["essay_count"], "1"))
    assert invalid(STATUS_ROUTE, 200, changed(["essays", 0, "cj_rank"], 1.5))
    assert invalid(STATUS_ROUTE, 200, changed(["essays", 0, "spellcheck_status"], "spellchecked_success"))
    assert invalid(STATUS_ROUTE, 200, changed(["essays", 0, "extra"], 1))
    assert invalid(STATUS_ROUTE, 200, {k: v for k, v in good.items() if k != "assignment_id"})
    detail = dict(essay)
    del detail["span_id"]
    assert invalid(STATUS_ROUTE, 200, changed(["essays", 0, "spellcheck_error_detail"], detail))


@pytest.mark.parametrize("route", [STATUS_ROUTE, LIST_ROUTE])
def test_every_declared_error_status_has_the_error_schema(route: str) -> None:
    responses = document()["paths"][route]["get"]["responses"]
    for status, response in responses.items():
        if status.startswith(("4", "5")):
            assert response["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorResponse"}
    assert "content" not in responses["304"]
