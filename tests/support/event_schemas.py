"""The contract of the events on the bus in its three forms, for checking what is sent and received:
the JSON Schemas (schemas/*.json, the source), the schema registry's OpenAPI documents generated from
them (schemas/registry.py, the whole event), and the consumers' pydantic models (hpp_events)."""

import uuid
from collections.abc import Mapping
from functools import cache
from typing import Any

from jsonschema import Draft202012Validator
from openapi_schema_validator import OAS30Validator, oas30_format_checker

from hpp_events import DEFAULT_SOURCE, BrokenTrackerEvent, NotATrackerEvent, parse_event
from schemas.registry import registry_document, source_schema


@cache
def validator(detail_type: str) -> Draft202012Validator:
    schema = source_schema(detail_type)
    Draft202012Validator.check_schema(schema)
    # With the format checker, "uuid" and "date-time" are checked too, not only annotations.
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


def schema_errors(detail_type: str, detail: Mapping[str, Any]) -> list[str]:
    """Every way `detail` breaks its detail type's schema (empty when it conforms)."""
    return [
        f"{'/'.join(map(str, error.absolute_path)) or '(detail)'}: {error.message}"
        for error in validator(detail_type).iter_errors(dict(detail))
    ]


def assert_conforms(detail_type: str, detail: Mapping[str, Any]) -> None:
    errors = schema_errors(detail_type, detail)
    assert not errors, f"{detail_type} detail breaks its schema: {errors}"


@cache
def registry_validator(detail_type: str) -> OAS30Validator:
    """The registry document's `AWSEvent` (the whole event), as an OpenAPI 3.0 validator would apply it."""
    document = registry_document(detail_type, DEFAULT_SOURCE)
    schema = {"$ref": "#/components/schemas/AWSEvent", "components": document["components"]}
    return OAS30Validator(schema, format_checker=oas30_format_checker)


def registry_errors(detail_type: str, envelope: Mapping[str, Any]) -> list[str]:
    """Every way a whole event breaks its registry schema (empty when it conforms)."""
    return [
        f"{'/'.join(map(str, error.absolute_path)) or '(event)'}: {error.message}"
        for error in registry_validator(detail_type).iter_errors(dict(envelope))
    ]


def model_errors(envelope: Mapping[str, Any], source: str = DEFAULT_SOURCE) -> list[str]:
    """Why the consumers' models refuse a whole event (empty when `parse_event` takes it)."""
    try:
        parse_event(envelope, source=source)
    except (NotATrackerEvent, BrokenTrackerEvent) as exc:
        return [str(exc)]
    return []


def envelope_of(detail_type: str, detail: Mapping[str, Any]) -> dict[str, Any]:
    """A detail in the envelope EventBridge delivers it in (for unit tests; integration tests read the
    envelopes EventBridge's emulator really delivered)."""
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": detail_type,
        "source": DEFAULT_SOURCE,
        "account": "123456789012",
        "time": "2019-05-13T14:54:04Z",
        "region": "eu-west-1",
        "resources": [],
        "detail": dict(detail),
    }
