"""Lambda's FilterCriteria on DynamoDB stream records (local.emulators.stream_mapping.StreamFilter, moto's
matcher): the pattern language's values and operators, and bad patterns refused."""

import json

import pytest

from local.emulators.stream_mapping import MappingError, StreamFilter


def record(event_name: str, new_status: str | None, old_status: str | None = None) -> dict:
    dynamodb: dict = {"Keys": {"session_id": {"S": "s-1"}}, "SequenceNumber": "100"}
    if new_status is not None:
        dynamodb["NewImage"] = {"session_id": {"S": "s-1"}, "status": {"S": new_status}}
    if old_status is not None:
        dynamodb["OldImage"] = {"session_id": {"S": "s-1"}, "status": {"S": old_status}}
    return {"eventName": event_name, "eventSource": "aws:dynamodb", "dynamodb": dynamodb}


def criteria(*patterns: dict) -> StreamFilter:
    # As SAM writes them: each Pattern is a JSON string.
    return StreamFilter.from_filter_criteria({"Filters": [{"Pattern": json.dumps(p)} for p in patterns]})


def test_no_filters_let_every_record_through() -> None:
    assert StreamFilter.from_filter_criteria(None).matches(record("REMOVE", None, "WAITING"))
    assert StreamFilter.from_filter_criteria({"Filters": []}).matches(record("INSERT", "WAITING"))


def test_exact_values_and_nested_attribute_values() -> None:
    completed = criteria(
        {"eventName": ["INSERT", "MODIFY"], "dynamodb": {"NewImage": {"status": {"S": ["COMPLETED"]}}}}
    )

    assert completed.matches(record("MODIFY", "COMPLETED", "IN_PROGRESS"))
    assert completed.matches(record("INSERT", "COMPLETED"))
    assert not completed.matches(record("MODIFY", "IN_PROGRESS", "WAITING"))
    assert not completed.matches(record("REMOVE", None, "COMPLETED"))


def test_operators_of_the_pattern_language() -> None:
    not_waiting = criteria({"dynamodb": {"NewImage": {"status": {"S": [{"anything-but": ["WAITING"]}]}}}})
    has_old_image = criteria({"dynamodb": {"OldImage": {"status": {"S": [{"exists": True}]}}}})
    prefixed = criteria({"dynamodb": {"Keys": {"session_id": {"S": [{"prefix": "s-"}]}}}})

    assert not_waiting.matches(record("MODIFY", "COMPLETED")) and not not_waiting.matches(
        record("MODIFY", "WAITING")
    )
    assert has_old_image.matches(record("MODIFY", "X", "Y")) and not has_old_image.matches(
        record("INSERT", "X")
    )
    assert prefixed.matches(record("INSERT", "X"))


def test_several_filters_are_ored() -> None:
    either = criteria({"eventName": ["INSERT"]}, {"dynamodb": {"NewImage": {"status": {"S": ["COMPLETED"]}}}})

    assert either.matches(record("INSERT", "WAITING"))
    assert either.matches(record("MODIFY", "COMPLETED", "IN_PROGRESS"))
    assert not either.matches(record("MODIFY", "IN_PROGRESS", "WAITING"))


@pytest.mark.parametrize(
    ("pattern", "problem"),
    [
        ("{not json", "not JSON"),
        ('["eventName"]', "must be a non-empty JSON object"),
        ('{"eventName": []}', "empty list"),
        ('{"eventName": "INSERT"}', "must be an object or a list of rules"),
        ('{"eventName": [{"startswith": "IN"}]}', "Lambda documents"),
    ],
)
def test_a_bad_pattern_fails_loudly_instead_of_matching_everything(pattern: str, problem: str) -> None:
    with pytest.raises(MappingError, match=problem):
        StreamFilter.from_filter_criteria({"Filters": [{"Pattern": pattern}]})
