"""schemas/*.json say what consumers may rely on: what the publisher emits conforms (here, and for every
entry in the publisher's tests), and what breaks the contract does not."""

import json
from typing import Any

import pytest
from aws_lambda_powertools.utilities.data_classes.dynamo_db_stream_event import DynamoDBRecord

from hpp_core.publishing import COMPLETED, STATUS_CHANGED, events_for_record
from tests.support.event_schemas import schema_errors
from tests.support.lambda_runtime import load_event


def emitted(sample: str) -> dict[str, dict[str, Any]]:
    """The details a sample record publishes, by detail type."""
    record = DynamoDBRecord(load_event(f"publisher/{sample}")["Records"][0])
    return {event.detail_type: json.loads(event.detail_json()) for event in events_for_record(record)}


@pytest.mark.parametrize(
    "sample",
    ["insert_waiting", "status_changed", "completed_authorization_token", "insert_completed_order_id"],
)
def test_what_the_publisher_emits_conforms(sample: str) -> None:
    for detail_type, detail in emitted(sample).items():
        assert schema_errors(detail_type, detail) == []


STATUS = emitted("status_changed")[STATUS_CHANGED]
KP = emitted("completed_authorization_token")[COMPLETED]
ORDER = emitted("insert_completed_order_id")[COMPLETED]


@pytest.mark.parametrize(
    ("detail_type", "detail", "why"),
    [
        (STATUS_CHANGED, {**STATUS, "authorization_token": "tok"}, "never the token"),
        (
            STATUS_CHANGED,
            {k: v for k, v in STATUS.items() if k != "previous_status"},
            "previous_status required",
        ),
        (STATUS_CHANGED, {**STATUS, "schema_version": "2"}, "another version"),
        (STATUS_CHANGED, {**STATUS, "event_id": "not-a-uuid"}, "event_id is a UUID"),
        (
            STATUS_CHANGED,
            {**STATUS, "updated_at": "2019-05-13T14:52:10Z"},
            "the stored form has milliseconds",
        ),
        (STATUS_CHANGED, {**STATUS, "updated_at": "2019-13-45T14:52:10.120Z"}, "not a date"),
        (COMPLETED, {**KP, "order_id": "o", "klarna_reference": "r"}, "token and order"),
        (COMPLETED, {k: v for k, v in KP.items() if k != "authorization_token"}, "neither"),
        (COMPLETED, {k: v for k, v in ORDER.items() if k != "klarna_reference"}, "order without reference"),
        (COMPLETED, {**KP, "authorization_token": ""}, "empty token"),
        (COMPLETED, {**KP, "status": "IN_PROGRESS"}, "only COMPLETED"),
        (COMPLETED, {**KP, "previous_status": "IN_PROGRESS"}, "no other fields"),
    ],
)
def test_what_breaks_the_contract_is_refused(detail_type: str, detail: dict[str, Any], why: str) -> None:
    assert schema_errors(detail_type, detail), why
