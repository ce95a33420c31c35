"""EventBridge stand-ins for the publisher's tests.

`ScriptedEventBridge` sits where the publisher's boto3 EventBridge client goes. It records every
PutEvents call and answers it, either in memory (unit tests) or by passing the entries on to a real
client (moto's EventBridge), except the entries a test chose to fail: those get a per-entry
`ErrorCode` as EventBridge gives it, or the whole call raises, while the rest really reach the bus.

`SubscribedBus` is a bus on moto with rules routing the tracker's events into SQS queues by detail type,
read back as EventBridge's envelopes.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest
from botocore.exceptions import ClientError

if TYPE_CHECKING:
    from mypy_boto3_events import EventBridgeClient
    from mypy_boto3_sqs import SQSClient

EntryPredicate = Callable[[Mapping[str, Any]], bool]


def detail_of(entry: Mapping[str, Any]) -> dict[str, Any]:
    detail: dict[str, Any] = json.loads(entry["Detail"])
    return detail


class ScriptedEventBridge:
    def __init__(self, real: EventBridgeClient | None = None) -> None:
        self.real = real
        self.calls: list[list[dict[str, Any]]] = []  # the entries of every PutEvents call, in order
        self._failing: list[tuple[EntryPredicate, str, str]] = []
        self._call_error: ClientError | None = None

    def fail_entries(
        self, predicate: EntryPredicate, code: str = "InternalFailure", message: str = "Internal Failure"
    ) -> None:
        """From now on, entries matching `predicate` get this per-entry error instead of reaching the bus."""
        self._failing.append((predicate, code, message))

    def fail_calls(self, code: str = "InternalException", message: str = "Service unavailable") -> None:
        """From now on, every PutEvents call raises (EventBridge down)."""
        self._call_error = ClientError({"Error": {"Code": code, "Message": message}}, "PutEvents")

    def heal(self) -> None:
        self._failing.clear()
        self._call_error = None

    @property
    def entries(self) -> list[dict[str, Any]]:
        """Every entry attempted, across calls, in order."""
        return [entry for call in self.calls for entry in call]

    def put_events(self, *, Entries: list[dict[str, Any]], **kwargs: Any) -> dict[str, Any]:
        self.calls.append([dict(entry) for entry in Entries])
        if len(Entries) > 10:  # what EventBridge answers (the call fails as a whole)
            raise ClientError({"Error": {"Code": "ValidationException", "Message": "too many"}}, "PutEvents")
        if self._call_error is not None:
            raise self._call_error
        answers: list[dict[str, Any] | None] = []
        passing: list[dict[str, Any]] = []
        for entry in Entries:
            failure = next(((code, msg) for test, code, msg in self._failing if test(entry)), None)
            if failure is None:
                answers.append(None)
                passing.append(entry)
            else:
                answers.append({"ErrorCode": failure[0], "ErrorMessage": failure[1]})
        real_answers = iter(self._forward(passing))
        entries = [answer if answer is not None else next(real_answers) for answer in answers]
        return {"FailedEntryCount": sum(1 for e in entries if "ErrorCode" in e), "Entries": entries}

    def _forward(self, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if not entries:
            return []
        if self.real is None:
            return [{"EventId": str(uuid.uuid4())} for _ in entries]
        response = self.real.put_events(Entries=entries)  # type: ignore[arg-type]
        return [dict(answer) for answer in response["Entries"]]


@dataclass
class SubscribedBus:
    """A custom bus on moto whose rules send the tracker's events to SQS queues, one queue per rule."""

    events: EventBridgeClient
    sqs: SQSClient
    name: str
    source: str
    queues: dict[str, str] = field(default_factory=dict)  # rule name -> queue URL

    @classmethod
    def create(cls, events: EventBridgeClient, sqs: SQSClient, source: str) -> SubscribedBus:
        bus = cls(events, sqs, f"hpp-events-{uuid.uuid4().hex[:10]}", source)
        events.create_event_bus(Name=bus.name)
        return bus

    def subscribe(self, rule: str, pattern: Mapping[str, Any]) -> str:
        """A rule with `pattern` on the bus, delivering to a new queue; returns the queue URL."""
        queue_url = self.sqs.create_queue(QueueName=f"{self.name}-{rule}")["QueueUrl"]
        self.route(rule, pattern, queue_url)
        return queue_url

    def route(self, rule: str, pattern: Mapping[str, Any], queue_url: str) -> None:
        """A rule with `pattern` on the bus, delivering to the queue at `queue_url` (deleted with the bus)."""
        queue_arn = self.sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        self.events.put_rule(
            Name=rule, EventBusName=self.name, EventPattern=json.dumps(pattern), State="ENABLED"
        )
        self.events.put_targets(
            Rule=rule, EventBusName=self.name, Targets=[{"Id": "queue", "Arn": queue_arn}]
        )
        self.queues[rule] = queue_url

    def drain(self, rule: str) -> list[dict[str, Any]]:
        """Every envelope waiting in `rule`'s queue (EventBridge delivers to SQS before PutEvents returns
        on moto), removed from the queue, in arrival order."""
        envelopes: list[dict[str, Any]] = []
        while True:
            messages = self.sqs.receive_message(
                QueueUrl=self.queues[rule], MaxNumberOfMessages=10, WaitTimeSeconds=0
            ).get("Messages", [])
            if not messages:
                return envelopes
            for message in messages:
                envelopes.append(json.loads(message["Body"]))
                self.sqs.delete_message(QueueUrl=self.queues[rule], ReceiptHandle=message["ReceiptHandle"])

    def delete(self) -> None:
        for rule, queue_url in self.queues.items():
            self.events.remove_targets(Rule=rule, EventBusName=self.name, Ids=["queue"])
            self.events.delete_rule(Name=rule, EventBusName=self.name)
            self.sqs.delete_queue(QueueUrl=queue_url)
        self.events.delete_event_bus(Name=self.name)


def deliver_whole_envelopes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make moto's EventBridge (in this process) deliver `account` to its targets, as EventBridge does
    in every event: moto's default target input leaves it out, and consumers' models require it. The
    one change to what the emulator delivers; undone with `monkeypatch`."""
    from moto.events.utils import EventTemplateParser

    template = EventTemplateParser.DEFAULT_EVENT_INPUT_TEMPLATE
    if '"account"' not in template:
        with_account = template.replace('"version": "0", ', '"version": "0", "account": "<account>", ', 1)
        assert with_account != template, "moto's default target input changed: revisit this"
        monkeypatch.setattr(EventTemplateParser, "DEFAULT_EVENT_INPUT_TEMPLATE", with_account)
