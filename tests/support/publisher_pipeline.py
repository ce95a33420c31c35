"""The publisher Lambda on real engines, for tests: real writes through SessionRepository, records read
from the table's real stream (DynamoDB Local or moto), filtered by template.yaml's filter criteria and
shaped exactly as Lambda delivers them, the handler invoked with them, and its events put on a bus in
moto's EventBridge, whose rules (`Pipeline.bus.subscribe`) route them into SQS queues.

Every entry the publisher sends through a pipeline is checked against schemas/*.json when it closes.
"""

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import ModuleType
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError

from hpp_core.callback_secrets import hash_callback_secret
from hpp_core.models import KlarnaSession, StatusUpdate, UpdateSource
from hpp_core.repository import SessionRepository
from local.emulators.dynamodb_streams import StreamReader, lambda_event
from local.emulators.stream_mapping import StreamMapping
from tests.support.dynamodb_local import stream_clients
from tests.support.event_bus import ScriptedEventBridge, SubscribedBus, detail_of
from tests.support.event_schemas import schema_errors
from tests.support.functions import import_function
from tests.support.lambda_runtime import LambdaContext
from tests.support.template import Template, create_table

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

SOURCE = "com.example.hpp-tracker"  # not the default: the source comes from configuration
SECRET = "sample-secret-not-real-8a3f2c91d4e7b6a5"
EXPIRES = "2019-05-15T13:51:43.507Z"
MAPPING = StreamMapping.from_template(Template.load(), "PublisherFunction")


def update(
    session_id: str,
    status: str,
    updated_at: str,
    source: UpdateSource = "callback",
    **fields: Any,
) -> StatusUpdate:
    session = KlarnaSession.model_validate(
        {
            "session_id": session_id,
            "status": status,
            "updated_at": updated_at,
            "expires_at": EXPIRES,
            **fields,
        }
    )
    return StatusUpdate(session=session, source=source, event_id=str(uuid.uuid4()))


@dataclass
class Pipeline:
    engine: str
    handler: ModuleType
    repository: SessionRepository
    dynamodb: "DynamoDBClient"
    reader: StreamReader
    bus: SubscribedBus
    eventbridge: ScriptedEventBridge
    invocations: list[tuple[list[dict[str, Any]], Any]] = field(default_factory=list)

    @property
    def table(self) -> str:
        return self.repository.table_name

    def track(self, session_id: str) -> None:
        """What POST /sessions stores: WAITING, with a callback secret."""
        self.repository.create_session(
            session_id,
            expires_at=datetime(2019, 5, 15, 13, 51, 43, 507000, tzinfo=UTC),
            session_url=None,
            callback_secret_hash=hash_callback_secret(SECRET),
        )

    def stream(self) -> list[dict[str, Any]]:
        """The records written since the last call, as Lambda shapes them (before its filter)."""
        return self.reader.read()

    def deliver(self) -> list[Any]:
        """New stream records through the template's filter, in batches of its batch size, to the handler
        (as Lambda would); the handler's responses."""
        records = MAPPING.filter.select(self.stream())
        return [
            self.invoke(records[start : start + MAPPING.batch_size])
            for start in range(0, len(records), MAPPING.batch_size)
        ]

    def invoke(self, records: list[dict[str, Any]]) -> Any:
        try:
            response = self.handler.lambda_handler(lambda_event(records), LambdaContext(timeout_seconds=30))
        except BatchProcessingError:
            self.invocations.append((records, "raised"))
            raise
        self.invocations.append((records, response))
        return response

    def consumed(self, rule: str) -> list[dict[str, Any]]:
        envelopes = self.bus.drain(rule)
        for envelope in envelopes:
            assert envelope["source"] == SOURCE
        return envelopes


@contextmanager
def publisher_pipeline(
    engine: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, moto_server: Any
) -> Iterator[Pipeline]:
    """A fresh sessions table on `engine` ("dynamodb_local" or "moto"), its stream, the publisher and a
    bus with no rules yet; all deleted afterwards."""
    dynamodb, streams = stream_clients(engine, request, moto_server)
    table = f"sessions-{uuid.uuid4().hex[:12]}"
    create_table(dynamodb, "SessionsTable", table)
    events = boto3.client("events", endpoint_url=moto_server.endpoint_url)
    sqs = boto3.client("sqs", endpoint_url=moto_server.endpoint_url)
    bus = SubscribedBus.create(events, sqs, SOURCE)

    monkeypatch.setenv("EVENT_BUS_NAME", bus.name)
    monkeypatch.setenv("EVENT_SOURCE", SOURCE)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server.endpoint_url)
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "hpp-publisher")
    # What the template sets for every function; the publisher must not need (nor read) them.
    monkeypatch.delenv("TABLE_NAME", raising=False)
    monkeypatch.delenv("KLARNA_CREDENTIALS_SECRET_ARN", raising=False)
    handler = import_function("publisher")
    handler.metrics.clear_metrics()  # Powertools keeps one metric set per process: start from none
    eventbridge = ScriptedEventBridge(real=handler.bus.client)
    handler.bus.client = eventbridge
    yield Pipeline(
        engine,
        handler,
        SessionRepository(table, dynamodb, retention_days=0),  # 2019 dates: no TTL deletions mid-test
        dynamodb,
        StreamReader.for_table(dynamodb, streams, table),
        bus,
        eventbridge,
    )
    for entry in eventbridge.entries:
        assert entry["Source"] == SOURCE
        assert not schema_errors(entry["DetailType"], detail_of(entry)), "published an event off its schema"
    bus.delete()
    dynamodb.delete_table(TableName=table)
