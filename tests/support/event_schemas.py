"""The JSON Schemas of the events the tracker publishes (schemas/*.json), for checking what is sent."""

import json
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

SCHEMAS_DIR = Path(__file__).resolve().parents[2] / "schemas"
SCHEMA_FILES = {
    "HPP Session Status Changed": "hpp-session-status-changed.json",
    "HPP Session Completed": "hpp-session-completed.json",
}


@cache
def validator(detail_type: str) -> Draft202012Validator:
    schema = json.loads((SCHEMAS_DIR / SCHEMA_FILES[detail_type]).read_text())
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
