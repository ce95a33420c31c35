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
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, cast

from botocore.exceptions import BotoCoreError, ClientError

from local.emulators.dynamodb_streams import StreamReader
from local.emulators.runtime import InvokeResult
from local.emulators.stream_mapping import StreamMapping, records_to_retry

if TYPE_CHECKING:
    from mypy_boto3_dynamodbstreams import DynamoDBStreamsClient

_log = logging.getLogger("local.pump")
_GET_RECORDS_LIMIT = 1000


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
    def __init__(  # noqa: PLR0913 - the mapping, its function, the stack's hooks and the pacing knobs
        self,
        mapping: StreamMapping,
        *,
        function_arn: str,
        streams: DynamoDBStreamsClient,
        invoke: Callable[[dict[str, Any]], InvokeResult],
        send_to_queue: Callable[[str, str], None] | None = None,
        region: str = "eu-west-1",
        poll_interval: float = 0.25,  # Lambda polls a shard about four times a second
        retry_delay: float = 0.2,
        max_retry_delay: float = 5.0,
    ) -> None:
        self.mapping = mapping
        self.function_arn = function_arn
        self.stream_arn = str(mapping.stream)  # resolved by the stack: the stream's ARN
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
        self._reader = StreamReader(
            streams,
            self.stream_arn,
            starting_position=cast("Literal['TRIM_HORIZON', 'LATEST']", mapping.starting_position),
        )
        self._idle = threading.Condition()
        self._busy = 0
        # Set once every shard known at start is being read: from then on no write is missed (LATEST).
        self.reading = threading.Event()

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        if not self.mapping.enabled:
            _log.info("%s: stream mapping disabled in the template", self.mapping.function)
            return
        self._thread = threading.Thread(
            target=self._read_loop, name=f"pump-{self.mapping.function}", daemon=True
        )
        self._thread.start()
        _log.info(
            "%s ← %s (batch %d, %s, filters: %d, retries: %s, bisect: %s, partial batch: %s, on failure: %s)",
            self.mapping.function,
            self.stream_arn.split(":table/")[-1].split("/stream/")[0],
            self.mapping.batch_size,
            self.mapping.starting_position,
            len(self.mapping.filter.patterns),
            "∞" if self.mapping.maximum_retry_attempts < 0 else self.mapping.maximum_retry_attempts,
            self.mapping.bisect_batch_on_function_error,
            self.mapping.report_batch_item_failures,
            self.mapping.on_failure_destination or "dropped",
        )

    def halt(self) -> None:
        """Read and deliver nothing more; `stop()` then waits for the delivery in flight."""
        self._stop.set()

    def stop(self) -> None:
        self.halt()
        if self._thread is not None:
            self._thread.join(timeout=10)
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

    # -- reading -------------------------------------------------------------------------------

    def _read_loop(self) -> None:
        """Read every shard (parents first) and deliver what was read before reading on, as Lambda does:
        a shard's next records wait until its current batch succeeded or was given up."""
        while not self._stop.is_set():
            try:
                by_shard = self._reader.read_by_shard(_GET_RECORDS_LIMIT)
            except (BotoCoreError, ClientError) as error:
                _log.warning("%s: reading the stream failed: %s", self.mapping.function, error)
                self._stop.wait(1.0)
                continue
            self.reading.set()  # every shard there at start has its iterator: no later write is missed
            for shard_id, records in by_shard.items():
                for record in records:
                    record["awsRegion"] = self._region  # DynamoDB Local says "ddblocal"
                self._deliver_all(shard_id, records)
            if not by_shard:
                self._stop.wait(self._poll_interval)

    # -- delivery --------------------------------------------------------------------------------

    def _deliver_all(self, shard_id: str, records: list[dict[str, Any]]) -> None:
        read_at = time.time()
        self.stats.records_read += len(records)
        matching = [record for record in records if self.mapping.filter.matches(record)]
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
            if self._stop.is_set():
                return  # cut short by the stop (its instance was ended): neither retried nor given up
            failed_from = self._first_failure(batch, result)
            if failed_from is None:
                queue.popleft()
                self.stats.records_delivered += len(batch.records)
                continue
            if not result.ok:
                self.stats.function_errors += 1
                if self._bisect(queue, result):
                    continue
            self._retry_or_give_up(shard_id, queue, result, failed_from)

    def _bisect(self, queue: deque[_Batch], result: InvokeResult) -> bool:
        """After a function error, split the failed batch in two if the mapping says so (not a retry)."""
        batch = queue[0]
        if not self.mapping.bisect_batch_on_function_error or len(batch.records) <= 1:
            return False
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
        return True

    def _retry_or_give_up(
        self, shard_id: str, queue: deque[_Batch], result: InvokeResult, failed_from: int
    ) -> None:
        """Checkpoint before the first failed record, then retry from it after a delay, or give up."""
        batch = queue[0]
        if failed_from > 0:  # partial success: the records before the first failure are done
            self.stats.partial_failures += 1
            self.stats.records_delivered += failed_from
            batch = queue[0] = _Batch(batch.records[failed_from:], batch.read_at, batch.retries)
        elif result.ok:
            self.stats.partial_failures += 1  # the first record failed: retry the whole batch
        limit = self.mapping.maximum_retry_attempts
        if 0 <= limit <= batch.retries:
            queue.popleft()
            self._give_up(shard_id, batch, "RetryAttemptsExhausted", result)
            return
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
        again = records_to_retry(batch.records, result.payload)
        if not again:
            return None
        if len(again) == len(batch.records):
            _log.warning(
                "%s: batch response %s: the whole batch fails",
                self.mapping.function,
                str(result.payload)[:200],
            )
        return len(batch.records) - len(again)

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
            if self.mapping.on_failure_destination
            else "; dropped (no destination)",
        )
        if not self.mapping.on_failure_destination or self._send_to_queue is None:
            return
        message = {
            "requestContext": {
                "requestId": result.request_id if result else str(uuid.uuid4()),
                "functionArn": self.function_arn,
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
                "streamArn": self.stream_arn,
            },
        }
        try:
            self._send_to_queue(self.mapping.on_failure_destination, json.dumps(message))
        except (BotoCoreError, ClientError) as error:
            _log.error("%s: could not send to the on-failure queue: %s", self.mapping.function, error)


def _iso(epoch_seconds: float | None) -> str | None:
    if epoch_seconds is None:
        return None
    moment = datetime.fromtimestamp(float(epoch_seconds), UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
