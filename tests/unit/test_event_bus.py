"""PutEvents chunking and per-entry failures, and the batch processor that reports exactly the records
whose entries failed (EventBridge replaced by an in-memory ScriptedEventBridge; no I/O)."""

import json
import sys
from datetime import UTC, datetime
from typing import Any

import pytest
from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.utilities.batch import process_partial_response
from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError
from botocore.exceptions import EndpointConnectionError

from hpp_core.event_bus import (
    MAX_REQUEST_BYTES,
    EntryFailure,
    EventBus,
    StreamPublisher,
    chunk_entries,
    entry_size,
)
from hpp_core.publishing import COMPLETED, STATUS_CHANGED, BusEvent, CompletedDetail, events_for_record
from tests.support.event_bus import ScriptedEventBridge, detail_of
from tests.support.event_schemas import assert_conforms
from tests.support.lambda_runtime import LambdaContext, load_event

SOURCE = "hpp-tracker"
BUS = "hpp-tracker-events"
SAMPLE_TOKEN = "a1a8f727-2756-6058-bd3c-40069be0994b"


def completed_event(number: int, token: str = "tok") -> BusEvent:  # noqa: S107
    detail = CompletedDetail(
        event_id=f"00000000-0000-5000-8000-{number:012d}",
        session_id=f"session-{number}",
        status="COMPLETED",
        updated_at="2019-05-13T14:54:04.675Z",
        expires_at=None,
        authorization_token=token,  # type: ignore[arg-type]
    )
    return BusEvent(detail_type=COMPLETED, detail=detail, time=datetime(2019, 5, 13, tzinfo=UTC))


# ------------------------------------------------------------------------------------------ chunking


def test_chunks_hold_at_most_ten_entries_in_order() -> None:
    assert chunk_entries([100] * 25) == [list(range(10)), list(range(10, 20)), list(range(20, 25))]
    assert chunk_entries([]) == []


def test_chunks_stay_under_the_request_size() -> None:
    big = MAX_REQUEST_BYTES // 3
    chunks = chunk_entries([big, big, big, 10, big])
    assert chunks == [[0, 1, 2], [3, 4]]
    assert chunk_entries([MAX_REQUEST_BYTES, 1]) == [[0], [1]]


def test_entry_size_counts_what_eventbridge_counts() -> None:
    entry: Any = {"Source": "src", "DetailType": "dt", "Detail": '{"a":"é"}', "EventBusName": "not counted"}
    assert entry_size(entry) == 3 + 2 + len('{"a":"é"}'.encode())
    with_extras: Any = {**entry, "Time": datetime.now(UTC), "Resources": ["arn:x"]}
    assert entry_size(with_extras) == entry_size(entry) + 14 + 5


def test_put_sends_at_most_ten_entries_per_call_and_maps_answers_back() -> None:
    client = ScriptedEventBridge()
    client.fail_entries(lambda entry: detail_of(entry)["session_id"] in {"session-3", "session-17"})
    bus = EventBus(client, BUS, SOURCE)  # type: ignore[arg-type]
    results = bus.put([completed_event(n) for n in range(23)])
    assert [len(call) for call in client.calls] == [10, 10, 3]
    assert [detail_of(entry)["session_id"] for entry in client.entries] == [f"session-{n}" for n in range(23)]
    failed = {n for n, result in enumerate(results) if result is not None}
    assert failed == {3, 17}
    assert results[3] == EntryFailure("InternalFailure", "Internal Failure")
    entry = client.entries[0]
    assert (entry["EventBusName"], entry["Source"], entry["DetailType"]) == (BUS, SOURCE, COMPLETED)
    assert entry["Time"] == datetime(2019, 5, 13, tzinfo=UTC)


def test_a_call_that_fails_fails_only_its_chunk() -> None:
    class FailSecondCall(ScriptedEventBridge):
        def put_events(self, **kwargs: Any) -> dict[str, Any]:
            if len(self.calls) == 1:
                self.calls.append(kwargs["Entries"])
                raise EndpointConnectionError(endpoint_url="https://events.eu-west-1.amazonaws.com")
            return super().put_events(**kwargs)

    client = FailSecondCall()
    results = EventBus(client, BUS, SOURCE).put([completed_event(n) for n in range(15)])  # type: ignore[arg-type]
    assert [r is None for r in results] == [True] * 10 + [False] * 5
    assert results[10] == EntryFailure("EndpointConnectionError", "PutEvents call failed")


def test_an_eventbridge_error_fails_the_chunk_with_its_code() -> None:
    client = ScriptedEventBridge()
    client.fail_calls("ThrottlingException", "Rate exceeded")
    results = EventBus(client, BUS, SOURCE).put([completed_event(1)])  # type: ignore[arg-type]
    assert results == [EntryFailure("ThrottlingException", "Rate exceeded")]


def test_an_entry_over_the_request_size_is_never_sent_and_fails_alone() -> None:
    client = ScriptedEventBridge()
    events = [completed_event(0), completed_event(1, token="x" * MAX_REQUEST_BYTES), completed_event(2)]
    results = EventBus(client, BUS, SOURCE).put(events)  # type: ignore[arg-type]
    assert results[0] is None and results[2] is None
    assert results[1] is not None and results[1].error_code == "EntryTooLarge"
    assert [detail_of(e)["session_id"] for e in client.entries] == ["session-0", "session-2"]


def test_an_answer_that_does_not_match_the_entries_is_not_trusted() -> None:
    class ShortAnswer(ScriptedEventBridge):
        def put_events(self, **kwargs: Any) -> dict[str, Any]:
            return {"FailedEntryCount": 0, "Entries": [{"EventId": "1"}]}

    results = EventBus(ShortAnswer(), BUS, SOURCE).put([completed_event(1), completed_event(2)])  # type: ignore[arg-type]
    assert all(result is not None and result.error_code == "UnmatchedResponse" for result in results)


# ------------------------------------------------------------------------------------ the processor


class Harness:
    def __init__(self) -> None:
        self.client = ScriptedEventBridge()
        self.metrics = Metrics(namespace="HppTrackerTest", service="hpp-publisher")
        self.metrics.clear_metrics()  # Powertools keeps one metric set per process
        self.processor = StreamPublisher(
            EventBus(self.client, BUS, SOURCE),  # type: ignore[arg-type]
            logger=Logger(service="hpp-publisher"),
            metrics=self.metrics,
        )

    def run(self, event: dict[str, Any]) -> dict[str, Any]:
        response = process_partial_response(
            event=event,
            record_handler=events_for_record,
            processor=self.processor,
            context=LambdaContext(),  # type: ignore[arg-type]
        )
        for entry in self.client.entries:  # every event emitted here honours its schema
            assert_conforms(entry["DetailType"], detail_of(entry))
        return dict(response)

    def metric_values(self) -> dict[str, float]:
        """What this invocation's metrics add up to (as CloudWatch sums an EMF value list)."""
        emf: dict[str, Any] = dict(self.metrics.serialize_metric_set())
        self.metrics.clear_metrics()
        names = [m["Name"] for m in emf["_aws"]["CloudWatchMetrics"][0]["Metrics"]]
        return {name: sum(emf[name]) if isinstance(emf[name], list) else emf[name] for name in names}


def batch_sequence_numbers(event: dict[str, Any]) -> list[str]:
    return [record["dynamodb"]["SequenceNumber"] for record in event["Records"]]


def test_a_batch_is_published_in_one_pass_of_chunked_calls() -> None:
    harness = Harness()
    event = load_event("publisher/batch")
    assert harness.run(event) == {"batchItemFailures": []}
    # 8 records: 6 with a status change (one a completion, one a first-seen completion), 2 without.
    assert [entry["DetailType"] for entry in harness.client.entries] == [
        STATUS_CHANGED,
        STATUS_CHANGED,
        STATUS_CHANGED,
        COMPLETED,
        STATUS_CHANGED,
        COMPLETED,
        STATUS_CHANGED,
        STATUS_CHANGED,
    ]
    assert len(harness.client.calls) == 1, "8 entries fit one PutEvents call"
    assert harness.metric_values() == {
        "SkippedRecords": 2,
        "PublishedStatusChanged": 6,
        "PublishedCompleted": 2,
    }


def test_more_than_ten_events_go_in_several_calls() -> None:
    harness = Harness()
    event = load_event("publisher/batch")
    event["Records"] = event["Records"] * 3  # 24 events
    harness.run(event)
    assert [len(call) for call in harness.client.calls] == [10, 10, 4]


def test_only_the_records_whose_entries_failed_are_reported() -> None:
    harness = Harness()
    event = load_event("publisher/batch")
    # The completion's Completed entry fails, its Status Changed entry goes through.
    harness.client.fail_entries(
        lambda entry: entry["DetailType"] == COMPLETED and "authorization_token" in entry["Detail"]
    )
    response = harness.run(event)
    completion = event["Records"][3]
    assert response == {"batchItemFailures": [{"itemIdentifier": completion["dynamodb"]["SequenceNumber"]}]}
    assert harness.metric_values() == {
        "SkippedRecords": 2,
        "PublishedStatusChanged": 6,
        "PublishedCompleted": 1,
        "FailedEntries": 1,
        "FailedRecords": 1,
    }


def test_an_unpublishable_record_is_reported_and_the_others_are_published() -> None:
    harness = Harness()
    event = load_event("publisher/batch")
    poison = load_event("publisher/malformed_image")["Records"][0]
    event["Records"].insert(2, poison)
    response = harness.run(event)
    assert response == {"batchItemFailures": [{"itemIdentifier": poison["dynamodb"]["SequenceNumber"]}]}
    assert len(harness.client.entries) == 8


def test_a_whole_batch_that_fails_raises_so_lambda_bisects_it() -> None:
    harness = Harness()
    harness.client.fail_calls()
    event = load_event("publisher/completed_authorization_token")
    with pytest.raises(BatchProcessingError):
        harness.run(event)
    assert harness.metric_values() == {"FailedEntries": 2, "FailedRecords": 1}


def test_failures_of_one_invocation_do_not_leak_into_the_next() -> None:
    harness = Harness()
    harness.client.fail_entries(lambda entry: entry["DetailType"] == COMPLETED)
    first = harness.run(load_event("publisher/batch"))
    assert len(first["batchItemFailures"]) == 2
    harness.client.heal()
    assert harness.run(load_event("publisher/batch")) == {"batchItemFailures": []}


def test_a_batch_without_status_changes_makes_no_call() -> None:
    harness = Harness()
    event = load_event("publisher/no_status_change")
    event["Records"] += load_event("publisher/ttl_remove")["Records"]
    assert harness.run(event) == {"batchItemFailures": []}
    assert harness.client.calls == []
    assert harness.metric_values() == {"SkippedRecords": 2}


def test_the_processor_logs_no_token(capfd: pytest.CaptureFixture[str]) -> None:
    harness = Harness()
    # Powertools shares one handler per service name: point it at fd 1 (captured), never at a
    # capture object that is closed after this test.
    harness.processor._log.registered_handler.setStream(sys.__stdout__)  # type: ignore[attr-defined]
    harness.client.fail_entries(lambda entry: entry["DetailType"] == STATUS_CHANGED)
    harness.run(load_event("publisher/batch"))
    out = capfd.readouterr().out
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert any(line.get("message") == "event published" for line in lines)
    assert any("not published" in str(line.get("message")) for line in lines)
    assert SAMPLE_TOKEN not in out


def test_an_unexpected_error_is_logged_by_type_only(capfd: pytest.CaptureFixture[str]) -> None:
    harness = Harness()
    harness.processor._log.registered_handler.setStream(sys.__stdout__)  # type: ignore[attr-defined]

    def buggy(record: Any) -> list[BusEvent]:  # a bug whose message quotes the record
        raise KeyError(record.dynamodb.new_image["authorization_token"])

    with pytest.raises(BatchProcessingError):
        process_partial_response(
            event=load_event("publisher/completed_authorization_token"),
            record_handler=buggy,
            processor=harness.processor,
            context=LambdaContext(),  # type: ignore[arg-type]
        )
    out = capfd.readouterr().out
    [line] = [json.loads(x) for x in out.splitlines() if "not published" in x]
    assert line["error_type"] == "KeyError"
    assert SAMPLE_TOKEN not in out
    assert harness.metric_values() == {"FailedRecords": 1}
