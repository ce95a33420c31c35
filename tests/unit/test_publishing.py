"""Which events a stream record publishes, and what they say (docs/events.md).

Records are the events/publisher/ samples (real DynamoDB stream records, as Lambda delivers them) or
variations of them; no I/O.
"""

import copy
import json
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from aws_lambda_powertools.utilities.data_classes.dynamo_db_stream_event import DynamoDBRecord

from hpp_core.publishing import (
    COMPLETED,
    SCHEMA_VERSION,
    STATUS_CHANGED,
    BusEvent,
    PublisherSettings,
    UnpublishableRecord,
    event_id,
    events_for_record,
)
from hpp_core.settings import ConfigurationError
from tests.support.event_schemas import assert_conforms
from tests.support.lambda_runtime import load_event

SID = "39a1c773-bafd-754d-af1f-b30c592f1267"
TOKEN = "a1a8f727-2756-6058-bd3c-40069be0994b"
EXPIRES = "2019-05-15T13:51:43.507Z"


def sample(name: str, index: int = 0) -> dict[str, Any]:
    return load_event(f"publisher/{name}")["Records"][index]


def events(record: dict[str, Any]) -> list[BusEvent]:
    published = events_for_record(DynamoDBRecord(record))
    for event in published:
        assert_conforms(event.detail_type, json.loads(event.detail_json()))
    return published


def details(published: list[BusEvent]) -> list[tuple[str, dict[str, Any]]]:
    return [(event.detail_type, json.loads(event.detail_json())) for event in published]


def set_status(record: dict[str, Any], image: str, status: str) -> dict[str, Any]:
    changed = copy.deepcopy(record)
    changed["dynamodb"][image]["status"] = {"S": status}
    return changed


def test_a_status_change_publishes_one_status_changed_event() -> None:
    published = events(sample("status_changed"))
    assert details(published) == [
        (
            STATUS_CHANGED,
            {
                "event_id": event_id(STATUS_CHANGED, SID, "IN_PROGRESS", 1557759130120),
                "schema_version": SCHEMA_VERSION,
                "session_id": SID,
                "status": "IN_PROGRESS",
                "previous_status": "WAITING",
                "updated_at": "2019-05-13T14:52:10.120Z",
                "expires_at": EXPIRES,
            },
        )
    ]
    # The event's time is when DynamoDB stored the change, not when it is published.
    assert published[0].time == datetime(2019, 5, 13, 14, 52, 10, tzinfo=UTC)


def test_a_new_row_publishes_its_status_with_no_previous_status() -> None:
    [(detail_type, detail)] = details(events(sample("insert_waiting")))
    assert detail_type == STATUS_CHANGED
    assert (detail["status"], detail["previous_status"]) == ("WAITING", None)


def test_completion_publishes_status_changed_without_the_token_and_completed_with_it() -> None:
    published = events(sample("completed_authorization_token"))
    assert [event.detail_type for event in published] == [STATUS_CHANGED, COMPLETED]
    status_changed, completed = (json.loads(event.detail_json()) for event in published)
    assert TOKEN not in json.dumps(status_changed)
    assert (status_changed["status"], status_changed["previous_status"]) == ("COMPLETED", "IN_PROGRESS")
    assert completed == {
        "event_id": event_id(COMPLETED, SID, "COMPLETED", 1557759244675),
        "schema_version": SCHEMA_VERSION,
        "session_id": SID,
        "status": "COMPLETED",
        "updated_at": "2019-05-13T14:54:04.675Z",
        "expires_at": EXPIRES,
        "authorization_token": TOKEN,
    }


def test_the_token_shows_only_in_the_completed_detail_json() -> None:
    published = events(sample("completed_authorization_token"))
    for event in published:
        assert TOKEN not in repr(event)
        assert TOKEN not in str(event)
        assert TOKEN not in repr(event.detail)
    assert TOKEN in published[1].detail_json()


def test_a_session_first_seen_completed_with_an_order_publishes_both_events() -> None:
    published = details(events(sample("insert_completed_order_id")))
    assert [detail_type for detail_type, _ in published] == [STATUS_CHANGED, COMPLETED]
    (_, status_changed), (_, completed) = published
    assert (status_changed["status"], status_changed["previous_status"]) == ("COMPLETED", None)
    assert completed["order_id"] == "f3392f8b-6116-4073-ab96-e330819e2c07"
    assert completed["klarna_reference"] == "K4MADNY-1"
    assert "authorization_token" not in completed


@pytest.mark.parametrize("name", ["no_status_change", "ttl_remove"])
def test_records_without_a_status_change_publish_nothing(name: str) -> None:
    assert events(sample(name)) == []


def test_a_status_klarna_adds_later_is_published_as_stored() -> None:
    [(detail_type, detail)] = details(events(sample("unknown_status")))
    assert detail_type == STATUS_CHANGED
    assert (detail["status"], detail["previous_status"]) == ("PAUSED_BY_CONSUMER", "IN_PROGRESS")


def test_every_transition_between_any_two_statuses() -> None:
    """Status Changed exactly when the status differs; Completed exactly when it becomes COMPLETED."""
    base = sample("status_changed")
    statuses = ["WAITING", "IN_PROGRESS", "FAILED", "BACK", "ERROR", "CANCELLED", "DISABLED", "EXPIRED",
                "MANUAL_ID_CHECK", "PAUSED_BY_CONSUMER"]  # fmt: skip
    for old in statuses:
        for new in statuses:
            record = set_status(set_status(base, "OldImage", old), "NewImage", new)
            expected = [] if old == new else [STATUS_CHANGED]
            assert [event.detail_type for event in events(record)] == expected, (old, new)
    completing = sample("completed_authorization_token")
    for old in statuses:
        published = events(set_status(completing, "OldImage", old))
        assert [event.detail_type for event in published] == [STATUS_CHANGED, COMPLETED], old
    assert events(set_status(completing, "OldImage", "COMPLETED")) == []


def test_the_same_transition_delivered_again_gets_the_same_event_ids() -> None:
    first = events(sample("completed_authorization_token"))
    # Lambda redelivers the same record; a replayed stream would give it another eventID and number.
    again = copy.deepcopy(sample("completed_authorization_token"))
    again["eventID"] = uuid.uuid4().hex
    again["dynamodb"]["SequenceNumber"] = "4421584500000000099999999999"
    again["dynamodb"]["ApproximateCreationDateTime"] = 1557760000.0
    second = events(again)
    assert [event.event_id for event in first] == [event.event_id for event in second]
    assert len({event.event_id for event in first}) == 2  # one per detail type
    assert all(uuid.UUID(event.event_id).version == 5 for event in first)


# Event ids are a public contract (consumers deduplicate on them): every sample's ids, as published since
# the first release. A change here changes the ids of events already on the bus.
SAMPLE_EVENT_IDS = {
    "insert_waiting": [(STATUS_CHANGED, "f0a1f040-0012-50a0-bb25-bf1906222df0")],
    "status_changed": [(STATUS_CHANGED, "de6bbf2c-5526-5418-8e42-b9ea04c0bdf7")],
    "no_status_change": [],
    "completed_authorization_token": [
        (STATUS_CHANGED, "471a56bb-6dca-5802-8c03-508597a7c0f7"),
        (COMPLETED, "522b3e5b-100b-5284-89e1-a24b0122c225"),
    ],
    "insert_completed_order_id": [
        (STATUS_CHANGED, "53c2347d-2e2b-5f54-82d5-965b2ff4cf87"),
        (COMPLETED, "d3b1a376-740a-58b1-b4d6-d8aeacf306c8"),
    ],
    "unknown_status": [(STATUS_CHANGED, "ed986bf2-5a76-58e2-9684-a7e23edbba94")],
    "ttl_remove": [],
}
# batch.json: the samples above in stream order, and session f47ac10b's INSERT (IN_PROGRESS).
BATCH_ORDER = ["insert_waiting", "status_changed", "no_status_change", "completed_authorization_token",
               "insert_completed_order_id", None, "unknown_status", "ttl_remove"]  # fmt: skip
F47_INSERT_ID = "e115d198-441f-5818-b9a3-2531e7092df9"


def ids(record: dict[str, Any]) -> list[tuple[str, str]]:
    return [(event.detail_type, event.event_id) for event in events(record)]


@pytest.mark.parametrize("name", sorted(SAMPLE_EVENT_IDS))
def test_every_sample_publishes_its_published_event_ids(name: str) -> None:
    assert ids(sample(name)) == SAMPLE_EVENT_IDS[name]


def test_the_batch_sample_publishes_the_same_ids_record_by_record() -> None:
    records = load_event("publisher/batch")["Records"]
    expected = [SAMPLE_EVENT_IDS[name] if name else [(STATUS_CHANGED, F47_INSERT_ID)] for name in BATCH_ORDER]
    assert [ids(record) for record in records] == expected


def test_a_row_without_the_ordering_key_keeps_the_id_of_its_updated_at() -> None:
    """Rows written without `updated_at_ms` (absent or NULL) are ordered, and so identified, by their
    `updated_at`: the same id as the sample's row, which has both at the same instant."""
    for absent in (None, {"NULL": True}):
        record = copy.deepcopy(sample("status_changed"))
        if absent is None:
            del record["dynamodb"]["NewImage"]["updated_at_ms"]
        else:
            record["dynamodb"]["NewImage"]["updated_at_ms"] = absent
        assert ids(record) == SAMPLE_EVENT_IDS["status_changed"]


def test_another_transition_gets_another_event_id() -> None:
    record = sample("status_changed")
    later = copy.deepcopy(record)
    later["dynamodb"]["NewImage"]["updated_at"] = {"S": "2019-05-13T14:52:10.121Z"}
    later["dynamodb"]["NewImage"]["updated_at_ms"] = {"N": "1557759130121"}
    other_session = copy.deepcopy(record)
    other_session["dynamodb"]["NewImage"]["session_id"] = {"S": "another-session"}
    ids = {events(r)[0].event_id for r in (record, later, other_session)}
    assert len(ids) == 3


def test_timestamps_are_published_in_the_stored_form_whatever_wrote_the_row() -> None:
    record = copy.deepcopy(sample("status_changed"))
    image = record["dynamodb"]["NewImage"]
    del image["updated_at_ms"]  # a row written without the ordering key
    image["updated_at"] = {"S": "2019-05-13T16:52:10.12+02:00"}
    image["expires_at"] = {"S": "2019-05-15T13:51:43Z"}
    [event] = events(record)
    detail = json.loads(event.detail_json())
    assert (detail["updated_at"], detail["expires_at"]) == (
        "2019-05-13T14:52:10.120Z",
        "2019-05-15T13:51:43.000Z",
    )
    assert detail["event_id"] == event_id(STATUS_CHANGED, SID, "IN_PROGRESS", 1557759130120)


def test_a_row_without_expires_at_publishes_null() -> None:
    record = copy.deepcopy(sample("status_changed"))
    del record["dynamodb"]["NewImage"]["expires_at"]
    [event] = events(record)
    assert json.loads(event.detail_json())["expires_at"] is None


def test_a_malformed_row_is_refused_naming_the_session_and_the_fields_never_the_values() -> None:
    with pytest.raises(UnpublishableRecord) as caught:
        events_for_record(DynamoDBRecord(sample("malformed_image")))
    message = str(caught.value)
    assert SID in message
    assert "new.status" in message
    assert "new.updated_at" in message
    assert "yesterday" not in message
    assert "'3'" not in message and '"3"' not in message


def test_an_image_is_read_as_the_repository_reads_the_row() -> None:
    """One model of a session: an image the repository could not read as a session (here a bookkeeping
    attribute that is no timestamp) is refused too, naming the field, rather than published from part."""
    record = copy.deepcopy(sample("completed_authorization_token"))
    record["dynamodb"]["NewImage"]["recorded_at"] = {"S": "last tuesday"}
    with pytest.raises(UnpublishableRecord, match=r"new\.recorded_at") as caught:
        events_for_record(DynamoDBRecord(record))
    assert "tuesday" not in str(caught.value)
    assert TOKEN not in str(caught.value)


def test_a_token_of_the_wrong_type_is_refused_without_echoing_it() -> None:
    record = copy.deepcopy(sample("completed_authorization_token"))
    record["dynamodb"]["NewImage"]["authorization_token"] = {"N": "123456789"}
    with pytest.raises(UnpublishableRecord) as caught:
        events_for_record(DynamoDBRecord(record))
    assert "authorization_token" in str(caught.value)
    assert "123456789" not in str(caught.value)


def test_an_unreadable_attribute_is_refused() -> None:
    record = copy.deepcopy(sample("status_changed"))
    record["dynamodb"]["NewImage"]["status"] = {"XX": "IN_PROGRESS"}
    with pytest.raises(UnpublishableRecord, match=SID):
        events_for_record(DynamoDBRecord(record))


def test_an_image_without_a_status_is_no_session_state() -> None:
    # moto streams the key alone first when an update creates a row; the tracker never writes one.
    record = copy.deepcopy(sample("insert_waiting"))
    record["dynamodb"]["NewImage"] = {"session_id": {"S": SID}}
    assert events(record) == []
    modify = copy.deepcopy(sample("status_changed"))
    modify["dynamodb"]["OldImage"] = {"session_id": {"S": SID}}
    [(_, detail)] = details(events(modify))
    assert (detail["previous_status"], detail["status"]) == (None, "IN_PROGRESS")


def test_an_unknown_event_name_is_refused() -> None:
    record = copy.deepcopy(sample("status_changed"))
    record["eventName"] = "UPSERT"
    with pytest.raises(UnpublishableRecord, match="event_name"):
        events_for_record(DynamoDBRecord(record))


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"authorization_token": None}, "neither"),
        ({"authorization_token": {"S": ""}}, "neither"),
        ({"order_id": {"S": "order-1"}, "klarna_reference": {"S": "K-1"}}, "both"),
        ({"authorization_token": None, "order_id": {"S": "order-1"}}, "no klarna_reference"),
    ],
)
def test_a_completed_row_must_carry_exactly_one_way_to_act_on_it(
    change: dict[str, Any], problem: str
) -> None:
    record = copy.deepcopy(sample("completed_authorization_token"))
    image = record["dynamodb"]["NewImage"]
    for name, value in change.items():
        if value is None:
            image.pop(name, None)
        else:
            image[name] = value
    with pytest.raises(UnpublishableRecord, match=problem) as caught:
        events_for_record(DynamoDBRecord(record))
    assert TOKEN not in str(caught.value)


def test_the_completed_without_token_sample_is_unpublishable() -> None:
    with pytest.raises(UnpublishableRecord, match="neither"):
        events_for_record(DynamoDBRecord(sample("completed_without_token")))


# ------------------------------------------------------------------------------------------ settings


def test_publisher_settings_need_only_the_bus() -> None:
    settings = PublisherSettings.from_environment({"EVENT_BUS_NAME": "hpp-tracker-events"})
    assert (settings.event_bus_name, settings.event_source) == ("hpp-tracker-events", "hpp-tracker")


def test_publisher_settings_name_a_missing_bus() -> None:
    with pytest.raises(ConfigurationError, match="EVENT_BUS_NAME"):
        PublisherSettings.from_environment({"TABLE_NAME": "sessions"})


@pytest.mark.parametrize("source", ["aws.hpp", "has space", ""])
def test_publisher_settings_refuse_a_source_eventbridge_would(source: str) -> None:
    with pytest.raises(ConfigurationError, match="EVENT_SOURCE"):
        PublisherSettings.from_environment({"EVENT_BUS_NAME": "bus", "EVENT_SOURCE": source})
