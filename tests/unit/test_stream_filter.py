"""The publisher's event source mapping exactly as template.yaml writes it: its settings, and its filter
criteria evaluated (moto's EventBridge pattern matcher) against stream records of every transition.

The filter is an optimisation: it must never drop a status change, and the function re-checks what it
lets through. Records are the events/publisher/ samples with their statuses varied; the integration
tests apply the same filter to records from DynamoDB Local's real stream.
"""

import copy
import json
from typing import Any

import pytest
from aws_lambda_powertools.utilities.data_classes.dynamo_db_stream_event import DynamoDBRecord

from hpp_core.publishing import change_from_record, events_for_change
from hpp_core.statuses import Status
from local.emulators.stream_mapping import (
    MAX_FILTERS,
    MAX_PATTERN_LENGTH,
    MappingError,
    StreamFilter,
    StreamMapping,
    records_to_retry,
)
from tests.support.lambda_runtime import load_event
from tests.support.template import Template

TEMPLATE = Template.load()
MAPPING = StreamMapping.from_template(TEMPLATE, "PublisherFunction")
# Every status the tracker knows, and one Klarna might add later.
STATUSES = [status.value for status in Status] + ["PAUSED_BY_CONSUMER"]
# Statuses whose unchanged rewrites (the poller's bookkeeping on sessions resting there) the filter must
# keep away from the function. Final rows are never rewritten (the conditional write refuses).
PRECISELY_FILTERED = {Status.WAITING.value, Status.IN_PROGRESS.value}


def record(old: str | None, new: str | None) -> dict[str, Any]:
    """A stream record as Lambda delivers it: INSERT (no old), MODIFY, or REMOVE (no new)."""
    base = copy.deepcopy(load_event("publisher/status_changed")["Records"][0])
    stream = base["dynamodb"]
    if old is None:
        base["eventName"] = "INSERT"
        del stream["OldImage"]
    else:
        stream["OldImage"]["status"] = {"S": old}
    if new is None:
        base["eventName"] = "REMOVE"
        del stream["NewImage"]
    else:
        stream["NewImage"]["status"] = {"S": new}
        if new == Status.COMPLETED:
            stream["NewImage"]["authorization_token"] = {"S": "a1a8f727-2756-6058-bd3c-40069be0994b"}
    if old is not None and new is not None:
        base["eventName"] = "MODIFY"
    return base


def publishes(stream_record: dict[str, Any]) -> bool:
    return bool(events_for_change(change_from_record(DynamoDBRecord(stream_record))))


# ------------------------------------------------------------------------------- mapping settings


def test_the_mapping_retries_only_what_failed_within_bounds_then_sends_it_to_the_failure_queue() -> None:
    assert MAPPING.stream == {"Fn::GetAtt": ["SessionsTable", "StreamArn"]}
    assert MAPPING.starting_position == "TRIM_HORIZON"
    assert MAPPING.report_batch_item_failures
    assert MAPPING.bisect_batch_on_function_error
    assert 0 <= MAPPING.maximum_retry_attempts <= 10_000  # -1 would retry until the record expires
    assert 60 <= MAPPING.maximum_record_age_seconds <= 3600  # a Completed token is valid 60 minutes
    assert MAPPING.maximum_batching_window_seconds == 0
    resources = TEMPLATE.resources
    queue = MAPPING.on_failure_destination["Fn::GetAtt"][0]
    assert resources[queue]["Type"] == "AWS::SQS::Queue"
    alarms = [r for r in resources.values() if r["Type"] == "AWS::CloudWatch::Alarm"]
    watched = [d["Value"] for a in alarms for d in a["Properties"].get("Dimensions", [])]
    assert {"Fn::GetAtt": [queue, "QueueName"]} in watched, "an alarm must watch the failure queue"


def test_the_table_stream_carries_both_images() -> None:
    table = TEMPLATE.properties("SessionsTable")
    assert table["StreamSpecification"] == {"StreamViewType": "NEW_AND_OLD_IMAGES"}


def test_the_filters_fit_lambdas_limits_and_documented_syntax() -> None:
    # StreamFilter refuses more than Lambda allows, and anything outside its documented syntax ($or, ...).
    assert 0 < len(MAPPING.filter.patterns) <= MAX_FILTERS
    assert all(len(pattern) <= MAX_PATTERN_LENGTH for pattern in MAPPING.filter.patterns)


# ------------------------------------------------------------------------------------- every transition


@pytest.mark.parametrize("new", STATUSES)
def test_every_new_row_reaches_the_function(new: str) -> None:
    assert MAPPING.filter.matches(record(None, new))
    assert publishes(record(None, new))


@pytest.mark.parametrize("old", STATUSES)
def test_every_status_change_reaches_the_function_and_most_unchanged_rewrites_do_not(old: str) -> None:
    for new in STATUSES:
        stream_record = record(old, new)
        if old != new:
            assert MAPPING.filter.matches(stream_record), f"{old} -> {new} would be lost"
            assert publishes(stream_record), f"{old} -> {new}"
        else:
            assert not publishes(stream_record), "the function re-checks what the filter lets through"
            if new in PRECISELY_FILTERED:
                assert not MAPPING.filter.matches(stream_record), f"{old} rewritten reaches the function"


@pytest.mark.parametrize("old", STATUSES)
def test_removals_never_reach_the_function(old: str) -> None:
    assert not MAPPING.filter.matches(record(old, None))


def test_the_sample_batch_is_filtered_as_lambda_would() -> None:
    batch = load_event("publisher/batch")["Records"]
    selected = MAPPING.filter.select(batch)
    dropped = [r["eventID"] for r in batch if r not in selected]
    assert dropped == [
        load_event("publisher/no_status_change")["Records"][0]["eventID"],
        load_event("publisher/ttl_remove")["Records"][0]["eventID"],
    ]


# ---------------------------------------------------------------------- what StreamFilter refuses


def patterns(*items: Any) -> dict[str, Any]:
    return {"Filters": [{"Pattern": item if isinstance(item, str) else json.dumps(item)} for item in items]}


@pytest.mark.parametrize(
    ("criteria", "problem"),
    [
        (patterns(*[{"eventName": ["INSERT"]}] * 6), "Lambda allows 5"),
        (patterns({"eventName": ["INSERT"], "x": ["y" * MAX_PATTERN_LENGTH]}), "characters"),
        (patterns({"$or": [{"eventName": ["INSERT"]}, {"eventName": ["MODIFY"]}]}), "'\\$or'"),
        (patterns({"eventName": [{"wildcard": "IN*"}]}), "wildcard"),
        (patterns({"eventName": [{"anything-but": ["A"], "prefix": "B"}]}), "one per rule"),
        (patterns({"eventName": []}), "empty list"),
        (patterns({"eventName": "INSERT"}), "object or a list"),
        (patterns("{not json"), "not JSON"),
        ({"Filters": [{"Pattern": {"eventName": ["INSERT"]}}]}, "JSON string"),
    ],
)
def test_patterns_lambda_would_refuse_or_misread_are_refused(criteria: dict[str, Any], problem: str) -> None:
    with pytest.raises(MappingError, match=problem):
        StreamFilter.from_filter_criteria(criteria)


def test_no_filter_lets_everything_through() -> None:
    assert StreamFilter.from_filter_criteria(None).matches(record("WAITING", None))


def test_anything_but_does_not_match_a_missing_attribute() -> None:
    # The filters rely on it: an INSERT (no OldImage) only passes through the INSERT filter.
    only_changes = StreamFilter.from_filter_criteria(
        patterns({"dynamodb": {"OldImage": {"status": {"S": [{"anything-but": ["WAITING"]}]}}}})
    )
    assert not only_changes.matches(record(None, "IN_PROGRESS"))
    assert only_changes.matches(record("FAILED", "IN_PROGRESS"))


def test_a_mapping_that_is_not_in_the_template_is_named() -> None:
    with pytest.raises(MappingError, match="NoSuchFunction"):
        StreamMapping.from_template(TEMPLATE, "NoSuchFunction")
    with pytest.raises(MappingError, match="no DynamoDB event 'Other'"):
        StreamMapping.from_template(TEMPLATE, "PublisherFunction", "Other")


# ------------------------------------------------------------------------ what Lambda delivers again

BATCH = load_event("publisher/batch")["Records"]


def failures(*indexes: int) -> dict[str, Any]:
    return {
        "batchItemFailures": [{"itemIdentifier": BATCH[i]["dynamodb"]["SequenceNumber"]} for i in indexes]
    }


@pytest.mark.parametrize("response", [None, {}, {"batchItemFailures": []}, {"batchItemFailures": None}])
def test_a_successful_response_delivers_nothing_again(response: Any) -> None:
    assert records_to_retry(BATCH, response) == []


def test_lambda_retries_from_the_lowest_reported_record() -> None:
    assert records_to_retry(BATCH, failures(5, 3)) == BATCH[3:]


@pytest.mark.parametrize(
    "response",
    [
        "not an object",
        {"batchItemFailures": [{"itemIdentifier": ""}]},
        {"batchItemFailures": [{"itemIdentifier": None}]},
        {"batchItemFailures": [{"wrongKey": "1"}]},
        {"batchItemFailures": [{"itemIdentifier": "999"}]},
    ],
)
def test_a_response_lambda_cannot_read_fails_the_whole_batch(response: Any) -> None:
    assert records_to_retry(BATCH, response) == BATCH
