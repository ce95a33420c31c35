"""Putting events on the bus, a whole stream batch at a time.

`EventBus.put` sends events in PutEvents calls of at most 10 entries and 256 KB and says, per event,
whether EventBridge took it. `StreamPublisher` is Powertools' `BatchProcessor` for DynamoDB streams with
one change: the record handler only *decides* each record's events; they are sent together when the batch
closes, and a record any of whose entries failed is moved to the failures Powertools reports
(`batchItemFailures`), so Lambda retries from exactly there and the retry publishes the same event ids.
"""

from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import boto3
import botocore.exceptions
from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType
from aws_lambda_powertools.utilities.batch.exceptions import ExceptionInfo
from aws_lambda_powertools.utilities.data_classes.dynamo_db_stream_event import DynamoDBRecord
from botocore.config import Config

from hpp_core.publishing import COMPLETED, STATUS_CHANGED, BusEvent, UnpublishableRecord

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.batch.base import BatchEventTypes, FailureResponse, SuccessResponse
    from mypy_boto3_events import EventBridgeClient
    from mypy_boto3_events.type_defs import PutEventsRequestEntryTypeDef

# PutEvents' limits: entries per call, and bytes per call as EventBridge counts them (entry_size).
MAX_ENTRIES_PER_CALL: Final = 10
MAX_REQUEST_BYTES: Final = 256 * 1024

PUBLISHED_METRIC: Final = {STATUS_CHANGED: "PublishedStatusChanged", COMPLETED: "PublishedCompleted"}

# A batch has the function's whole timeout (30 s); a PutEvents call that hangs must fail, not eat it.
_EVENTS_CONFIG = Config(
    connect_timeout=2,
    read_timeout=5,
    retries={"mode": "standard", "total_max_attempts": 3},
)


def events_client() -> "EventBridgeClient":
    return boto3.client("events", config=_EVENTS_CONFIG)


@dataclass(frozen=True)
class EntryFailure:
    """Why EventBridge did not take one entry (PutEvents' ErrorCode / ErrorMessage, or the call's error)."""

    error_code: str
    error_message: str


class EventsNotPublished(Exception):
    """Some of a record's events were not put on the bus: the record is reported for Lambda to retry."""


def entry_size(entry: "PutEventsRequestEntryTypeDef") -> int:
    """An entry's size as EventBridge counts it against the 256 KB of a PutEvents call."""
    size = 14 if entry.get("Time") is not None else 0
    size += len(entry.get("Source", "").encode()) + len(entry.get("DetailType", "").encode())
    size += len(entry.get("Detail", "").encode())
    size += sum(len(resource.encode()) for resource in entry.get("Resources", []))
    return size


def chunk_entries(
    sizes: Sequence[int],
    *,
    max_entries: int = MAX_ENTRIES_PER_CALL,
    max_bytes: int = MAX_REQUEST_BYTES,
) -> list[list[int]]:
    """Indexes of entries grouped, in order, into calls of at most `max_entries` and `max_bytes`.

    Callers leave out an entry bigger than `max_bytes` by itself (no call can carry it).
    """
    chunks: list[list[int]] = []
    current: list[int] = []
    current_bytes = 0
    for index, size in enumerate(sizes):
        if current and (len(current) == max_entries or current_bytes + size > max_bytes):
            chunks.append(current)
            current, current_bytes = [], 0
        current.append(index)
        current_bytes += size
    if current:
        chunks.append(current)
    return chunks


class EventBus:
    def __init__(self, client: "EventBridgeClient", bus_name: str, source: str) -> None:
        self.client = client
        self.bus_name = bus_name
        self.source = source

    def entry(self, event: BusEvent) -> "PutEventsRequestEntryTypeDef":
        entry: PutEventsRequestEntryTypeDef = {
            "EventBusName": self.bus_name,
            "Source": self.source,
            "DetailType": event.detail_type,
            "Detail": event.detail_json(),
        }
        if event.time is not None:
            entry["Time"] = event.time
        return entry

    def put(self, events: Sequence[BusEvent]) -> list[EntryFailure | None]:
        """Put `events` on the bus; for each, in order, None if EventBridge took it, else why not."""
        entries = [self.entry(event) for event in events]
        sizes = [entry_size(entry) for entry in entries]
        results: list[EntryFailure | None] = [None] * len(entries)
        sendable: list[int] = []
        for index, size in enumerate(sizes):
            if size > MAX_REQUEST_BYTES:
                results[index] = EntryFailure(
                    "EntryTooLarge", f"{size} bytes: over PutEvents' {MAX_REQUEST_BYTES} bytes"
                )
            else:
                sendable.append(index)
        for chunk in chunk_entries([sizes[index] for index in sendable]):
            indexes = [sendable[position] for position in chunk]
            for index, failure in zip(indexes, self._put_chunk([entries[i] for i in indexes]), strict=True):
                results[index] = failure
        return results

    def _put_chunk(self, entries: list["PutEventsRequestEntryTypeDef"]) -> list[EntryFailure | None]:
        try:
            response = self.client.put_events(Entries=entries)
        except botocore.exceptions.ClientError as exc:
            error = exc.response.get("Error", {})
            failure = EntryFailure(error.get("Code", "ClientError"), error.get("Message", "")[:256])
            return [failure] * len(entries)
        except botocore.exceptions.BotoCoreError as exc:
            return [EntryFailure(type(exc).__name__, "PutEvents call failed")] * len(entries)
        answers = response.get("Entries", [])
        if len(answers) != len(entries):  # never seen; without a one-to-one answer, trust none of it
            return [
                EntryFailure("UnmatchedResponse", "PutEvents answered a different number of entries")
            ] * len(entries)
        return [
            EntryFailure(answer["ErrorCode"], answer.get("ErrorMessage", "")[:256])
            if "ErrorCode" in answer
            else None
            for answer in answers
        ]


class StreamPublisher(BatchProcessor):
    """Powertools' BatchProcessor for the sessions stream that publishes a whole batch in PutEvents chunks.

    Use with `process_partial_response(event, record_handler=events_for_record, processor=...)`: the
    record handler returns each record's events (or raises for a record that cannot become events); on
    leaving the batch, every record's events are put on the bus together, and each record with a failed
    entry is reported as a batch item failure. If every record failed, Powertools raises instead, so that
    Lambda bisects the batch.
    """

    def __init__(self, bus: EventBus, *, logger: Logger, metrics: Metrics) -> None:
        super().__init__(EventType.DynamoDBStreams)
        self._bus = bus
        self._log = logger
        self._metrics = metrics
        self._decided: list[tuple[dict[str, Any], list[BusEvent]]] = []

    def _prepare(self) -> None:
        super()._prepare()
        self._decided = []

    def success_handler(self, record: dict[str, Any], result: Any) -> "SuccessResponse":
        # Called with the raw record and what the record handler returned: its events, still to be sent.
        self._decided.append((record, list(result)))
        return super().success_handler(record, result)

    def failure_handler(
        self, record: "BatchEventTypes | None", exception: ExceptionInfo
    ) -> "FailureResponse":
        sequence_number = (
            record.dynamodb.sequence_number
            if isinstance(record, DynamoDBRecord) and record.dynamodb
            else None
        )
        error = exception[1]
        # The tracker's own errors name the session and the problem, never a row's values; anything else
        # (a bug) could quote a record, so only its type is logged.
        told = isinstance(error, UnpublishableRecord | EventsNotPublished)
        self._log.error(
            "stream record not published; Lambda will retry it",
            extra={
                "sequence_number": sequence_number,
                "error_type": type(error).__name__,
                "error": str(error)[:1024] if told else "unexpected error (details withheld: see the type)",
            },
        )
        return super().failure_handler(record, exception)

    def _clean(self) -> None:
        self._publish_decided()
        self._count("FailedRecords", len(self.fail_messages))
        super()._clean()  # builds batchItemFailures, or raises if every record failed

    def _publish_decided(self) -> None:
        """Put every decided event on the bus in one pass; fail each record any of whose entries failed."""
        decided, self._decided = self._decided, []
        self._count("SkippedRecords", sum(1 for _, events in decided if not events))
        events = [event for _, record_events in decided for event in record_events]
        if not events:
            return
        answers = iter(self._bus.put(events))
        published: Counter[str] = Counter()
        failed_entries = 0
        for raw_record, record_events in decided:
            problems = self._take_answers(record_events, answers, published)
            if problems:
                failed_entries += len(problems)
                self._fail(raw_record, record_events[0].session_id, problems)
        for detail_type, count in published.items():
            self._count(PUBLISHED_METRIC[detail_type], count)
        self._count("FailedEntries", failed_entries)

    def _take_answers(
        self, events: list[BusEvent], answers: Iterator[EntryFailure | None], published: Counter[str]
    ) -> list[str]:
        """Take one record's answers from `answers`: log and count what was published, describe what not."""
        problems = []
        for event in events:
            failure = next(answers)
            if failure is None:
                published[event.detail_type] += 1
                self._published(event)
            else:
                problems.append(
                    f"{event.detail_type} {event.event_id}: {failure.error_code} {failure.error_message}"
                )
        return problems

    def _count(self, name: str, value: int) -> None:
        """A count metric; none at all for a zero (these are custom metrics, paid per metric emitted)."""
        if value:
            self._metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)

    def _published(self, event: BusEvent) -> None:
        self._log.info(
            "event published",
            extra={
                "session_id": event.session_id,
                "detail_type": event.detail_type,
                "event_id": event.event_id,
                "status": event.status,
            },
        )

    def _fail(self, raw_record: dict[str, Any], session_id: str, problems: list[str]) -> None:
        """Move a record that Powertools counted as a success to the failures it reports."""
        self.success_messages[:] = [kept for kept in self.success_messages if id(kept) != id(raw_record)]
        error = EventsNotPublished(f"session {session_id}: " + "; ".join(problems))
        self.failure_handler(DynamoDBRecord(raw_record), (EventsNotPublished, error, None))


__all__ = [
    "MAX_ENTRIES_PER_CALL",
    "MAX_REQUEST_BYTES",
    "EntryFailure",
    "EventBus",
    "EventsNotPublished",
    "StreamPublisher",
    "chunk_entries",
    "entry_size",
    "events_client",
]
