"""Read a table's DynamoDB stream and hand its records over exactly as Lambda delivers them.

The one stream reader: used by the tests (records from DynamoDB Local's real stream, after real writes)
and by the local stack's stream pump (local/emulators/stream_pump.py), which delivers what it reads.
A Lambda DynamoDB event is `{"Records": [...]}`; each record is what the streams
API's GetRecords returns for it (`eventID`, `eventName`, `eventVersion`, `eventSource`, `awsRegion`,
`dynamodb` with `ApproximateCreationDateTime`, `Keys`, `NewImage`, `OldImage`, `SequenceNumber`,
`SizeBytes`, `StreamViewType`, and `userIdentity` for TTL deletions) plus `eventSourceARN`, the stream's
ARN. The only conversions: `ApproximateCreationDateTime` (boto3 parses it into a datetime, Lambda
delivers epoch seconds as a number) and binary values (bytes in boto3, base64 in Lambda's JSON).

Works on any streams endpoint (DynamoDB Local, moto, AWS); values such as the region and account in
the ARN are the endpoint's own (DynamoDB Local says `ddblocal` and `000000000000`).
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from botocore.exceptions import ClientError

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_dynamodbstreams import DynamoDBStreamsClient

RECORD_KEYS = ("eventID", "eventName", "eventVersion", "eventSource", "awsRegion")


def lambda_record(stream_record: Mapping[str, Any], stream_arn: str) -> dict[str, Any]:
    """One GetRecords record (as boto3 returns it) shaped as in Lambda's event."""
    # JSON as Lambda sends it: ApproximateCreationDateTime in epoch seconds, binary values in base64.
    dynamodb = json.loads(json.dumps(stream_record["dynamodb"], default=_as_lambda_json))
    record: dict[str, Any] = {key: stream_record[key] for key in RECORD_KEYS if key in stream_record}
    record["dynamodb"] = dynamodb
    if "userIdentity" in stream_record:
        record["userIdentity"] = dict(stream_record["userIdentity"])
    record["eventSourceARN"] = stream_arn
    return record


def _as_lambda_json(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(value).decode()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def lambda_event(records: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The event Lambda invokes a DynamoDB-stream function with."""
    return {"Records": [dict(record) for record in records]}


class StreamReader:
    """Follows every shard of one stream and hands out the records not handed out yet, in order.

    Shards are read parent first (a child shard waits until its parent is read to its end), each in
    sequence-number order, from TRIM_HORIZON (every record the stream still holds) or LATEST (records
    written from now on). An expired shard iterator is renewed after the last record handed out.
    """

    def __init__(
        self,
        client: DynamoDBStreamsClient,
        stream_arn: str,
        *,
        starting_position: Literal["TRIM_HORIZON", "LATEST"] = "TRIM_HORIZON",
    ) -> None:
        self.client = client
        self.stream_arn = stream_arn
        self._starting_position = starting_position
        self._iterators: dict[str, str] = {}  # open shards we read: shard id -> next iterator
        self._parents: dict[str, str | None] = {}
        self._last_sequence: dict[str, str] = {}
        self._finished: set[str] = set()
        self._started = False

    @classmethod
    def for_table(
        cls,
        dynamodb: DynamoDBClient,
        streams: DynamoDBStreamsClient,
        table_name: str,
        *,
        starting_position: Literal["TRIM_HORIZON", "LATEST"] = "TRIM_HORIZON",
    ) -> StreamReader:
        stream_arn = dynamodb.describe_table(TableName=table_name)["Table"].get("LatestStreamArn")
        if not stream_arn:
            raise ValueError(f"table {table_name} has no stream")
        return cls(streams, stream_arn, starting_position=starting_position)

    def read_by_shard(self, limit: int = 1000) -> dict[str, list[dict[str, Any]]]:
        """New records per shard (at most `limit` per shard), shaped as Lambda delivers them."""
        self._discover_shards()
        batches: dict[str, list[dict[str, Any]]] = {}
        for shard_id in list(self._iterators):
            parent = self._parents.get(shard_id)
            if parent is not None and parent in self._iterators:
                continue  # the parent's records come first
            try:
                records = self._read_shard(shard_id, limit)
            except Exception:
                if batches:
                    return batches  # hand out what was read (those iterators moved on); retry it later
                raise
            if records:
                batches[shard_id] = records
        return batches

    def read(self, limit: int = 1000) -> list[dict[str, Any]]:
        """New records of every shard, one list (parent shards' records before their children's)."""
        return [record for records in self.read_by_shard(limit).values() for record in records]

    def read_until(
        self,
        done: Callable[[list[dict[str, Any]]], bool],
        *,
        timeout: float = 10.0,
        interval: float = 0.05,
    ) -> list[dict[str, Any]]:
        """Read until `done(records so far)` is true; raise TimeoutError with what was read otherwise."""
        records: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while True:
            records.extend(self.read())
            if done(records):
                return records
            if time.monotonic() > deadline:
                raise TimeoutError(f"stream gave {len(records)} records in {timeout:.0f}s: not enough")
            time.sleep(interval)

    # ---------------------------------------------------------------------------------- internal
    def _discover_shards(self) -> None:
        # Shards there at the first read start at the starting position; any shard that appears later
        # holds only new records and is read from its beginning.
        first_discovery = not self._started
        self._started = True
        for shard in self._shards():
            shard_id = shard["ShardId"]
            if shard_id in self._iterators or shard_id in self._finished:
                continue
            self._parents[shard_id] = shard.get("ParentShardId")
            closed = bool(shard.get("SequenceNumberRange", {}).get("EndingSequenceNumber"))
            if first_discovery and self._starting_position == "LATEST" and closed:
                self._finished.add(shard_id)  # nothing will be written to it from now on
                continue
            position = self._starting_position if first_discovery else "TRIM_HORIZON"
            self._iterators[shard_id] = self._iterator(shard_id, position)

    def _shards(self) -> Iterator[Mapping[str, Any]]:
        """Every shard of the stream, page by page."""
        kwargs: dict[str, Any] = {"StreamArn": self.stream_arn}
        while True:
            description = self.client.describe_stream(**kwargs)["StreamDescription"]
            yield from description.get("Shards", [])
            if not description.get("LastEvaluatedShardId"):
                return
            kwargs["ExclusiveStartShardId"] = description["LastEvaluatedShardId"]

    def _iterator(self, shard_id: str, position: str, after: str | None = None) -> str:
        kwargs: dict[str, Any] = {"StreamArn": self.stream_arn, "ShardId": shard_id}
        if after is not None:
            kwargs.update(ShardIteratorType="AFTER_SEQUENCE_NUMBER", SequenceNumber=after)
        else:
            kwargs["ShardIteratorType"] = position
        iterator: str = self.client.get_shard_iterator(**kwargs)["ShardIterator"]
        return iterator

    def _read_shard(self, shard_id: str, limit: int) -> list[dict[str, Any]]:
        records: list[dict[str, Any]] = []
        while len(records) < limit:
            try:
                response = self.client.get_records(
                    ShardIterator=self._iterators[shard_id], Limit=min(1000, limit - len(records))
                )
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") != "ExpiredIteratorException":
                    if records:
                        return records  # the iterator is past them: hand them out, retry the read next time
                    raise
                after = self._last_sequence.get(shard_id)
                self._iterators[shard_id] = self._iterator(shard_id, "TRIM_HORIZON", after)
                continue
            batch = response.get("Records", [])
            records.extend(lambda_record(record, self.stream_arn) for record in batch)
            if batch:
                self._last_sequence[shard_id] = batch[-1]["dynamodb"]["SequenceNumber"]
            # Absent once a closed shard is read to its end (the stubs say it is always there).
            next_iterator: str | None = response.get("NextShardIterator")
            if next_iterator is None:  # the shard is closed and read to its end
                del self._iterators[shard_id]
                self._finished.add(shard_id)
                break
            self._iterators[shard_id] = next_iterator
            if not batch:
                break
        return records
