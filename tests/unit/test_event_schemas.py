"""The contract of the events says what consumers may rely on, in three forms that must agree: the JSON
Schemas (schemas/*.json), the registry's OpenAPI documents generated from them (the whole event), and
the consumers' pydantic models (hpp_events). What the publisher emits conforms to all three (here, and
for every entry in the publisher's tests), what breaks the contract is refused by all three, and on
any detail, generated or mutated, the three give the same verdict."""

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from aws_lambda_powertools.utilities.data_classes.dynamo_db_stream_event import DynamoDBRecord
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from hpp_core.models import TrackedSession
from hpp_core.publishing import COMPLETED, STATUS_CHANGED, events_for_record, events_for_session
from hpp_core.statuses import Status
from hpp_core.timestamps import to_epoch_millis
from tests.support.event_schemas import envelope_of, model_errors, registry_errors, schema_errors
from tests.support.lambda_runtime import load_event


def emitted(sample: str) -> dict[str, dict[str, Any]]:
    """The details a sample record publishes, by detail type."""
    record = DynamoDBRecord(load_event(f"publisher/{sample}")["Records"][0])
    return {event.detail_type: json.loads(event.detail_json()) for event in events_for_record(record)}


def verdicts(detail_type: str, detail: dict[str, Any]) -> dict[str, bool]:
    """Whether each form of the contract accepts `detail` (the registry and the models: in its envelope)."""
    envelope = envelope_of(detail_type, detail)
    return {
        "json schema": not schema_errors(detail_type, detail),
        "registry": not registry_errors(detail_type, envelope),
        "models": not model_errors(envelope),
    }


SAMPLES = ["insert_waiting", "status_changed", "completed_authorization_token", "insert_completed_order_id"]


@pytest.mark.parametrize("sample", SAMPLES)
def test_what_the_publisher_emits_conforms_to_every_form(sample: str) -> None:
    for detail_type, detail in emitted(sample).items():
        envelope = envelope_of(detail_type, detail)
        assert schema_errors(detail_type, detail) == []
        assert registry_errors(detail_type, envelope) == []
        assert model_errors(envelope) == []


STATUS = emitted("status_changed")[STATUS_CHANGED]
KP = emitted("completed_authorization_token")[COMPLETED]
ORDER = emitted("insert_completed_order_id")[COMPLETED]
ALL_ACCEPT = {"json schema": True, "registry": True, "models": True}
ALL_REFUSE = {"json schema": False, "registry": False, "models": False}


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
        (STATUS_CHANGED, {**STATUS, "expires_at": "2019-05-15T13:51:43.507+00:00"}, "Z, not an offset"),
        (STATUS_CHANGED, {**STATUS, "status": ""}, "a status is never empty"),
        (COMPLETED, {**KP, "order_id": "o", "klarna_reference": "r"}, "token and order"),
        (COMPLETED, {k: v for k, v in KP.items() if k != "authorization_token"}, "neither"),
        (COMPLETED, {k: v for k, v in ORDER.items() if k != "klarna_reference"}, "order without reference"),
        (COMPLETED, {**KP, "klarna_reference": "r"}, "token with a reference"),
        (COMPLETED, {**KP, "authorization_token": ""}, "empty token"),
        (COMPLETED, {**KP, "authorization_token": None}, "a null token"),
        (COMPLETED, {**KP, "status": "IN_PROGRESS"}, "only COMPLETED"),
        (COMPLETED, {**KP, "previous_status": "IN_PROGRESS"}, "no other fields"),
        (COMPLETED, {k: v for k, v in KP.items() if k != "expires_at"}, "expires_at is there, maybe null"),
    ],
)
def test_what_breaks_the_contract_is_refused_by_every_form(
    detail_type: str, detail: dict[str, Any], why: str
) -> None:
    assert verdicts(detail_type, detail) == ALL_REFUSE, why


# ------------------------------------------------------------------- generated sessions, then mutated

STATUSES = st.one_of(st.sampled_from([str(status) for status in Status]), st.text(min_size=1, max_size=64))
# Years the stored form writes with four digits (the publisher sees real dates).
MOMENTS = st.datetimes(datetime(2000, 1, 1), datetime(2999, 12, 31), timezones=st.just(UTC))


@st.composite
def published_details(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    """A detail the publisher emits for a generated session (Status Changed, or Completed with a token
    or an order)."""
    completed = draw(st.booleans())
    updated_at = draw(MOMENTS)
    paid_by: dict[str, Any] = {}
    if completed and draw(st.booleans()):
        paid_by = {"authorization_token": SecretStr(draw(st.text(min_size=1, max_size=40)))}
    elif completed:
        paid_by = {"order_id": draw(st.text(min_size=1, max_size=20)), "klarna_reference": "K4MADNY-1"}
    session = TrackedSession(
        session_id=draw(st.text(min_size=1, max_size=40)),
        status=Status.COMPLETED if completed else draw(STATUSES.filter(lambda s: s != Status.COMPLETED)),
        updated_at=updated_at,
        updated_at_ms=to_epoch_millis(updated_at),
        expires_at=draw(st.none() | MOMENTS),
        **paid_by,
    )
    events = events_for_session(session, previous_status=draw(st.none() | STATUSES), time=None)
    event = events[-1] if completed else events[0]
    return event.detail_type, json.loads(event.detail_json())


@given(published_details())
def test_every_form_accepts_what_the_publisher_emits_for_any_session(published: tuple[str, Any]) -> None:
    assert verdicts(*published) == ALL_ACCEPT


# Values a field could wrongly hold (and some it may rightly hold).
SINGLE_VALUES: list[Any] = [
    None, True, False, 0, 1, 1.5, [], {}, "", " ", "1", "2", "COMPLETED", "IN_PROGRESS", "tok",
    "2019-05-13T14:54:04.675Z", "2019-05-13T14:54:04Z", "2019-05-13T14:54:04.675+00:00",
    "2019-05-13 14:54:04.675Z", "2019-02-29T14:54:04.675Z", "2019-05-13T24:00:00.000Z",
    "522b3e5b-100b-5284-89e1-a24b0122c225", "522B3E5B-100B-5284-89E1-A24B0122C225",
    "522b3e5b100b528489e1a24b0122c225", "{522b3e5b-100b-5284-89e1-a24b0122c225}",
]  # fmt: skip
FIELDS = sorted({*STATUS, *KP, *ORDER, "unknown_field"})


def single_changes(detail: dict[str, Any]) -> list[dict[str, Any]]:
    """`detail` with one field left out, or set to one of SINGLE_VALUES: every such change."""
    removed = [{k: v for k, v in detail.items() if k != field} for field in FIELDS if field in detail]
    return removed + [{**detail, field: value} for field in FIELDS for value in SINGLE_VALUES]


def test_the_three_forms_agree_on_every_single_change_of_a_published_detail() -> None:
    disagreements = []
    for detail_type, detail in [(STATUS_CHANGED, STATUS), (COMPLETED, KP), (COMPLETED, ORDER)]:
        for changed in single_changes(detail):
            found = verdicts(detail_type, changed)
            if len(set(found.values())) != 1:
                disagreements.append((detail_type, changed, found))
    assert disagreements == []


# No text with a line break: Python's `re` lets a pattern's `$` match before a final newline, so
# jsonschema accepts "...Z\n" where ECMA-262 (and the models) do not.
TEXT = st.text(alphabet=st.characters(exclude_characters="\n\r"), max_size=12)


@settings(max_examples=300)
@given(published_details(), st.sampled_from(FIELDS), st.one_of(TEXT, st.integers(), st.none()))
def test_the_three_forms_agree_on_any_value_of_any_field(
    published: tuple[str, dict[str, Any]], field: str, value: Any
) -> None:
    detail_type, detail = published
    changed = {**detail, field: value}
    found = verdicts(detail_type, changed)
    assert len(set(found.values())) == 1, f"the forms disagree on {changed}: {found}"
