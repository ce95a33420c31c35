"""Lambda's FilterCriteria on DynamoDB stream records, evaluated with moto's event-pattern matcher."""

import json

import pytest

from local.event_patterns import FilterCriteria, InvalidFilterError


def record(event_name: str, new_status: str | None, old_status: str | None = None) -> dict:
    dynamodb: dict = {"Keys": {"session_id": {"S": "s-1"}}, "SequenceNumber": "100"}
    if new_status is not None:
        dynamodb["NewImage"] = {"session_id": {"S": "s-1"}, "status": {"S": new_status}}
    if old_status is not None:
        dynamodb["OldImage"] = {"session_id": {"S": "s-1"}, "status": {"S": old_status}}
    return {"eventName": event_name, "eventSource": "aws:dynamodb", "dynamodb": dynamodb}


def criteria(*patterns: dict) -> FilterCriteria:
    # As SAM writes them: each Pattern is a JSON string.
    return FilterCriteria.from_template({"Filters": [{"Pattern": json.dumps(p)} for p in patterns]})


def test_no_filters_let_every_record_through() -> None:
    assert FilterCriteria.from_template(None).matches(record("REMOVE", None, "WAITING"))
    assert not FilterCriteria.from_template({"Filters": []})


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
        ("{not json", "not valid JSON"),
        ('["eventName"]', "must be a JSON object"),
        ('{"eventName": []}', "empty arrays"),
        ('{"eventName": "INSERT"}', "must be an object or an array"),
        ('{"eventName": [{"startswith": "IN"}]}', "unknown operator"),
    ],
)
def test_a_bad_pattern_fails_loudly_instead_of_matching_everything(pattern: str, problem: str) -> None:
    with pytest.raises(InvalidFilterError, match=problem):
        FilterCriteria.from_template({"Filters": [{"Pattern": pattern}]})
