"""`redrive`: the publisher's failure queue turned back into the events that never reached the bus.

When the publisher gives up on a batch (retries or record age exhausted), Lambda sends the failure queue
a description of the batch, not the records: its shard, first and last sequence numbers, stream ARN,
size and arrival times. What can be recovered from that depends on the stream:

- **Within the stream's 24 hours** the records are still there. They are read back (from the first
  sequence number to the last) and each becomes exactly the events the publisher would have published
  for it (`publishing.events_for_record`: the same builder, the same images, so the same ids and the same
  `previous_status`). This is exact: every missing event, nothing else (an event of the batch that did
  reach the bus is put again with its id, which consumers de-duplicate).
- **After that** the records are gone and the message no longer says which sessions it concerned. What
  is left is the table: a session whose last recorded change falls in the batch's arrival window is
  found by `--scan-trimmed` (a Scan of the whole table, billed by its size) and its current events
  are republished (the same ids as that change's). Every final transition is recovered that way (a
  final row is never written again, so its change stays the last); a non-final change that a later one
  overwrote is not, but that later change was published (or is in a message of its own), and its
  Status Changed event says where the session went. Without `--scan-trimmed` such a message is reported
  and kept.

A message is deleted only when every event it stands for was put on the bus; `--dry-run` says what would
be published and leaves the queue as it was.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from aws_lambda_powertools.utilities.data_classes.dynamo_db_stream_event import DynamoDBRecord
from botocore.exceptions import BotoCoreError, ClientError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from hpp_core.publishing import BusEvent, UnpublishableRecord, events_for_record, events_for_session
from ops.report import Report
from ops.sessions import publish
from ops.target import Target

# ApproximateCreationDateTime is rounded (to the second on AWS, the minute on DynamoDB Local) and the
# tracker stamps recorded_at with its own clock: the window looked for is widened by this much.
ARRIVAL_MARGIN = timedelta(minutes=1)
# Empty GetRecords answers in a row after which an open shard is taken to hold nothing more.
_EMPTY_READS = 5
_RECEIVE = {"MaxNumberOfMessages": 10, "WaitTimeSeconds": 1, "VisibilityTimeout": 120}


class FailedBatch(BaseModel):
    """Lambda's on-failure record for a DynamoDB stream batch (its `DDBStreamBatchInfo`)."""

    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    shard_id: str = Field(alias="shardId")
    start_sequence_number: str = Field(alias="startSequenceNumber")
    end_sequence_number: str = Field(alias="endSequenceNumber")
    stream_arn: str = Field(alias="streamArn")
    batch_size: int = Field(alias="batchSize", ge=1)
    first_arrival: datetime | None = Field(default=None, alias="approximateArrivalOfFirstRecord")
    last_arrival: datetime | None = Field(default=None, alias="approximateArrivalOfLastRecord")

    @classmethod
    def from_message(cls, body: str) -> FailedBatch:
        """Raises ValueError for a message that is not Lambda's on-failure record of a stream batch."""
        try:
            info = json.loads(body)["DDBStreamBatchInfo"]
        except (ValueError, KeyError, TypeError):
            raise ValueError("not a DynamoDB stream batch's on-failure record") from None
        try:
            return cls.model_validate(info)
        except ValidationError as error:
            raise ValueError(f"unreadable batch description ({error.error_count()} problem(s))") from None

    def holds(self, sequence_number: str) -> bool:
        return int(self.start_sequence_number) <= int(sequence_number) <= int(self.end_sequence_number)

    def passed(self, sequence_number: str) -> bool:
        return int(sequence_number) > int(self.end_sequence_number)


class RecordsGone(Exception):
    """The batch's records are no longer in the stream (trimmed after 24 hours, or the stream replaced)."""


def batch_records(streams: Any, batch: FailedBatch) -> list[dict[str, Any]]:
    """The batch's records read back from the stream, in order, as Lambda delivered them."""
    try:
        iterator = streams.get_shard_iterator(
            StreamArn=batch.stream_arn,
            ShardId=batch.shard_id,
            ShardIteratorType="AT_SEQUENCE_NUMBER",
            SequenceNumber=batch.start_sequence_number,
        ).get("ShardIterator")
        records: list[dict[str, Any]] = []
        empty = 0
        while iterator and len(records) < batch.batch_size and empty < _EMPTY_READS:
            page = streams.get_records(ShardIterator=iterator, Limit=1000)
            found = page.get("Records", [])
            empty = 0 if found else empty + 1
            for record in found:
                sequence_number = record["dynamodb"]["SequenceNumber"]
                if batch.passed(sequence_number):
                    return records
                if batch.holds(sequence_number):
                    records.append(_as_delivered(record, batch.stream_arn))
            iterator = page.get("NextShardIterator")
        return records
    except ClientError as error:
        code = error.response.get("Error", {}).get("Code", "")
        if code in {"TrimmedDataAccessException", "ResourceNotFoundException"}:
            raise RecordsGone(code) from None
        raise


def _as_delivered(record: dict[str, Any], stream_arn: str) -> dict[str, Any]:
    """A GetRecords record as Lambda's event holds it: boto3 parses ApproximateCreationDateTime into a
    datetime, Lambda delivers epoch seconds (the only difference the publisher's reading depends on)."""
    dynamodb = dict(record["dynamodb"])
    created = dynamodb.get("ApproximateCreationDateTime")
    if isinstance(created, datetime):
        dynamodb["ApproximateCreationDateTime"] = created.timestamp()
    return {**record, "dynamodb": dynamodb, "eventSourceARN": stream_arn}


@dataclass
class Redrive:
    target: Target
    dry_run: bool
    scan_trimmed: bool

    def run(self) -> Report:
        sqs = self.target.client("sqs")
        queue_url = self.target.output("PublisherFailureQueueUrl")
        report = Report("redrive", data={"dry_run": self.dry_run, "messages": [], "events": []})
        seen: set[str] = set()
        held: list[str] = []  # receipt handles of the messages that stay in the queue
        while True:
            messages = sqs.receive_message(QueueUrl=queue_url, **_RECEIVE).get("Messages", [])
            fresh = [message for message in messages if message["MessageId"] not in seen]
            if not fresh:
                break
            for message in fresh:
                seen.add(message["MessageId"])
                if self._message(message, report) and not self.dry_run:
                    sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
                else:
                    held.append(message["ReceiptHandle"])
        # Visible again only now (released earlier, a message would come round again in this run): what
        # stays is seen by the next run and by the alarm at once; a dry run leaves the queue as it was.
        for receipt in held:
            sqs.change_message_visibility(QueueUrl=queue_url, ReceiptHandle=receipt, VisibilityTimeout=0)
        kept = sum(1 for entry in report.data["messages"] if not entry["redriven"])
        verb = "would be redriven" if self.dry_run else "redriven and deleted"
        report.say(f"{len(seen)} message(s): {len(seen) - kept} {verb}, {kept} kept")
        return report

    def _message(self, message: dict[str, Any], report: Report) -> bool:
        entry: dict[str, Any] = {"message_id": message["MessageId"], "redriven": False}
        report.data["messages"].append(entry)
        try:
            batch = FailedBatch.from_message(message.get("Body", ""))
        except ValueError as error:
            report.failed(f"message {message['MessageId']}: {error}; kept")
            return False
        entry.update(shard_id=batch.shard_id, records=batch.batch_size)
        try:
            events = self._events(batch, entry, report)
        except (UnpublishableRecord, RecordsGone, BotoCoreError, ClientError) as error:
            entry["problem"] = str(error)
            report.failed(f"message {message['MessageId']}: {self._explain(error, batch)}; kept")
            return False
        if self.dry_run:
            for event in events:
                report.say(
                    f"{event.session_id}  {event.detail_type:<27} {event.event_id}  would be published"
                )
                report.data["events"].append(
                    {
                        "session_id": event.session_id,
                        "detail_type": event.detail_type,
                        "event_id": event.event_id,
                    }
                )
            entry["redriven"] = True
            return True
        entry["redriven"] = publish(self.target, events, report)
        return bool(entry["redriven"])

    def _events(self, batch: FailedBatch, entry: dict[str, Any], report: Report) -> list[BusEvent]:
        try:
            records = batch_records(self.target.client("dynamodbstreams"), batch)
        except RecordsGone:
            if not self.scan_trimmed:
                raise
            entry["recovered_from"] = "table scan"
            return self._events_from_table(batch, report)
        entry["recovered_from"] = "stream"
        sessions = sorted(
            {str(r["dynamodb"].get("Keys", {}).get("session_id", {}).get("S")) for r in records}
        )
        entry["sessions"] = sessions
        report.say(
            f"batch {batch.shard_id} {batch.start_sequence_number}..{batch.end_sequence_number}: "
            f"{len(records)} record(s) read back from the stream, sessions {', '.join(sessions) or '-'}"
        )
        return [event for record in records for event in events_for_record(DynamoDBRecord(record))]

    def _events_from_table(self, batch: FailedBatch, report: Report) -> list[BusEvent]:
        if batch.first_arrival is None or batch.last_arrival is None:
            raise RecordsGone("the message names no arrival times to look for")
        start, end = batch.first_arrival - ARRIVAL_MARGIN, batch.last_arrival + ARRIVAL_MARGIN
        sessions = list(self.target.repository().sessions_recorded_between(start, end))
        report.say(
            f"batch {batch.shard_id}: records trimmed; {len(sessions)} session(s) last changed in its window"
        )
        return [
            event
            for session in sessions
            for event in events_for_session(session, previous_status=None, time=session.recorded_at)
        ]

    @staticmethod
    def _explain(error: Exception, batch: FailedBatch) -> str:
        if isinstance(error, RecordsGone):
            return (
                f"its stream records are gone ({error}; the stream keeps 24 hours): rerun with "
                f"--scan-trimmed to republish the sessions last changed between {batch.first_arrival} and "
                f"{batch.last_arrival}"
            )
        return str(error)


def redrive(target: Target, *, dry_run: bool = False, scan_trimmed: bool = False) -> Report:
    return Redrive(target, dry_run=dry_run, scan_trimmed=scan_trimmed).run()
