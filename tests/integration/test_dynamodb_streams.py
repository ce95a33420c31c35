"""local.emulators.dynamodb_streams: a table's real stream (DynamoDB Local, then moto), handed over as
Lambda does."""

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from aws_lambda_powertools.utilities.parser.models import DynamoDBStreamModel

from hpp_core.models import KlarnaSession, StatusUpdate
from hpp_core.repository import SessionRepository
from local.emulators.dynamodb_streams import StreamReader, lambda_event
from tests.support.dynamodb_local import stream_clients
from tests.support.lambda_runtime import load_event
from tests.support.template import create_table


@pytest.fixture(params=["dynamodb_local", "moto"])
def table(request: pytest.FixtureRequest, moto_server: Any) -> Iterator[tuple[Any, Any, str]]:
    dynamodb, streams = stream_clients(request.param, request, moto_server)
    name = f"sessions-{uuid.uuid4().hex[:12]}"
    create_table(dynamodb, "SessionsTable", name)
    yield dynamodb, streams, name
    dynamodb.delete_table(TableName=name)


def write_history(repository: SessionRepository, session_id: str) -> None:
    repository.create_session(
        session_id, expires_at=datetime(2030, 1, 1, tzinfo=UTC), session_url=None, callback_secret_hash=None
    )
    for status, at in [("IN_PROGRESS", "2029-01-01T00:00:00Z"), ("FAILED", "2029-01-01T00:00:01Z")]:
        session = KlarnaSession.model_validate({"session_id": session_id, "status": status, "updated_at": at})
        repository.record_status(StatusUpdate(session=session, source="callback"))


def test_records_come_in_order_shaped_as_lambdas_event(table: tuple[Any, Any, str]) -> None:
    dynamodb, streams, name = table
    reader = StreamReader.for_table(dynamodb, streams, name)
    sid = str(uuid.uuid4())
    write_history(SessionRepository(name, dynamodb, retention_days=0), sid)
    records = reader.read()
    assert [(r["eventName"], r["dynamodb"]["NewImage"]["status"]["S"]) for r in records] == [
        ("INSERT", "WAITING"),
        ("MODIFY", "IN_PROGRESS"),
        ("MODIFY", "FAILED"),
    ]
    sample = load_event("publisher/status_changed")["Records"][0]
    stream_arn = dynamodb.describe_table(TableName=name)["Table"]["LatestStreamArn"]
    for record in records:
        assert list(record) == [key for key in sample if key in record], "Lambda's keys, in Lambda's order"
        assert set(sample) - set(record) <= {"userIdentity"}
        assert record["eventSource"] == "aws:dynamodb"
        assert record["eventSourceARN"] == stream_arn
        stream = record["dynamodb"]
        assert isinstance(stream["ApproximateCreationDateTime"], float)  # epoch seconds, as Lambda sends
        assert stream["StreamViewType"] == "NEW_AND_OLD_IMAGES"
        assert stream["Keys"] == {"session_id": {"S": sid}}
    numbers = [int(r["dynamodb"]["SequenceNumber"]) for r in records]
    assert numbers == sorted(numbers)
    # Powertools' own model of Lambda's DynamoDB event accepts it.
    parsed = DynamoDBStreamModel.model_validate(lambda_event(records))
    assert [r.dynamodb.NewImage["status"] for r in parsed.Records] == ["WAITING", "IN_PROGRESS", "FAILED"]  # type: ignore[index]


def test_each_record_is_handed_out_once(table: tuple[Any, Any, str]) -> None:
    dynamodb, streams, name = table
    reader = StreamReader.for_table(dynamodb, streams, name)
    repository = SessionRepository(name, dynamodb, retention_days=0)
    write_history(repository, "first")
    assert len(reader.read()) == 3
    assert reader.read() == []
    write_history(repository, "second")
    assert [r["dynamodb"]["Keys"]["session_id"]["S"] for r in reader.read()] == ["second"] * 3


def test_latest_starts_after_what_the_stream_already_holds(table: tuple[Any, Any, str]) -> None:
    dynamodb, streams, name = table
    repository = SessionRepository(name, dynamodb, retention_days=0)
    write_history(repository, "before")
    reader = StreamReader.for_table(dynamodb, streams, name, starting_position="LATEST")
    assert reader.read() == []
    write_history(repository, "after")
    assert {r["dynamodb"]["Keys"]["session_id"]["S"] for r in reader.read()} == {"after"}


def test_read_until_waits_for_enough_records_or_says_how_many_came(table: tuple[Any, Any, str]) -> None:
    dynamodb, streams, name = table
    reader = StreamReader.for_table(dynamodb, streams, name)
    write_history(SessionRepository(name, dynamodb, retention_days=0), "only")
    assert len(reader.read_until(lambda records: len(records) >= 3)) == 3
    with pytest.raises(TimeoutError, match="0 records"):
        reader.read_until(lambda records: len(records) >= 1, timeout=0.2)


def test_a_table_without_a_stream_is_named(table: tuple[Any, Any, str]) -> None:
    dynamodb, streams, _ = table
    plain = f"plain-{uuid.uuid4().hex[:8]}"
    dynamodb.create_table(
        TableName=plain,
        AttributeDefinitions=[{"AttributeName": "k", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "k", "KeyType": "HASH"}],
        BillingMode="PAY_PER_REQUEST",
    )
    try:
        with pytest.raises(ValueError, match=f"{plain} has no stream"):
            StreamReader.for_table(dynamodb, streams, plain)
    finally:
        dynamodb.delete_table(TableName=plain)
