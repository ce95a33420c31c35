"""The publisher Lambda end to end (tests/support/publisher_pipeline.py: real writes, the table's real
stream on DynamoDB Local, then moto, the template's filter, Lambda's batches), and the events read back
by consumers: rules on a bus in moto's EventBridge routing them by detail type into SQS queues.

Every entry the publisher sends in these tests is checked against schemas/*.json (fixture teardown).
"""

import json
import sys
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import pytest
from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError

from hpp_core.callback_secrets import hash_callback_secret
from hpp_core.publishing import COMPLETED, STATUS_CHANGED, event_id, events_for_session
from hpp_core.settings import ConfigurationError
from local.emulators.stream_mapping import records_to_retry
from tests.support.event_bus import detail_of
from tests.support.functions import import_function
from tests.support.publisher_pipeline import (
    EXPIRES,
    MAPPING,
    SECRET,
    SOURCE,
    Pipeline,
    publisher_pipeline,
    update,
)

TOKEN = "a1a8f727-2756-6058-bd3c-40069be0994b"
# docs/events.md's example consumer rule (detail-type routing); the second queue takes the status changes.
COMPLETED_RULE = {"source": [SOURCE], "detail-type": [COMPLETED]}
STATUS_RULE = {"source": [SOURCE], "detail-type": [STATUS_CHANGED]}


@pytest.fixture(params=["dynamodb_local", "moto"])
def pipeline(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, moto_server: Any
) -> Iterator[Pipeline]:
    with publisher_pipeline(request.param, request, monkeypatch, moto_server) as built:
        built.bus.subscribe("completed", COMPLETED_RULE)
        built.bus.subscribe("status-changed", STATUS_RULE)
        yield built


def publishes_status(stream_record: dict[str, Any]) -> bool:
    # moto streams an extra INSERT holding only the key when an update creates a row: it has no status.
    return "status" in stream_record["dynamodb"].get("NewImage", {})


def by_session(envelopes: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    grouped: dict[str, list[dict[str, Any]]] = {}
    for envelope in envelopes:
        grouped.setdefault(envelope["detail"]["session_id"], []).append(envelope["detail"])
    return grouped


# ---------------------------------------------------------------------------------------- contents


def test_the_function_names_a_missing_bus_at_start_up(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("EVENT_BUS_NAME")
    with pytest.raises(ConfigurationError, match="EVENT_BUS_NAME"):
        import_function("publisher")


def test_a_tracked_session_publishes_each_status_change_and_one_completion(pipeline: Pipeline) -> None:
    sid = str(uuid.uuid4())
    pipeline.track(sid)
    pipeline.repository.record_status(update(sid, "IN_PROGRESS", "2019-05-13T14:52:10.120Z"))
    pipeline.repository.record_status(
        update(sid, "COMPLETED", "2019-05-13T14:54:04.675Z", authorization_token=TOKEN)
    )
    assert pipeline.deliver() == [{"batchItemFailures": []}]

    status_changes = pipeline.consumed("status-changed")
    assert [e["detail-type"] for e in status_changes] == [STATUS_CHANGED] * 3
    details = [e["detail"] for e in status_changes]
    assert [(d["previous_status"], d["status"]) for d in details] == [
        (None, "WAITING"),
        ("WAITING", "IN_PROGRESS"),
        ("IN_PROGRESS", "COMPLETED"),
    ]
    assert details[1] == {
        "event_id": event_id(STATUS_CHANGED, sid, "IN_PROGRESS", 1557759130120),
        "schema_version": "1",
        "session_id": sid,
        "status": "IN_PROGRESS",
        "previous_status": "WAITING",
        "updated_at": "2019-05-13T14:52:10.120Z",
        "expires_at": EXPIRES,
    }
    assert all("authorization_token" not in d for d in details)

    [completed] = pipeline.consumed("completed")
    assert completed["detail-type"] == COMPLETED
    assert completed["detail"] == {
        "event_id": event_id(COMPLETED, sid, "COMPLETED", 1557759244675),
        "schema_version": "1",
        "session_id": sid,
        "status": "COMPLETED",
        "updated_at": "2019-05-13T14:54:04.675Z",
        "expires_at": EXPIRES,
        "authorization_token": TOKEN,
    }


def test_the_stored_session_rebuilds_the_events_its_change_published(pipeline: Pipeline) -> None:
    """Events built from the row as a read returns it are the events its stream record published: same
    ids, same details (what a republish from the table relies on)."""
    sid = str(uuid.uuid4())
    pipeline.track(sid)
    pipeline.repository.record_status(update(sid, "IN_PROGRESS", "2019-05-13T14:52:10.120Z"))
    pipeline.repository.record_status(
        update(sid, "COMPLETED", "2019-05-13T14:54:04.675Z", authorization_token=TOKEN)
    )
    pipeline.deliver()
    published = [pipeline.consumed("status-changed")[-1], *pipeline.consumed("completed")]
    stored = pipeline.repository.get_session(sid)
    assert stored is not None
    rebuilt = events_for_session(stored, previous_status="IN_PROGRESS", time=None)
    assert [json.loads(event.detail_json()) for event in rebuilt] == [e["detail"] for e in published]


def test_a_session_first_seen_completed_publishes_both_events(pipeline: Pipeline) -> None:
    # Adopted through Klarna's Read Session (a callback for an untracked session): the row is INSERTed
    # already COMPLETED.
    sid = str(uuid.uuid4())
    pipeline.repository.record_status(
        update(sid, "COMPLETED", "2019-05-13T14:54:04.675Z", "klarna_read", authorization_token=TOKEN)
    )
    pipeline.deliver()
    [status_changed] = pipeline.consumed("status-changed")
    assert (status_changed["detail"]["previous_status"], status_changed["detail"]["status"]) == (
        None,
        "COMPLETED",
    )
    [completed] = pipeline.consumed("completed")
    assert completed["detail"]["authorization_token"] == TOKEN


@pytest.mark.parametrize("mode", ["PLACE_ORDER", "Klarna Checkout"])
def test_an_order_completion_carries_the_order_id_and_reference(pipeline: Pipeline, mode: str) -> None:
    sid = str(uuid.uuid4())
    pipeline.track(sid)
    pipeline.repository.record_status(
        update(
            sid,
            "COMPLETED",
            "2019-05-13T15:02:11.004Z",
            order_id=f"order-{mode.replace(' ', '-')}",
            klarna_reference="K4MADNY-1",
        )
    )
    pipeline.deliver()
    [completed] = pipeline.consumed("completed")
    assert completed["detail"]["order_id"] == f"order-{mode.replace(' ', '-')}"
    assert completed["detail"]["klarna_reference"] == "K4MADNY-1"
    assert "authorization_token" not in completed["detail"]


def test_unchanged_and_non_status_writes_publish_nothing(pipeline: Pipeline) -> None:
    sid = str(uuid.uuid4())
    pipeline.track(sid)
    pipeline.repository.record_status(update(sid, "IN_PROGRESS", "2019-05-13T14:52:10.120Z"))
    pipeline.deliver()
    pipeline.consumed("status-changed")

    repository, key = pipeline.repository, {"session_id": {"S": sid}}
    repository.record_status(update(sid, "IN_PROGRESS", "2019-05-13T14:52:10.120Z"))  # duplicate: no write
    repository.record_status(update(sid, "WAITING", "2019-05-13T14:51:00.000Z"))  # stale: no write
    repository.record_status(update(sid, "IN_PROGRESS", "2019-05-13T14:53:00.000Z"))  # same status, newer
    # The poller's bookkeeping, and a write that changes nothing (moto streams it, DynamoDB does not).
    pipeline.dynamodb.update_item(
        TableName=pipeline.table,
        Key=key,
        UpdateExpression="SET poll_due_at = :due, poll_attempts = :one",
        ExpressionAttributeValues={":due": {"N": "1557760000000"}, ":one": {"N": "1"}},
    )
    pipeline.dynamodb.update_item(
        TableName=pipeline.table,
        Key=key,
        UpdateExpression="SET #status = :same",
        ExpressionAttributeNames={"#status": "status"},
        ExpressionAttributeValues={":same": {"S": "IN_PROGRESS"}},
    )
    calls_before = len(pipeline.eventbridge.calls)
    records = pipeline.stream()
    expected_records = {"dynamodb_local": 2, "moto": 3}[pipeline.engine]
    assert len(records) == expected_records
    assert MAPPING.filter.select(records) == [], "the template's filter keeps these from the function"
    # The filter is only an optimisation: given every record, the function still publishes nothing.
    assert pipeline.invoke(records) == {"batchItemFailures": []}
    assert len(pipeline.eventbridge.calls) == calls_before, "no PutEvents call at all"
    assert pipeline.consumed("status-changed") == []
    assert pipeline.consumed("completed") == []


def test_a_removed_row_publishes_nothing(pipeline: Pipeline) -> None:
    sid = str(uuid.uuid4())
    pipeline.track(sid)
    pipeline.deliver()
    pipeline.consumed("status-changed")
    pipeline.dynamodb.delete_item(TableName=pipeline.table, Key={"session_id": {"S": sid}})  # as TTL does
    [removal] = pipeline.stream()
    assert removal["eventName"] == "REMOVE"
    assert not MAPPING.filter.matches(removal)
    assert pipeline.invoke([removal]) == {"batchItemFailures": []}
    assert pipeline.consumed("status-changed") == []


def test_a_status_klarna_adds_later_is_published_as_stored(pipeline: Pipeline) -> None:
    sid = str(uuid.uuid4())
    pipeline.track(sid)
    pipeline.repository.record_status(update(sid, "PAUSED_BY_CONSUMER", "2019-05-13T14:52:10.120Z"))
    pipeline.deliver()
    details = [e["detail"] for e in pipeline.consumed("status-changed")]
    assert [(d["previous_status"], d["status"]) for d in details] == [
        (None, "WAITING"),
        ("WAITING", "PAUSED_BY_CONSUMER"),
    ]


# ---------------------------------------------------------------------------------------- failures


def complete_sessions(pipeline: Pipeline, count: int) -> list[str]:
    sessions = [str(uuid.uuid4()) for _ in range(count)]
    for sid in sessions:
        pipeline.track(sid)
        pipeline.repository.record_status(update(sid, "IN_PROGRESS", "2019-05-13T14:52:10.120Z"))
        pipeline.repository.record_status(
            update(sid, "COMPLETED", "2019-05-13T14:54:04.675Z", authorization_token=f"token-{sid}")
        )
    return sessions


def is_completion_entry(entry: Mapping[str, Any], session_id: str) -> bool:
    return entry["DetailType"] == COMPLETED and detail_of(entry)["session_id"] == session_id


def is_completion_record(record: dict[str, Any], session_id: str) -> bool:
    stream = record["dynamodb"]
    return (
        stream["Keys"]["session_id"]["S"] == session_id and stream["NewImage"]["status"]["S"] == "COMPLETED"
    )


@dataclass(frozen=True)
class PartlyPublished:
    """A batch whose delivery had one entry refused: the Completed event of session `unlucky`."""

    sessions: list[str]
    unlucky: str
    batch: list[dict[str, Any]]
    response: Any
    completion: dict[str, Any]  # the stream record of `unlucky` becoming COMPLETED


def deliver_with_one_completion_refused(pipeline: Pipeline) -> PartlyPublished:
    sessions = complete_sessions(pipeline, 6)  # 18 records, 24 events: three PutEvents calls
    unlucky = sessions[2]
    pipeline.eventbridge.fail_entries(
        lambda entry: is_completion_entry(entry, unlucky), "ThrottlingException", "Rate exceeded"
    )
    [response] = pipeline.deliver()
    batch, _ = pipeline.invocations[0]
    completion = next(record for record in batch if is_completion_record(record, unlucky))
    return PartlyPublished(sessions, unlucky, batch, response, completion)


def test_a_partial_put_failure_reports_only_its_record(pipeline: Pipeline) -> None:
    partly = deliver_with_one_completion_refused(pipeline)
    sequence_number = partly.completion["dynamodb"]["SequenceNumber"]
    assert partly.response == {"batchItemFailures": [{"itemIdentifier": sequence_number}]}
    assert [len(call) for call in pipeline.eventbridge.calls] == [10, 10, 4]
    assert set(by_session(pipeline.consumed("completed"))) == set(partly.sessions) - {partly.unlucky}
    # Its Status Changed entry went through: only the Completed one is missing.
    assert len(by_session(pipeline.consumed("status-changed"))[partly.unlucky]) == 3


def test_the_retry_after_a_partial_put_failure_publishes_the_same_ids(pipeline: Pipeline) -> None:
    partly = deliver_with_one_completion_refused(pipeline)
    first_completions = by_session(pipeline.consumed("completed"))
    attempted = next(
        detail_of(entry)
        for entry in pipeline.eventbridge.entries
        if is_completion_entry(entry, partly.unlucky)
    )

    # Lambda delivers again from the reported record (and everything after it in the batch).
    pipeline.eventbridge.heal()
    retry = records_to_retry(partly.batch, partly.response)
    assert retry[0] == partly.completion
    assert pipeline.invoke(retry) == {"batchItemFailures": []}
    retried = by_session(pipeline.consumed("completed"))
    [delivered] = retried[partly.unlucky]
    assert delivered["event_id"] == attempted["event_id"]
    assert delivered["authorization_token"] == f"token-{partly.unlucky}"
    # Sessions after it in the batch are published again, with the ids they had: consumers de-duplicate.
    for sid in partly.sessions[3:]:
        assert [d["event_id"] for d in retried[sid]] == [d["event_id"] for d in first_completions[sid]]
    everything = [d for group in (first_completions, retried) for details in group.values() for d in details]
    assert len({d["event_id"] for d in everything}) == len(partly.sessions), "one Completed per session"


def test_eventbridge_down_fails_the_whole_batch_and_the_retry_publishes_it(pipeline: Pipeline) -> None:
    [sid] = complete_sessions(pipeline, 1)
    pipeline.eventbridge.fail_calls("InternalException", "Service unavailable")
    with pytest.raises(BatchProcessingError):
        pipeline.deliver()
    assert pipeline.consumed("completed") == []
    batch, outcome = pipeline.invocations[0]
    assert outcome == "raised"

    pipeline.eventbridge.heal()
    assert pipeline.invoke(batch) == {"batchItemFailures": []}  # Lambda retries (bisects) the batch
    [completed] = pipeline.consumed("completed")
    assert completed["detail"]["session_id"] == sid


def test_an_unpublishable_row_fails_alone(pipeline: Pipeline) -> None:
    good, bad = str(uuid.uuid4()), str(uuid.uuid4())
    # COMPLETED with neither a token nor an order id: the write path accepts it, no Completed event can
    # carry it. It goes to retries and the failure queue; the other session is not held up.
    pipeline.repository.record_status(update(bad, "COMPLETED", "2019-05-13T14:54:04.675Z", "klarna_read"))
    pipeline.repository.record_status(
        update(good, "COMPLETED", "2019-05-13T14:54:05.000Z", "klarna_read", authorization_token=TOKEN)
    )
    [response] = pipeline.deliver()
    batch, _ = pipeline.invocations[0]
    [unpublishable] = [
        r for r in batch if r["dynamodb"]["Keys"]["session_id"]["S"] == bad and publishes_status(r)
    ]
    assert response == {
        "batchItemFailures": [{"itemIdentifier": unpublishable["dynamodb"]["SequenceNumber"]}]
    }
    [completed] = pipeline.consumed("completed")
    assert completed["detail"]["session_id"] == good


# ---------------------------------------------------------------------------------- logs and metrics


def test_logs_say_what_was_published_and_never_show_a_token_or_secret(
    pipeline: Pipeline, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Even with Powertools' event logging switched on by an operator, the records are not logged.
    monkeypatch.setenv("POWERTOOLS_LOGGER_LOG_EVENT", "true")
    pipeline.handler = import_function("publisher")
    pipeline.handler.logger.registered_handler.setStream(sys.__stdout__)
    pipeline.handler.bus.client = pipeline.eventbridge
    sessions = complete_sessions(pipeline, 2)
    capfd.readouterr()
    pipeline.eventbridge.fail_entries(lambda entry: detail_of(entry)["session_id"] == sessions[0])
    pipeline.deliver()
    pipeline.eventbridge.heal()
    batch, response = pipeline.invocations[0]
    pipeline.invoke(records_to_retry(batch, response))
    out, err = capfd.readouterr()
    for secret in [f"token-{sid}" for sid in sessions] + [SECRET, hash_callback_secret(SECRET)]:
        assert secret not in out + err
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    published = [line for line in lines if line.get("message") == "event published"]
    assert {(line["session_id"], line["detail_type"]) for line in published} >= {
        (sessions[1], COMPLETED),
        (sessions[0], COMPLETED),
    }
    not_published = [line for line in lines if "not published" in str(line.get("message"))]
    assert len(not_published) == 3, "one line per record of the failing session"
    assert all(sessions[0] in line["error"] for line in not_published)
    metrics = [
        {name: sum(value) for name, value in line.items() if isinstance(value, list)}
        for line in lines
        if "_aws" in line
    ]
    # First invocation: the second session's events; all 4 of the first's failed (3 records). The retry
    # starts at the first failed record: both sessions' Completed events (the second one again).
    assert metrics[0] == {
        "PublishedStatusChanged": 3,
        "PublishedCompleted": 1,
        "FailedEntries": 4,
        "FailedRecords": 3,
    }
    assert metrics[1] == {"PublishedStatusChanged": 6, "PublishedCompleted": 2}
