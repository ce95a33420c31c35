"""Faults injected at the HTTP level in front of DynamoDB Local and moto, seen through boto3 exactly as a
function would see them: throttled DynamoDB calls and partially failed PutEvents."""

import json
import uuid
from collections.abc import Iterator

import boto3
import pytest
from botocore.config import Config

from local.emulators.fault_proxy import AwsFaults, FaultProxy
from tests.support.template import create_table

NO_RETRIES = Config(retries={"mode": "standard", "total_max_attempts": 1})


def client(service: str, endpoint_url: str, config: Config = NO_RETRIES):
    return boto3.client(service, endpoint_url=endpoint_url, config=config)  # type: ignore[call-overload]


@pytest.fixture
def proxies() -> Iterator[list[FaultProxy]]:
    started: list[FaultProxy] = []
    yield started
    for proxy in started:
        proxy.stop()


def proxy(proxies: list[FaultProxy], upstream: str, **rates: float) -> FaultProxy:
    server = FaultProxy(upstream, AwsFaults(seed=1, **rates), name="test").start()
    proxies.append(server)
    return server


@pytest.fixture
def table(dynamodb_local) -> Iterator[str]:
    name = f"faults-{uuid.uuid4().hex[:10]}"
    create_table(dynamodb_local.client(), "SessionsTable", name)
    yield name
    dynamodb_local.client().delete_table(TableName=name)


def test_without_faults_everything_passes_through(dynamodb_local, table, proxies) -> None:
    dynamodb = client("dynamodb", proxy(proxies, dynamodb_local.endpoint_url).url)
    dynamodb.put_item(TableName=table, Item={"session_id": {"S": "a"}, "status": {"S": "WAITING"}})

    assert dynamodb.get_item(TableName=table, Key={"session_id": {"S": "a"}})["Item"]["status"] == {
        "S": "WAITING"
    }
    with pytest.raises(dynamodb.exceptions.ConditionalCheckFailedException):  # the emulator's own errors too
        dynamodb.put_item(
            TableName=table,
            Item={"session_id": {"S": "a"}},
            ConditionExpression="attribute_not_exists(session_id)",
        )


def test_throttled_dynamodb_calls_look_like_a_throttled_table_and_change_nothing(
    dynamodb_local, table, proxies
) -> None:
    server = proxy(proxies, dynamodb_local.endpoint_url, dynamodb_throttle_rate=1.0)
    dynamodb = client("dynamodb", server.url)

    with pytest.raises(dynamodb.exceptions.ProvisionedThroughputExceededException):
        dynamodb.update_item(
            TableName=table,
            Key={"session_id": {"S": "a"}},
            UpdateExpression="SET #s = :s",
            ExpressionAttributeNames={"#s": "status"},
            ExpressionAttributeValues={":s": {"S": "COMPLETED"}},
        )
    assert "Item" not in dynamodb_local.client().get_item(TableName=table, Key={"session_id": {"S": "a"}})
    assert server.injected == {"dynamodb_throttled.UpdateItem": 1}
    # Control-plane calls are never throttled.
    assert dynamodb.describe_table(TableName=table)["Table"]["TableName"] == table


def test_the_sdk_retries_a_throttled_call_and_succeeds_at_a_partial_rate(
    dynamodb_local, table, proxies
) -> None:
    server = proxy(proxies, dynamodb_local.endpoint_url, dynamodb_throttle_rate=0.3)
    dynamodb = client("dynamodb", server.url, Config(retries={"mode": "standard", "total_max_attempts": 10}))
    for n in range(6):
        dynamodb.put_item(TableName=table, Item={"session_id": {"S": f"s-{n}"}})

    assert dynamodb_local.client().scan(TableName=table, Select="COUNT")["Count"] == 6
    assert server.injected["dynamodb_throttled.PutItem"] > 0


@pytest.fixture
def bus_and_queue(moto_server) -> Iterator[tuple[str, str]]:
    """A bus whose every event lands in an SQS queue (on moto's server, no faults)."""
    events, sqs = client("events", moto_server.endpoint_url), client("sqs", moto_server.endpoint_url)
    bus = f"bus-{uuid.uuid4().hex[:8]}"
    events.create_event_bus(Name=bus)
    queue_url = sqs.create_queue(QueueName=f"q-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    events.put_rule(Name="all", EventBusName=bus, EventPattern=json.dumps({"source": ["test"]}))
    events.put_targets(Rule="all", EventBusName=bus, Targets=[{"Id": "q", "Arn": queue_arn}])
    yield bus, queue_url
    sqs.delete_queue(QueueUrl=queue_url)


def received_details(moto_server, queue_url: str) -> list[dict]:
    sqs = client("sqs", moto_server.endpoint_url)
    messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get(
        "Messages", []
    )
    return [json.loads(message["Body"])["detail"] for message in messages]


def put(events, bus: str, count: int) -> dict:
    entries = [
        {"EventBusName": bus, "Source": "test", "DetailType": "t", "Detail": json.dumps({"n": n})}
        for n in range(count)
    ]
    return events.put_events(Entries=entries)


def test_failed_put_events_entries_are_reported_and_never_reach_the_bus(
    moto_server, bus_and_queue, proxies
) -> None:
    bus, queue_url = bus_and_queue
    server = proxy(proxies, moto_server.endpoint_url, put_events_failure_rate=1.0)

    response = put(client("events", server.url), bus, 3)

    assert response["FailedEntryCount"] == 3
    assert all(entry["ErrorCode"] == "InternalFailure" for entry in response["Entries"])
    assert received_details(moto_server, queue_url) == []


def test_a_partial_failure_fails_exactly_the_reported_entries(moto_server, bus_and_queue, proxies) -> None:
    bus, queue_url = bus_and_queue
    server = proxy(proxies, moto_server.endpoint_url, put_events_failure_rate=0.5)

    response = put(client("events", server.url), bus, 10)

    failed = [n for n, entry in enumerate(response["Entries"]) if "ErrorCode" in entry]
    succeeded = [n for n, entry in enumerate(response["Entries"]) if "EventId" in entry]
    assert 0 < len(failed) < 10
    assert response["FailedEntryCount"] == len(failed)
    assert sorted(failed + succeeded) == list(range(10))
    delivered = []
    for _ in range(5):
        delivered += received_details(moto_server, queue_url)
        if len(delivered) == len(succeeded):
            break
    assert sorted(detail["n"] for detail in delivered) == succeeded
    assert server.injected["put_events_entries_failed"] == len(failed)
