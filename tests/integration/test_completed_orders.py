"""The example consumer (examples/completed-orders) on what the tracker really publishes.

Sessions complete through the tracker's one write path on DynamoDB Local; the publisher reads the real
stream and puts its events on a bus in moto's EventBridge; the example's own rule (its EventPattern,
from its template) routes them into its queue on moto's SQS, built as its template builds it (the
visibility timeout, the redrive policy to the dead-letter queue); Lambda's SQS event source
(tests/support/sqs_event_source.py) invokes the example's function with batches of the template's size
and keeps or deletes each message as Lambda does. The function's own tables (orders, Powertools'
idempotency records) are the template's, on DynamoDB Local and on moto. `place_order` is replaced, as
a merchant replaces it, by a hook that records its calls and fails when a test wants it to.
"""

import json
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from boto3.dynamodb.types import TypeDeserializer
from pydantic import ValidationError

from hpp_core.publishing import COMPLETED, STATUS_CHANGED
from hpp_events import CompletedDetail
from local.template import LocalValues, Resolver
from tests.support.event_bus import deliver_whole_envelopes
from tests.support.event_schemas import model_errors, registry_errors, schema_errors
from tests.support.functions import import_function
from tests.support.publisher_pipeline import SOURCE, Pipeline, publisher_pipeline, update
from tests.support.sqs_event_source import Invocation, SqsEventSource
from tests.support.template import Template, create_table

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_sqs import SQSClient

EXAMPLE = Template.load(
    Path(__file__).resolve().parents[2] / "examples" / "completed-orders" / "template.yaml"
)
FUNCTION = EXAMPLE.function("CompletedOrdersFunction")
[SQS_EVENT] = FUNCTION.events_of("SQS")
MAX_RECEIVES = int(EXAMPLE.properties("CompletedSessionsQueue")["RedrivePolicy"]["maxReceiveCount"])


class OrderSystemDown(RuntimeError):
    pass


@dataclass
class Hook:
    """The merchant's place_order as the tests plug it in: every call recorded; fails while `failing`
    says so for the completion (as an order system that is down would)."""

    placed_order: type
    calls: list[CompletedDetail] = field(default_factory=list)
    failing: Callable[[CompletedDetail], bool] = lambda completion: False

    def __call__(self, completion: CompletedDetail) -> Any:
        self.calls.append(completion)
        if self.failing(completion):
            token = completion.authorization_token
            # What a careless order system might say: the function must not log it.
            raise OrderSystemDown(f"refused {token.get_secret_value() if token else completion.order_id}")
        return self.placed_order(order_reference=f"order-{completion.session_id}")

    def sessions(self) -> list[str]:
        return [completion.session_id for completion in self.calls]


@dataclass
class Consumer:
    pipeline: Pipeline
    module: ModuleType
    hook: Hook
    sqs: "SQSClient"
    queue_url: str
    dead_letter_url: str
    source: SqsEventSource
    dynamodb: "DynamoDBClient"
    orders_table: str
    idempotency_table: str
    status_rule: str = "status-changed"

    def complete(self, *, token: str | None = None, order_id: str | None = None) -> str:
        """A session tracked, then COMPLETED through the write path; the publisher delivers its stream."""
        sid = str(uuid.uuid4())
        self.pipeline.track(sid)
        self.pipeline.repository.record_status(update(sid, "IN_PROGRESS", "2019-05-13T14:52:10.120Z"))
        paid_by = (
            {"authorization_token": token} if token else {"order_id": order_id, "klarna_reference": "K-1"}
        )
        self.pipeline.repository.record_status(
            update(sid, "COMPLETED", "2019-05-13T14:54:04.675Z", **paid_by)
        )
        assert self.pipeline.deliver() == [{"batchItemFailures": []}]
        return sid

    def waiting(self) -> list[str]:
        """The bodies on the queue now, left there (received with a zero visibility timeout)."""
        return _peek(self.sqs, self.queue_url)

    def take(self) -> list[str]:
        """The bodies on the queue now, removed from it (before the function sees them)."""
        messages = self.sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10).get(
            "Messages", []
        )
        for message in messages:
            self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])
        return [message["Body"] for message in messages]

    def dead_letters(self) -> list[str]:
        return _peek(self.sqs, self.dead_letter_url)

    def send(self, body: str) -> None:
        self.sqs.send_message(QueueUrl=self.queue_url, MessageBody=body)

    def orders(self) -> dict[str, dict[str, Any]]:
        return {item["session_id"]: item for item in _scan(self.dynamodb, self.orders_table)}

    def idempotency_records(self) -> list[dict[str, Any]]:
        return _scan(self.dynamodb, self.idempotency_table)


def _peek(sqs: "SQSClient", queue_url: str) -> list[str]:
    messages = sqs.receive_message(
        QueueUrl=queue_url, MaxNumberOfMessages=10, VisibilityTimeout=0, WaitTimeSeconds=0
    ).get("Messages", [])
    return [message["Body"] for message in messages]


def _scan(dynamodb: "DynamoDBClient", table: str) -> list[dict[str, Any]]:
    deserialize = TypeDeserializer().deserialize
    items = dynamodb.scan(TableName=table, ConsistentRead=True)["Items"]
    return [{name: deserialize(value) for name, value in item.items()} for item in items]


def _queue(sqs: "SQSClient", name: str, properties: dict[str, Any]) -> tuple[str, str]:
    """A queue with the template's attributes (those SQS's CreateQueue takes); its URL and ARN."""
    attributes = {
        name: json.dumps(value) if isinstance(value, dict) else str(value)
        for name, value in properties.items()
        if name in {"VisibilityTimeout", "MessageRetentionPeriod", "RedrivePolicy"}
    }
    url = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]  # type: ignore[arg-type]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    return url, arn


@pytest.fixture(params=["dynamodb_local", "moto"])
def consumer(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, moto_server: Any
) -> Iterator[Consumer]:
    """The example's stack on the emulators, fed by the tracker's publisher; its tables on the param."""
    deliver_whole_envelopes(monkeypatch)
    with publisher_pipeline("dynamodb_local", request, monkeypatch, moto_server) as pipeline:
        name = pipeline.bus.name
        sqs = boto3.client("sqs", endpoint_url=moto_server.endpoint_url)
        endpoint = (
            request.getfixturevalue("dynamodb_local").endpoint_url
            if request.param == "dynamodb_local"
            else moto_server.endpoint_url
        )
        dynamodb = boto3.client("dynamodb", endpoint_url=endpoint)
        tables = {logical_id: f"{name}-{logical_id}" for logical_id in ("OrdersTable", "IdempotencyTable")}
        for logical_id, table in tables.items():
            create_table(dynamodb, logical_id, table, template=EXAMPLE)
        values = LocalValues(refs={**tables})
        resolver = Resolver(
            EXAMPLE,
            parameters={"TrackerEventBusName": name, "TrackerEventSource": SOURCE},
            pseudo={"AWS::StackName": name, "AWS::Region": "eu-west-1"},
            values=values,
        )
        dead_letter_url, dead_letter_arn = _queue(
            sqs, f"{name}-dlq", resolver.resolve(EXAMPLE.properties("CompletedSessionsDeadLetterQueue"))
        )
        values.attributes["CompletedSessionsDeadLetterQueue"] = {"Arn": dead_letter_arn}
        queue_url, queue_arn = _queue(
            sqs, f"{name}-orders", resolver.resolve(EXAMPLE.properties("CompletedSessionsQueue"))
        )
        values.attributes["CompletedSessionsQueue"] = {"Arn": queue_arn}
        rule = resolver.resolve(EXAMPLE.properties("CompletedSessionsRule"))
        [target] = rule["Targets"]
        assert (target["Arn"], target["DeadLetterConfig"]["Arn"]) == (queue_arn, dead_letter_arn)
        pipeline.bus.route("completed-orders", rule["EventPattern"], queue_url)
        pipeline.bus.subscribe("status-changed", {"source": [SOURCE], "detail-type": [STATUS_CHANGED]})

        for variable, value in resolver.resolve(FUNCTION.properties["Environment"]["Variables"]).items():
            monkeypatch.setenv(variable, str(value))
        monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", endpoint)
        monkeypatch.setenv("POWERTOOLS_LOGGER_LOG_EVENT", "true")  # an operator debugging: still no token
        module = import_function("completed_orders")
        module.metrics.clear_metrics()
        hook = Hook(placed_order=sys.modules["orders"].PlacedOrder)
        monkeypatch.setattr(module, "place_order", hook)  # what a merchant does to the default
        source = SqsEventSource(
            sqs, queue_url, module.lambda_handler, int(SQS_EVENT.properties["BatchSize"]), FUNCTION.timeout
        )
        yield Consumer(
            pipeline, module, hook, sqs, queue_url, dead_letter_url, source, dynamodb, *tables.values()
        )
        for table in tables.values():
            dynamodb.delete_table(TableName=table)
        sqs.delete_queue(QueueUrl=dead_letter_url)


TOKEN = "a1a8f727-2756-6058-bd3c-40069be0994b"
DROPPED = "message dropped: not a tracker completion"


def log_lines(out: str) -> list[dict[str, Any]]:
    """The function's structured log lines (and metrics) in captured output."""
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def failed_messages(invocations: list[Invocation]) -> list[str]:
    return [message for invocation in invocations for message in invocation.failed]


# ------------------------------------------------------------------------------------ exactly once


def test_what_the_rule_delivers_is_the_whole_completed_event_as_published(consumer: Consumer) -> None:
    sid = consumer.complete(token=TOKEN)
    [body] = consumer.waiting()
    envelope = json.loads(body)
    assert (envelope["source"], envelope["detail-type"], envelope["detail"]["session_id"]) == (
        SOURCE,
        COMPLETED,
        sid,
    )
    assert envelope["account"] and envelope["time"], "the envelope as EventBridge delivers it"
    assert schema_errors(COMPLETED, envelope["detail"]) == []
    assert registry_errors(COMPLETED, envelope) == []
    assert model_errors(envelope, source=SOURCE) == []
    assert consumer.pipeline.consumed(consumer.status_rule), "status changes went their own way"


def test_a_completion_is_handled_once_however_often_it_arrives(consumer: Consumer) -> None:
    sid = consumer.complete(token=TOKEN)
    # Published again (the publisher's batch retried: the same stream records) and duplicated by SQS.
    records, _ = consumer.pipeline.invocations[0]
    consumer.pipeline.invoke(records)
    first, again = (json.loads(body) for body in consumer.waiting())
    assert first["id"] != again["id"] and first["detail"] == again["detail"], "two envelopes, one event_id"
    consumer.send(json.dumps(first))

    invocations = consumer.source.drain()

    assert consumer.hook.sessions() == [sid]
    assert failed_messages(invocations) == []
    [order] = consumer.orders().values()
    assert order == {
        "session_id": sid,
        "event_id": first["detail"]["event_id"],
        "completed_at": "2019-05-13T14:54:04.675Z",
        "recorded_at": order["recorded_at"],
        "payment": "authorization_token",
        "order_reference": f"order-{sid}",
    }
    [record] = consumer.idempotency_records()
    assert record["status"] == "COMPLETED"
    assert TOKEN not in json.dumps(record, default=str), "the idempotency store keeps no token"
    assert consumer.waiting() == [] and consumer.dead_letters() == []


def test_a_completion_published_again_later_is_not_placed_again(consumer: Consumer) -> None:
    """A replay from the archive, days later: a new envelope, a new message, the same event_id."""
    consumer.complete(order_id="order-KCO-1")
    [body] = consumer.waiting()
    consumer.source.drain()
    replayed = {**json.loads(body), "id": str(uuid.uuid4()), "replay-name": "orders-2019-05-13"}
    consumer.send(json.dumps(replayed))
    consumer.source.drain()
    assert len(consumer.hook.calls) == 1
    [order] = consumer.orders().values()
    assert (order["order_id"], order["klarna_reference"], order["payment"]) == ("order-KCO-1", "K-1", "order")


# ------------------------------------------------------------------------------- failures, retries


def test_a_failing_hook_is_retried_then_the_completion_waits_in_the_dead_letter_queue(
    consumer: Consumer,
) -> None:
    sid = consumer.complete(token=TOKEN)
    consumer.hook.failing = lambda completion: True

    invocations = consumer.source.drain()

    assert consumer.hook.sessions() == [sid] * MAX_RECEIVES, "one try per receive, maxReceiveCount of them"
    assert len(invocations) == MAX_RECEIVES
    assert consumer.orders() == {}
    [dead] = consumer.dead_letters()
    assert dead == invocations[0].records[0]["body"], "the event itself, for a redrive"
    assert consumer.idempotency_records() == [], "a failure leaves nothing that would block a redrive"

    # The order system is back: a redrive from the dead-letter queue places the order, once.
    consumer.hook.failing = lambda completion: False
    consumer.send(dead)
    consumer.source.drain()
    assert consumer.hook.sessions() == [sid] * (MAX_RECEIVES + 1)
    assert list(consumer.orders()) == [sid]


def test_one_failing_completion_does_not_hold_up_the_others(consumer: Consumer) -> None:
    good = consumer.complete(token=TOKEN)
    bad = consumer.complete(order_id="order-2")
    consumer.hook.failing = lambda completion: completion.session_id == bad

    first = consumer.source.poll()
    assert first is not None and len(first.records) == 2
    [failed] = first.failed
    assert (
        json.loads(next(r["body"] for r in first.records if r["messageId"] == failed))["detail"]["session_id"]
        == bad
    )
    consumer.source.drain()
    assert list(consumer.orders()) == [good]
    assert [json.loads(body)["detail"]["session_id"] for body in consumer.dead_letters()] == [bad]
    assert consumer.hook.sessions().count(good) == 1


def test_a_hook_that_fails_once_is_retried_and_places_the_order_once(consumer: Consumer) -> None:
    sid = consumer.complete(token=TOKEN)
    consumer.hook.failing = lambda completion: len(consumer.hook.calls) == 1
    consumer.source.drain()
    assert consumer.hook.sessions() == [sid, sid]
    assert list(consumer.orders()) == [sid]
    assert consumer.dead_letters() == []


# ------------------------------------------------------------------------------------ not ours


def test_what_is_not_a_tracker_completion_is_dropped_not_retried(
    consumer: Consumer, capfd: pytest.CaptureFixture[str]
) -> None:
    consumer.complete(token=TOKEN)
    [completed] = (json.loads(body) for body in consumer.take())
    status_changed = consumer.pipeline.consumed(consumer.status_rule)[-1]
    broken = {
        **completed,
        "detail": {k: v for k, v in completed["detail"].items() if k != "authorization_token"},
    }
    for body in (
        json.dumps(status_changed),  # another detail type (someone's rule sends more than completions)
        json.dumps({**completed, "source": "com.example.other"}),  # another source
        json.dumps(broken),  # ours, but breaking its schema: no retry can mend it
        "not json at all",
        json.dumps({"hello": "world"}),
    ):
        consumer.send(body)
    capfd.readouterr()

    invocations = consumer.source.drain()

    assert failed_messages(invocations) == []
    assert len(invocations) == 1, "each message received once, and deleted"
    assert consumer.hook.calls == [] and consumer.orders() == {}
    assert consumer.waiting() == [] and consumer.dead_letters() == []
    lines = log_lines(capfd.readouterr().out)
    dropped = [line["reason"] for line in lines if line.get("message") == DROPPED]
    assert len(dropped) == 5, dropped
    for why in (
        "detail-type 'HPP Session Status Changed'",
        "source 'com.example.other'",
        "authorization_token or order_id",
        "not an EventBridge event",
    ):
        assert why in "\n".join(dropped)
    [metrics] = [line for line in lines if "_aws" in line]
    assert metrics["MessagesDropped"] == [1] * 5


# ------------------------------------------------------------------------------------ logs, start-up


def test_logs_name_each_completion_and_never_show_the_token(
    consumer: Consumer, capfd: pytest.CaptureFixture[str]
) -> None:
    """Even with Powertools' event logging switched on by an operator (the fixture does), and a hook
    whose error message holds the token."""
    sid = consumer.complete(token=TOKEN)
    consumer.hook.failing = lambda completion: len(consumer.hook.calls) == 1  # its message holds the token
    capfd.readouterr()
    consumer.source.drain()
    out, err = capfd.readouterr()
    assert TOKEN not in out + err
    lines = log_lines(out)
    [failed] = [line for line in lines if str(line.get("message")).startswith("completion not handled")]
    assert (failed["session_id"], failed["error_type"], failed["receive_count"]) == (
        sid,
        "OrderSystemDown",
        "1",
    )
    [handled] = [line for line in lines if line.get("message") == "completion handled"]
    assert (handled["session_id"], handled["newly_recorded"]) == (sid, True)


def test_the_function_names_a_missing_setting_at_start_up(
    consumer: Consumer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ORDERS_TABLE_NAME")
    with pytest.raises(ValidationError, match="ORDERS_TABLE_NAME") as caught:
        import_function("completed_orders")
    # The input is the whole environment, the session's credentials included: the error shows none of it.
    assert "input_value" not in str(caught.value)
