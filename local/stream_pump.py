"""The stream pump: reads a DynamoDB stream and invokes a function as Lambda's event source mapping does.

What it reproduces (AWS Lambda, "Using Lambda with DynamoDB", event source mapping parameters):
- every shard is read, a child shard only after its parent is done; the shards there at start are read
  from the mapping's StartingPosition (TRIM_HORIZON or LATEST), later ones from their beginning;
- records that match none of the FilterCriteria are dropped (never delivered); the others are delivered
  in order, in batches of at most BatchSize, one batch at a time per shard, in Lambda's record shape;
- with ReportBatchItemFailures, `{"batchItemFailures": [{"itemIdentifier": <sequence number>}]}`
  checkpoints before the lowest failed record and retries from it; an identifier that is not in the batch
  (or empty) fails the whole batch;
- a function error (exception, timeout) retries the batch, split in two first when
  BisectBatchOnFunctionError is on (splitting does not count as a retry);
- after MaximumRetryAttempts retries, or once a record is older than MaximumRecordAgeInSeconds, the batch
  is skipped and an invocation record goes to the OnFailure destination (an SQS queue);
- retries wait a short, growing delay (Lambda's backoff, scaled down for a laptop).
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

from botocore.exceptions import BotoCoreError, ClientError

from local.event_patterns import FilterCriteria
from local.runtime import InvokeResult

if TYPE_CHECKING:
    from mypy_boto3_dynamodbstreams import DynamoDBStreamsClient

_log = logging.getLogger("local.pump")
_GET_RECORDS_LIMIT = 1000


@dataclass(frozen=True)
class StreamMapping:
    """A `DynamoDB` event of a function, resolved."""

    function: str  # logical id
    function_arn: str
    stream_arn: str
    starting_position: str = "LATEST"
    batch_size: int = 100
    filters: FilterCriteria = field(default_factory=FilterCriteria)
    bisect_on_error: bool = False
    maximum_retry_attempts: int = -1  # -1: until the record expires
    maximum_record_age_seconds: int = -1
    report_batch_item_failures: bool = False
    on_failure_queue_arn: str | None = None
    enabled: bool = True

    @classmethod
    def from_event(cls, function: str, function_arn: str, properties: Mapping[str, Any]) -> StreamMapping:
        """From a SAM `DynamoDB` event's (resolved) properties."""
        destination = ((properties.get("DestinationConfig") or {}).get("OnFailure") or {}).get("Destination")
        return cls(
            function=function,
            function_arn=function_arn,
            stream_arn=str(properties["Stream"]),
            starting_position=str(properties.get("StartingPosition", "LATEST")),
            batch_size=int(properties.get("BatchSize", 100)),
            filters=FilterCriteria.from_template(properties.get("FilterCriteria")),
            bisect_on_error=_flag(properties.get("BisectBatchOnFunctionError", False)),
            maximum_retry_attempts=int(properties.get("MaximumRetryAttempts", -1)),
            maximum_record_age_seconds=int(properties.get("MaximumRecordAgeInSeconds", -1)),
            report_batch_item_failures="ReportBatchItemFailures"
            in (properties.get("FunctionResponseTypes") or []),
            on_failure_queue_arn=str(destination) if destination else None,
            enabled=_flag(properties.get("Enabled", True)),
        )


def _flag(value: Any) -> bool:
    return value is True or str(value).lower() == "true"


def lambda_record(raw: Mapping[str, Any], stream_arn: str, region: str) -> dict[str, Any]:
    """A GetRecords record as Lambda hands it to a function (times as epoch seconds, the stream's ARN)."""
    record = json.loads(json.dumps(raw, default=_json_default))
    record["awsRegion"] = region  # DynamoDB Local says "ddblocal"
    record["eventSourceARN"] = stream_arn
    return record


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, bytes):
        import base64  # noqa: PLC0415 - binary attributes are rare

        return base64.b64encode(value).decode()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


@dataclass
class PumpStats:
    records_read: int = 0
    records_filtered_out: int = 0
    records_delivered: int = 0  # in batches the function finished
    batches: int = 0  # invocations
    function_errors: int = 0
    partial_failures: int = 0
    retries: int = 0
    bisections: int = 0
    sent_to_destination: int = 0  # records given up on


@dataclass
class _Batch:
    records: list[dict[str, Any]]
    read_at: float  # time.time() when the pump read them (an upper bound of their creation, see _too_old)
    retries: int = 0


class StreamPump:
    def __init__(
        self,
        mapping: StreamMapping,
        *,
        streams: DynamoDBStreamsClient,
        invoke: Callable[[dict[str, Any]], InvokeResult],
        send_to_queue: Callable[[str, str], None] | None = None,
        region: str = "eu-west-1",
        poll_interval: float = 0.25,  # Lambda polls a shard about four times a second
        retry_delay: float = 0.2,
        max_retry_delay: float = 5.0,
    ) -> None:
        self.mapping = mapping
        self.stats = PumpStats()
        self._streams = streams
        self._invoke = invoke
        # (queue ARN, message body) -> None: how an on-failure record reaches its SQS destination.
        self._send_to_queue = send_to_queue
        self._region = region
        self._poll_interval = poll_interval
        self._retry_delay = retry_delay
        self._max_retry_delay = max_retry_delay
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._shards: dict[str, threading.Thread] = {}  # started shard readers
        self._done: set[str] = set()  # shards read to their end
        self._initial: set[str] | None = None
        self._idle = threading.Condition()
        self._busy = 0
        # Set once every shard known at start is being read: from then on no write is missed (LATEST).
        self.reading = threading.Event()
        self._first_reads: set[str] = set()

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        if not self.mapping.enabled:
            _log.info("%s: stream mapping disabled in the template", self.mapping.function)
            return
        self._thread = threading.Thread(
            target=self._discover_loop, name=f"pump-{self.mapping.function}", daemon=True
        )
        self._thread.start()
        _log.info(
            "%s ← %s (batch %d, %s, filters: %d, retries: %s, bisect: %s, partial batch: %s, on failure: %s)",
            self.mapping.function,
            self.mapping.stream_arn.split(":table/")[-1].split("/stream/")[0],
            self.mapping.batch_size,
            self.mapping.starting_position,
            len(self.mapping.filters.patterns),
            "∞" if self.mapping.maximum_retry_attempts < 0 else self.mapping.maximum_retry_attempts,
            self.mapping.bisect_on_error,
            self.mapping.report_batch_item_failures,
            self.mapping.on_failure_queue_arn or "dropped",
        )

    def stop(self) -> None:
        self._stop.set()
        threads = [self._thread, *list(self._shards.values())]
        for thread in threads:
            if thread is not None:
                thread.join(timeout=10)
        self._thread = None

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no batch is being delivered or retried (tests use it after writes have been read)."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._busy:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._idle.wait(remaining)
        return True

    # -- shards ----------------------------------------------------------------------------------

    def _discover_loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._discover()
            except (BotoCoreError, ClientError) as error:
                _log.warning("%s: DescribeStream failed: %s", self.mapping.function, error)
            self._stop.wait(1.0)

    def _discover(self) -> None:
        shards: list[Mapping[str, Any]] = []
        start: dict[str, Any] = {}
        while True:
            description = self._streams.describe_stream(StreamArn=self.mapping.stream_arn, **start)[
                "StreamDescription"
            ]
            shards += description.get("Shards", [])
            last = description.get("LastEvaluatedShardId")
            if not last:
                break
            start = {"ExclusiveStartShardId": last}
        known = {shard["ShardId"] for shard in shards}
        if self._initial is None:
            self._initial = known
            if not known:
                self.reading.set()  # nothing to read yet: the first shard will be read from its start
        for shard in shards:
            shard_id = shard["ShardId"]
            parent = shard.get("ParentShardId")
            if shard_id in self._shards:
                continue
            if parent and parent in known and parent not in self._done:
                continue  # Lambda finishes a parent before reading its children
            position = self.mapping.starting_position if shard_id in self._initial else "TRIM_HORIZON"
            thread = threading.Thread(
                target=self._read_shard, args=(shard_id, position), name=f"pump-{shard_id[-8:]}", daemon=True
            )
            self._shards[shard_id] = thread
            thread.start()

    def _read_shard(self, shard_id: str, position: str) -> None:
        iterator: str | None = self._iterator(shard_id, position)
        if iterator is None:
            self._shards.pop(shard_id, None)  # discovery tries again
            return
        last_sequence: str | None = None  # of the last record handled: where to resume
        while iterator is not None and not self._stop.is_set():
            try:
                response = self._streams.get_records(ShardIterator=iterator, Limit=_GET_RECORDS_LIMIT)
            except ClientError as error:
                if error.response.get("Error", {}).get("Code") != "ExpiredIteratorException":
                    _log.warning("%s: GetRecords failed on %s: %s", self.mapping.function, shard_id, error)
                    self._stop.wait(1.0)
                    continue
                # An iterator lives 15 minutes: a batch retried that long (no retry limit) outlives it.
                resume = ("AFTER_SEQUENCE_NUMBER", last_sequence) if last_sequence else (position, None)
                renewed = self._iterator(shard_id, *resume)
                if renewed is None:
                    self._stop.wait(1.0)
                else:
                    iterator = renewed
                continue
            except BotoCoreError as error:
                _log.warning("%s: GetRecords failed on %s: %s", self.mapping.function, shard_id, error)
                self._stop.wait(1.0)
                continue
            iterator = cast("str | None", response.get("NextShardIterator"))  # None: the shard is closed
            self._mark_reading(shard_id)
            raw_records = response.get("Records", [])
            if raw_records:
                self._deliver_all(shard_id, raw_records)
                last_sequence = raw_records[-1]["dynamodb"]["SequenceNumber"]
            elif iterator is not None:
                self._stop.wait(self._poll_interval)
        if iterator is None:
            self._done.add(shard_id)

    def _iterator(self, shard_id: str, position: str, sequence_number: str | None = None) -> str | None:
        arguments: dict[str, Any] = {"StreamArn": self.mapping.stream_arn, "ShardId": shard_id}
        arguments["ShardIteratorType"] = position
        if sequence_number is not None:
            arguments["SequenceNumber"] = sequence_number
        try:
            iterator: str = self._streams.get_shard_iterator(**arguments)["ShardIterator"]
        except (BotoCoreError, ClientError) as error:
            _log.warning("%s: GetShardIterator failed on %s: %s", self.mapping.function, shard_id, error)
            return None
        return iterator

    def _mark_reading(self, shard_id: str) -> None:
        if self.reading.is_set():
            return
        self._first_reads.add(shard_id)
        if self._initial is not None and self._initial <= self._first_reads | self._done:
            self.reading.set()

    # -- delivery --------------------------------------------------------------------------------

    def _deliver_all(self, shard_id: str, raw_records: list[Any]) -> None:
        read_at = time.time()
        records = [lambda_record(raw, self.mapping.stream_arn, self._region) for raw in raw_records]
        self.stats.records_read += len(records)
        matching = [record for record in records if self.mapping.filters.matches(record)]
        self.stats.records_filtered_out += len(records) - len(matching)
        size = self.mapping.batch_size
        with self._idle:
            self._busy += 1
        try:
            for start in range(0, len(matching), size):
                if self._stop.is_set():
                    return
                self._deliver(shard_id, _Batch(matching[start : start + size], read_at))
        finally:
            with self._idle:
                self._busy -= 1
                self._idle.notify_all()

    def _deliver(self, shard_id: str, first: _Batch) -> None:
        """Deliver a batch until it succeeds or is given up, in order, bisecting and retrying like Lambda."""
        queue: deque[_Batch] = deque([first])
        while queue and not self._stop.is_set():
            batch = queue[0]
            if self._too_old(batch):
                queue.popleft()
                self._give_up(shard_id, batch, "RecordAgeExceeded", None)
                continue
            result = self._invoke({"Records": batch.records})
            self.stats.batches += 1
            failed_from = self._first_failure(batch, result)
            if failed_from is None:
                queue.popleft()
                self.stats.records_delivered += len(batch.records)
                continue
            if failed_from > 0:  # partial success: checkpoint before the first failed record
                self.stats.partial_failures += 1
                self.stats.records_delivered += failed_from
                batch = queue[0] = _Batch(batch.records[failed_from:], batch.read_at, batch.retries)
            elif result.ok:
                self.stats.partial_failures += 1  # the first record failed: retry the whole batch
            else:
                self.stats.function_errors += 1
                if self.mapping.bisect_on_error and len(batch.records) > 1:
                    half = len(batch.records) // 2
                    queue.popleft()
                    queue.extendleft(
                        [
                            _Batch(batch.records[half:], batch.read_at, batch.retries),
                            _Batch(batch.records[:half], batch.read_at, batch.retries),
                        ]
                    )
                    self.stats.bisections += 1
                    _log.info(
                        "%s: batch of %d failed (%s); split in two",
                        self.mapping.function,
                        len(batch.records),
                        result.error_summary,
                    )
                    continue
            limit = self.mapping.maximum_retry_attempts
            if 0 <= limit <= batch.retries:
                queue.popleft()
                self._give_up(shard_id, batch, "RetryAttemptsExhausted", result)
                continue
            batch.retries += 1
            self.stats.retries += 1
            delay = min(self._max_retry_delay, self._retry_delay * 2 ** (batch.retries - 1))
            _log.info(
                "%s: %d record(s) failed (%s); retry %d in %.1fs",
                self.mapping.function,
                len(batch.records),
                result.error_summary or "reported as batch item failures",
                batch.retries,
                delay,
            )
            self._stop.wait(delay)

    def _first_failure(self, batch: _Batch, result: InvokeResult) -> int | None:
        """Index of the first record to retry (0: the whole batch), or None when the batch succeeded."""
        if not result.ok:
            return 0
        if not self.mapping.report_batch_item_failures:
            return None
        payload = result.payload
        if not isinstance(payload, dict):
            return None  # null or another shape: Lambda takes the batch as a success
        failures = payload.get("batchItemFailures")
        if not failures:
            return None
        sequence_numbers = [record["dynamodb"]["SequenceNumber"] for record in batch.records]
        indexes = []
        for failure in failures:
            identifier = failure.get("itemIdentifier") if isinstance(failure, dict) else None
            if not identifier or identifier not in sequence_numbers:
                _log.warning(
                    "%s: invalid batchItemFailures entry %r: the whole batch fails",
                    self.mapping.function,
                    failure,
                )
                return 0
            indexes.append(sequence_numbers.index(identifier))
        return min(indexes)

    def _too_old(self, batch: _Batch) -> bool:
        limit = self.mapping.maximum_record_age_seconds
        if limit < 0:
            return False
        # DynamoDB Local rounds ApproximateCreationDateTime down to the minute (AWS: to the second), which
        # would make records look up to a minute older than they are; when the pump read them bounds it.
        created = max(
            min(float(record["dynamodb"].get("ApproximateCreationDateTime", 0)) for record in batch.records),
            batch.read_at - self._poll_interval,
        )
        return time.time() - created > limit

    def _give_up(self, shard_id: str, batch: _Batch, condition: str, result: InvokeResult | None) -> None:
        self.stats.sent_to_destination += len(batch.records)
        first, last = batch.records[0]["dynamodb"], batch.records[-1]["dynamodb"]
        _log.warning(
            "%s: gave up on %d record(s) after %d retries (%s)%s",
            self.mapping.function,
            len(batch.records),
            batch.retries,
            condition,
            "; sent to the on-failure queue"
            if self.mapping.on_failure_queue_arn
            else "; dropped (no destination)",
        )
        if not self.mapping.on_failure_queue_arn or self._send_to_queue is None:
            return
        message = {
            "requestContext": {
                "requestId": result.request_id if result else str(uuid.uuid4()),
                "functionArn": self.mapping.function_arn,
                "condition": condition,
                "approximateInvokeCount": batch.retries + 1,
            },
            "responseContext": {
                "statusCode": 200,
                "executedVersion": "$LATEST",
                "functionError": "" if result is None or result.ok else "Unhandled",
            },
            "version": "1.0",
            "timestamp": _iso(time.time()),
            "DDBStreamBatchInfo": {
                "shardId": shard_id,
                "startSequenceNumber": first["SequenceNumber"],
                "endSequenceNumber": last["SequenceNumber"],
                "approximateArrivalOfFirstRecord": _iso(first.get("ApproximateCreationDateTime")),
                "approximateArrivalOfLastRecord": _iso(last.get("ApproximateCreationDateTime")),
                "batchSize": len(batch.records),
                "streamArn": self.mapping.stream_arn,
            },
        }
        try:
            self._send_to_queue(self.mapping.on_failure_queue_arn, json.dumps(message))
        except (BotoCoreError, ClientError) as error:
            _log.error("%s: could not send to the on-failure queue: %s", self.mapping.function, error)


def _iso(epoch_seconds: float | None) -> str | None:
    if epoch_seconds is None:
        return None
    moment = datetime.fromtimestamp(float(epoch_seconds), UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
