"""The stream pump on DynamoDB Local's real stream, with a fake function: batching, filter criteria,
partial-batch retries, bisection, the retry limit and the on-failure destination, as Lambda does them."""

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from local.emulators.runtime import InvokeResult
from local.emulators.stream_mapping import StreamFilter, StreamMapping
from local.emulators.stream_pump import StreamPump
from tests.support.template import create_table

FUNCTION_ARN = "arn:aws:lambda:eu-west-1:123456789012:function:publisher"
DLQ_ARN = "arn:aws:sqs:eu-west-1:123456789012:publisher-dlq"
ERROR = {"errorType": "RuntimeError", "errorMessage": "boom", "stackTrace": []}


class FakeFunction:
    """Records every batch; `behaviour(keys, call_number)` decides the answer."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.events: list[dict[str, Any]] = []
        self.behaviour: Callable[[list[dict[str, Any]], int], InvokeResult] = lambda records, n: ok()
        self._changed = threading.Condition()

    def __call__(self, event: dict[str, Any]) -> InvokeResult:
        with self._changed:
            self.events.append(event)
            self.batches.append([key(record) for record in event["Records"]])
            self._changed.notify_all()
            number = len(self.batches)
        return self.behaviour(event["Records"], number)

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        with self._changed:
            while not predicate():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"batches so far: {self.batches}")
                self._changed.wait(remaining)


def ok(payload: Any = None) -> InvokeResult:
    return InvokeResult("req", ok=True, payload=payload)


def key(record: dict[str, Any]) -> str:
    return record["dynamodb"]["Keys"]["session_id"]["S"]


def sequence(record: dict[str, Any]) -> str:
    return record["dynamodb"]["SequenceNumber"]


@pytest.fixture
def table(dynamodb_local) -> Iterator[tuple[Any, str]]:
    client = dynamodb_local.client()
    name = f"pump-{uuid.uuid4().hex[:10]}"
    create_table(client, "SessionsTable", name)
    stream_arn = client.describe_table(TableName=name)["Table"]["LatestStreamArn"]
    yield client, stream_arn
    client.delete_table(TableName=name)


@pytest.fixture
def pump_for(dynamodb_local, table):
    started: list[StreamPump] = []
    sent: list[tuple[str, dict[str, Any]]] = []

    def make(function: FakeFunction, **settings: Any) -> StreamPump:
        _, stream_arn = table
        mapping = StreamMapping(function="Publisher", stream=stream_arn, **settings)
        pump = StreamPump(
            mapping,
            function_arn=FUNCTION_ARN,
            streams=dynamodb_local.streams_client(),
            invoke=function,
            send_to_queue=lambda arn, body: sent.append((arn, json.loads(body))),
            poll_interval=0.05,
            retry_delay=0.05,
            max_retry_delay=0.2,
        )
        pump.start()
        assert pump.reading.wait(10)
        started.append(pump)
        return pump

    make.sent = sent  # type: ignore[attr-defined]
    yield make
    for pump in started:
        pump.stop()


def write(table: tuple[Any, str], session_id: str, status: str, **extra: str) -> None:
    client, _ = table
    item = {"session_id": {"S": session_id}, "status": {"S": status}}
    item.update({attr: {"S": value} for attr, value in extra.items()})
    client.put_item(TableName=table_name(table), Item=item)


def table_name(table: tuple[Any, str]) -> str:
    return table[1].split(":table/", 1)[1].split("/stream/", 1)[0]


def test_batches_follow_batch_size_and_order_and_the_filter_drops_what_does_not_match(
    table, pump_for
) -> None:
    function = FakeFunction()
    only_completed = StreamFilter(('{"dynamodb": {"NewImage": {"status": {"S": ["COMPLETED"]}}}}',))
    for n in range(7):
        write(table, f"s-{n}", "COMPLETED" if n % 2 == 0 else "IN_PROGRESS")
    pump = pump_for(function, starting_position="TRIM_HORIZON", batch_size=3, filter=only_completed)

    function.wait_for(lambda: sum(map(len, function.batches)) >= 4)
    assert pump.wait_idle(5)

    assert function.batches == [["s-0", "s-2", "s-4"], ["s-6"]]
    assert (pump.stats.records_read, pump.stats.records_filtered_out, pump.stats.records_delivered) == (
        7,
        3,
        4,
    )
    record = function.events[0]["Records"][0]
    assert record["eventSource"] == "aws:dynamodb"
    assert record["eventName"] == "INSERT"
    assert record["awsRegion"] == "eu-west-1"
    assert record["eventSourceARN"] == table[1]
    assert isinstance(record["dynamodb"]["ApproximateCreationDateTime"], float)
    assert record["dynamodb"]["StreamViewType"] == "NEW_AND_OLD_IMAGES"
    assert record["dynamodb"]["NewImage"]["status"] == {"S": "COMPLETED"}


def test_latest_skips_what_was_written_before_the_pump_started(table, pump_for) -> None:
    function = FakeFunction()
    write(table, "before", "WAITING")
    pump_for(function, starting_position="LATEST")
    write(table, "after", "WAITING")

    function.wait_for(lambda: bool(function.batches))
    time.sleep(0.3)
    assert function.batches == [["after"]]


def test_reported_item_failures_are_retried_from_the_first_failed_record(table, pump_for) -> None:
    function = FakeFunction()

    def fail_b_once(records, number):
        keys = [key(r) for r in records]
        if number == 1:
            return ok({"batchItemFailures": [{"itemIdentifier": sequence(records[keys.index("b")])}]})
        return ok({"batchItemFailures": []})

    function.behaviour = fail_b_once
    for session_id in "abc":
        write(table, session_id, "WAITING")
    pump = pump_for(
        function, starting_position="TRIM_HORIZON", batch_size=10, report_batch_item_failures=True
    )

    function.wait_for(lambda: len(function.batches) >= 2)
    assert pump.wait_idle(5)
    assert function.batches == [["a", "b", "c"], ["b", "c"]]
    assert (pump.stats.partial_failures, pump.stats.retries, pump.stats.records_delivered) == (1, 1, 3)


def test_an_identifier_not_in_the_batch_fails_the_whole_batch(table, pump_for) -> None:
    function = FakeFunction()
    function.behaviour = lambda records, n: ok(
        {"batchItemFailures": [{"itemIdentifier": "nope"}]} if n == 1 else None
    )
    for session_id in "ab":
        write(table, session_id, "WAITING")
    pump = pump_for(function, starting_position="TRIM_HORIZON", report_batch_item_failures=True)

    function.wait_for(lambda: len(function.batches) >= 2)
    assert pump.wait_idle(5)
    assert function.batches == [["a", "b"], ["a", "b"]]


def test_item_failures_are_ignored_without_report_batch_item_failures(table, pump_for) -> None:
    function = FakeFunction()
    function.behaviour = lambda records, n: ok(
        {"batchItemFailures": [{"itemIdentifier": sequence(records[0])}]}
    )
    write(table, "a", "WAITING")
    pump = pump_for(function, starting_position="TRIM_HORIZON")

    function.wait_for(lambda: bool(function.batches))
    assert pump.wait_idle(5)
    time.sleep(0.2)
    assert function.batches == [["a"]]


def test_a_function_error_bisects_the_batch_and_gives_up_on_the_poison_record_after_the_retry_limit(
    table, pump_for
) -> None:
    function = FakeFunction()
    function.behaviour = lambda records, n: (
        InvokeResult("req", ok=False, error=ERROR) if "p" in [key(r) for r in records] else ok()
    )
    for session_id in ["a", "b", "p", "d"]:
        write(table, session_id, "WAITING")
    pump = pump_for(
        function,
        starting_position="TRIM_HORIZON",
        bisect_batch_on_function_error=True,
        maximum_retry_attempts=1,
        on_failure_destination=DLQ_ARN,
    )

    function.wait_for(lambda: ["d"] in function.batches)
    assert pump.wait_idle(5)

    # Splitting does not count as a retry; the single poison record is retried once, then given up.
    assert function.batches == [["a", "b", "p", "d"], ["a", "b"], ["p", "d"], ["p"], ["p"], ["d"]]
    [(queue_arn, message)] = pump_for.sent
    assert queue_arn == DLQ_ARN
    info = message["DDBStreamBatchInfo"]
    poison = next(r for e in function.events for r in e["Records"] if key(r) == "p")
    assert (info["batchSize"], info["startSequenceNumber"], info["endSequenceNumber"]) == (
        1,
        sequence(poison),
        sequence(poison),
    )
    assert info["streamArn"] == table[1]
    assert message["requestContext"]["condition"] == "RetryAttemptsExhausted"
    assert message["requestContext"]["functionArn"] == FUNCTION_ARN
    assert message["requestContext"]["approximateInvokeCount"] == 2
    assert message["responseContext"]["functionError"] == "Unhandled"
    assert (pump.stats.bisections, pump.stats.sent_to_destination, pump.stats.records_delivered) == (2, 1, 3)


def test_without_bisect_the_whole_batch_is_retried_then_sent_to_the_destination(table, pump_for) -> None:
    function = FakeFunction()
    function.behaviour = lambda records, n: InvokeResult("req", ok=False, error=ERROR)
    for session_id in "ab":
        write(table, session_id, "WAITING")
    pump = pump_for(
        function, starting_position="TRIM_HORIZON", maximum_retry_attempts=2, on_failure_destination=DLQ_ARN
    )

    function.wait_for(lambda: len(function.batches) >= 3)
    assert pump.wait_idle(5)
    assert function.batches == [["a", "b"]] * 3
    assert pump_for.sent[0][1]["DDBStreamBatchInfo"]["batchSize"] == 2

    write(table, "c", "WAITING")  # the shard moves on after giving up
    function.wait_for(lambda: ["c"] in function.batches)


def test_records_older_than_the_maximum_age_are_given_up(table, pump_for) -> None:
    function = FakeFunction()
    function.behaviour = lambda records, n: InvokeResult("req", ok=False, error=ERROR)
    write(table, "old", "WAITING")
    pump = pump_for(
        function,
        starting_position="TRIM_HORIZON",
        maximum_record_age_seconds=1,
        on_failure_destination=DLQ_ARN,
    )

    deadline = time.monotonic() + 10
    while not pump_for.sent and time.monotonic() < deadline:
        time.sleep(0.1)
    assert pump.wait_idle(5)
    [(_, message)] = pump_for.sent
    assert message["requestContext"]["condition"] == "RecordAgeExceeded"
    assert len(function.batches) >= 2  # retried until too old, never given up on a retry count


def test_the_mapping_reads_sams_dynamodb_event_properties() -> None:
    mapping = StreamMapping.from_event(
        "Publisher",
        {
            "Stream": "arn:aws:dynamodb:eu-west-1:123456789012:table/t/stream/2026",
            "StartingPosition": "TRIM_HORIZON",
            "BatchSize": 25,
            "BisectBatchOnFunctionError": True,
            "MaximumRetryAttempts": 3,
            "MaximumRecordAgeInSeconds": 3600,
            "FunctionResponseTypes": ["ReportBatchItemFailures"],
            "FilterCriteria": {"Filters": [{"Pattern": '{"eventName": ["MODIFY"]}'}]},
            "DestinationConfig": {"OnFailure": {"Type": "SQS", "Destination": DLQ_ARN}},
        },
    )
    assert (mapping.batch_size, mapping.starting_position, mapping.maximum_retry_attempts) == (
        25,
        "TRIM_HORIZON",
        3,
    )
    assert mapping.bisect_batch_on_function_error and mapping.report_batch_item_failures
    assert (mapping.maximum_record_age_seconds, mapping.on_failure_destination) == (3600, DLQ_ARN)
    assert mapping.filter.matches({"eventName": "MODIFY"}) and not mapping.filter.matches(
        {"eventName": "INSERT"}
    )
    defaults = StreamMapping.from_event("P", {"Stream": "arn", "StartingPosition": "LATEST"})
    assert (
        defaults.batch_size,
        defaults.maximum_retry_attempts,
        defaults.bisect_batch_on_function_error,
    ) == (
        100,
        -1,
        False,
    )


class ExpiringStreams:
    """A streams client whose first iterator expires after one batch, as one does after 15 minutes."""

    def __init__(self) -> None:
        self.records = [
            {
                "eventName": "INSERT",
                "dynamodb": {"Keys": {"session_id": {"S": f"s-{n}"}}, "SequenceNumber": f"{n:03d}"},
            }
            for n in range(4)
        ]
        self.iterator_requests: list[dict[str, Any]] = []
        self.expired_once = False

    def describe_stream(self, **_: Any) -> dict[str, Any]:
        return {"StreamDescription": {"Shards": [{"ShardId": "shard-1"}]}}

    def get_shard_iterator(self, **arguments: Any) -> dict[str, Any]:
        self.iterator_requests.append(arguments)
        start = 0
        if arguments["ShardIteratorType"] == "AFTER_SEQUENCE_NUMBER":
            start = int(arguments["SequenceNumber"]) + 1
        return {"ShardIterator": f"at-{start}"}

    def get_records(self, ShardIterator: str, Limit: int) -> dict[str, Any]:
        position = int(ShardIterator.split("-")[1])
        if position == 2 and not self.expired_once:
            self.expired_once = True
            from botocore.exceptions import ClientError

            raise ClientError(
                {"Error": {"Code": "ExpiredIteratorException", "Message": "expired"}}, "GetRecords"
            )
        batch = self.records[position : position + 2]
        return {"Records": batch, "NextShardIterator": f"at-{position + len(batch)}"}


def test_an_expired_iterator_is_renewed_after_the_last_handled_record() -> None:
    streams = ExpiringStreams()
    function = FakeFunction()
    mapping = StreamMapping(function="P", stream="arn:stream", starting_position="TRIM_HORIZON")
    pump = StreamPump(
        mapping,
        function_arn=FUNCTION_ARN,
        streams=streams,  # type: ignore[arg-type]
        invoke=function,
        poll_interval=0.01,
    )
    pump.start()
    try:
        function.wait_for(lambda: sum(map(len, function.batches)) >= 4)
    finally:
        pump.stop()

    # Every record once, in order (the reader pages on within one read, so batch boundaries may differ).
    assert [record for batch in function.batches for record in batch] == ["s-0", "s-1", "s-2", "s-3"]
    assert streams.iterator_requests[1] == {
        "StreamArn": "arn:stream",
        "ShardId": "shard-1",
        "ShardIteratorType": "AFTER_SEQUENCE_NUMBER",
        "SequenceNumber": "001",
    }
