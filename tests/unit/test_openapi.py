"""openapi.yaml, the routes the code serves and the API events of template.yaml describe the same API."""

import importlib
import json
import re
import sys
from types import ModuleType
from typing import Any

import pytest
from openapi_spec_validator import validate

from hpp_core.settings import clear_settings_cache
from tests.support.lambda_runtime import EVENTS_DIR, load_event
from tests.support.openapi import load_spec, operations, request_errors
from tests.support.template import load_template

# Every module that serves API routes with a Powertools resolver `app` (functions/<name>/<name>.py); the
# callback serves its one route without one (its METHOD and PATH).
API_FUNCTIONS = ("sessions",)


def function_module(name: str, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """Import a function module under a placeholder environment (nothing is called at import)."""
    monkeypatch.setenv("TABLE_NAME", "sessions-openapi-test")
    monkeypatch.setenv("STATE_TABLE_NAME", "state-openapi-test")
    monkeypatch.setenv("IDEMPOTENCY_TABLE_NAME", "idempotency-openapi-test")
    monkeypatch.setenv("KLARNA_API_URL", "https://api.playground.klarna.com")
    monkeypatch.setenv(
        "KLARNA_CREDENTIALS_SECRET_ARN", "arn:aws:secretsmanager:eu-west-1:123456789012:secret:k"
    )
    clear_settings_cache()
    return importlib.reload(sys.modules[name]) if name in sys.modules else importlib.import_module(name)


def served_routes(monkeypatch: pytest.MonkeyPatch) -> set[tuple[str, str]]:
    """(METHOD, path) of every route the functions serve: the resolvers' from Powertools' own description."""
    callback = function_module("callback", monkeypatch)
    routes = {(callback.METHOD, callback.PATH)}
    for name in API_FUNCTIONS:
        schema = function_module(name, monkeypatch).app.get_openapi_schema()
        for path, item in (schema.paths or {}).items():
            for method, operation in item.model_dump(exclude_none=True).items():
                if method in ("get", "put", "post", "delete", "patch") and operation:
                    routes.add((method.upper(), path))
    return routes


def template_api_events() -> dict[tuple[str, str], dict[str, Any]]:
    """(METHOD, path) -> the event's Properties, for every Api event of every function in template.yaml."""
    events = {}
    for resource in load_template()["Resources"].values():
        if resource.get("Type") != "AWS::Serverless::Function":
            continue
        for event in (resource["Properties"].get("Events") or {}).values():
            if event["Type"] == "Api":
                props = event["Properties"]
                events[(props["Method"].upper(), props["Path"])] = props
    return events


def test_the_spec_is_valid_openapi() -> None:
    validate(load_spec())


def test_spec_code_and_template_serve_the_same_routes(monkeypatch: pytest.MonkeyPatch) -> None:
    in_spec = set(operations())
    served = served_routes(monkeypatch)
    in_template = set(template_api_events())
    assert in_spec == served == in_template
    assert ("POST", "/sessions") in in_spec and ("DELETE", "/sessions/{session_id}") in in_spec


def test_only_the_callback_is_public_everywhere() -> None:
    spec = load_spec()
    assert spec["security"] == [{"sigv4": []}], "IAM unless an operation says otherwise"
    public_in_spec = {route for route, op in operations().items() if op.get("security") == []}
    events = template_api_events()
    public_in_template = {
        route for route, props in events.items() if (props.get("Auth") or {}).get("Authorizer") == "NONE"
    }
    assert public_in_spec == public_in_template == {("POST", "/callbacks/hpp")}
    api = load_template()["Resources"]["Api"]["Properties"]
    assert api["Auth"]["DefaultAuthorizer"] == "AWS_IAM"


def test_path_parameters_are_validated_like_the_code_validates_them() -> None:
    from hpp_core.models import SESSION_ID_PATTERN

    assert load_spec()["components"]["schemas"]["SessionId"]["pattern"] == SESSION_ID_PATTERN


@pytest.mark.parametrize(
    ("sample", "valid"),
    [
        ("create", True),
        ("create_minimal", True),
        ("create_with_status_update", False),
        ("create_missing_payment_session_url", False),
        ("create_wrong_types", False),
        ("create_http_payment_session_url", False),
    ],
)
def test_sample_create_bodies_against_the_spec(sample: str, valid: bool) -> None:
    body = json.loads(load_event(f"sessions/{sample}")["body"])
    assert (request_errors("POST", "/sessions", body) == []) is valid


@pytest.mark.parametrize(
    ("sample", "valid"),
    [("distribute_email", True), ("distribute_sms", True), ("distribute_invalid_contact", False)],
)
def test_sample_distribution_bodies_against_the_spec(sample: str, valid: bool) -> None:
    body = json.loads(load_event(f"sessions/{sample}")["body"])
    assert (request_errors("POST", "/sessions/{session_id}/distribution", body) == []) is valid


@pytest.mark.parametrize(
    "sample",
    [
        "in_progress",
        "completed_authorization_token",
        "completed_order_id",
        "unknown_status",
        "no_session_body",
    ],
)
def test_sample_callback_bodies_against_the_spec(sample: str) -> None:
    body = json.loads(load_event(f"callback/{sample}")["body"])
    assert request_errors("POST", "/callbacks/hpp", body) == []


def test_every_sample_event_targets_a_documented_route() -> None:
    documented = {(method, re.sub(r"\{\w+\}", "{}", path)) for method, path in operations()}
    for path in sorted(EVENTS_DIR.glob("*/*.json")):
        event = json.loads(path.read_text())
        if "httpMethod" not in event:  # a stream batch or a schedule tick: no route to document
            continue
        resource = re.sub(r"\{\w+\}", "{}", event["resource"])
        assert (event["httpMethod"], resource) in documented, path.name
