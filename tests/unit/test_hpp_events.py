"""hpp_events, the consumers' models (packages/hpp-tracker-events): the tracker's events as the
publisher emits them come out typed, whatever carries them; anything else is told apart as not the
tracker's or broken; the token stays a secret; and the package needs nothing of the tracker."""

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aws_lambda_powertools.utilities.data_classes.dynamo_db_stream_event import DynamoDBRecord
from hypothesis import given
from hypothesis import strategies as st

from hpp_core import publishing
from hpp_events import (
    COMPLETED,
    DEFAULT_SOURCE,
    SCHEMA_VERSION,
    STATUS_CHANGED,
    BrokenTrackerEvent,
    NotATrackerEvent,
    SessionCompleted,
    SessionStatusChanged,
    parse_event,
)
from tests.support.event_schemas import envelope_of
from tests.support.lambda_runtime import load_event

PACKAGE_DIR = Path(__file__).resolve().parents[2] / "packages" / "hpp-tracker-events"
TOKEN = "a1a8f727-2756-6058-bd3c-40069be0994b"


def published(sample: str) -> dict[str, dict[str, Any]]:
    """The envelopes of the events a sample stream record publishes, by detail type."""
    record = DynamoDBRecord(load_event(f"publisher/{sample}")["Records"][0])
    return {
        event.detail_type: envelope_of(event.detail_type, json.loads(event.detail_json()))
        for event in publishing.events_for_record(record)
    }


KP = published("completed_authorization_token")
ORDER = published("insert_completed_order_id")[COMPLETED]


def test_the_names_are_the_publishers() -> None:
    assert (STATUS_CHANGED, COMPLETED, SCHEMA_VERSION) == (
        publishing.STATUS_CHANGED,
        publishing.COMPLETED,
        publishing.SCHEMA_VERSION,
    )
    assert publishing.PublisherSettings.model_fields["event_source"].default == DEFAULT_SOURCE


def test_a_completion_comes_out_typed_with_the_token_kept_secret() -> None:
    event = parse_event(KP[COMPLETED])
    assert isinstance(event, SessionCompleted)
    detail = event.detail
    assert detail.session_id == "39a1c773-bafd-754d-af1f-b30c592f1267"
    assert detail.updated_at == datetime(2019, 5, 13, 14, 54, 4, 675000, tzinfo=UTC)
    assert detail.authorization_token is not None
    assert detail.authorization_token.get_secret_value() == TOKEN
    shown = [repr(event), str(event), event.model_dump_json(), json.dumps(detail.model_dump(mode="json"))]
    assert not [text for text in shown if TOKEN in text]
    # Everything else reads back exactly as published.
    dumped = detail.model_dump(mode="json", exclude_none=True, exclude={"authorization_token"})
    assert dumped == {k: v for k, v in KP[COMPLETED]["detail"].items() if k != "authorization_token"}


def test_an_order_completion_and_a_status_change_come_out_as_their_types() -> None:
    order = parse_event(ORDER, SessionCompleted)
    assert (order.detail.order_id, order.detail.klarna_reference, order.detail.authorization_token) == (
        ORDER["detail"]["order_id"],
        ORDER["detail"]["klarna_reference"],
        None,
    )
    change = parse_event(KP[STATUS_CHANGED])
    assert isinstance(change, SessionStatusChanged)
    assert (change.detail.previous_status, change.detail.status) == ("IN_PROGRESS", "COMPLETED")
    assert change.detail.model_dump(mode="json") == KP[STATUS_CHANGED]["detail"]


def test_what_carries_the_event_does_not_matter() -> None:
    """A rule's Lambda event (a dict), an SQS message body (JSON text), the same as bytes; a replay."""
    envelope = KP[COMPLETED]
    replayed = {**envelope, "replay-name": "orders-2019-05-13"}
    for carried in (envelope, json.dumps(envelope), json.dumps(envelope).encode()):
        assert parse_event(carried, SessionCompleted).detail.event_id == envelope["detail"]["event_id"]
    assert parse_event(replayed).replay_name == "orders-2019-05-13"


def test_the_configured_source_is_the_one_accepted() -> None:
    ours = {**KP[COMPLETED], "source": "com.example.payments"}
    assert parse_event(ours, source="com.example.payments").source == "com.example.payments"
    with pytest.raises(NotATrackerEvent, match=r"source 'com\.example\.payments' is not 'hpp-tracker'"):
        parse_event(ours)


@pytest.mark.parametrize(
    ("event", "problem"),
    [
        ({**KP[COMPLETED], "source": "aws.s3"}, "source 'aws.s3'"),
        ({**KP[COMPLETED], "detail-type": "Object Created"}, "detail-type 'Object Created'"),
        ("{not json", "not an EventBridge event"),
        ("[]", "not an EventBridge event"),
        (b"\xff\xfe", "not an EventBridge event"),
        ({k: v for k, v in KP[COMPLETED].items() if k != "source"}, "source: Field required"),
        ({"Records": [{"body": "{}"}]}, "not an EventBridge event"),  # an SQS event, not its body
    ],
)
def test_what_is_not_the_trackers_is_told_apart(event: Any, problem: str) -> None:
    with pytest.raises(NotATrackerEvent, match=problem):
        parse_event(event)


def test_a_status_change_is_not_a_completion_when_only_completions_are_wanted() -> None:
    with pytest.raises(NotATrackerEvent, match="detail-type 'HPP Session Status Changed' is not HPP Session"):
        parse_event(KP[STATUS_CHANGED], SessionCompleted)


@given(st.text(max_size=40).map(lambda text: f"tok-{text}"))
def test_a_broken_detail_names_the_field_never_a_value(token: str) -> None:
    """A tracker event that breaks its schema (here a second way to pay, and a wrong status): the error
    says where, and holds neither the token nor the other values."""
    detail = {**KP[COMPLETED]["detail"], "authorization_token": token, "order_id": token, "status": token}
    with pytest.raises(BrokenTrackerEvent) as caught:
        parse_event({**KP[COMPLETED], "detail": detail})
    assert "detail.status" in str(caught.value)
    assert token not in str(caught.value)


def test_the_package_imports_nothing_of_the_tracker() -> None:
    """What a consumer gets: the package alone (and its two dependencies), no hpp_core, no layer."""
    script = (
        "import sys, hpp_events; "
        "assert not [m for m in sys.modules if m.startswith(('hpp_core', 'tests', 'local'))], sys.modules; "
        "print(hpp_events.__file__)"
    )
    result = subprocess.run(
        [sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(PACKAGE_DIR)!r}); {script}"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(PACKAGE_DIR / "hpp_events" / "__init__.py")
