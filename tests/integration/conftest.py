"""DynamoDB backends for integration tests: DynamoDB Local (AWS's engine) and moto, same tests on both."""

import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from hpp_core.repository import SessionRepository
from tests.support.dynamodb_local import ENGINES, engine_client
from tests.support.template import create_table

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient


@pytest.fixture(params=ENGINES)
def dynamodb(request: pytest.FixtureRequest) -> Iterator["DynamoDBClient"]:
    """A DynamoDB client on DynamoDB Local, then on moto (in-process)."""
    with engine_client(request.param, request) as client:
        yield client


def _fresh_table(dynamodb: "DynamoDBClient", logical_id: str, prefix: str) -> Iterator[str]:
    """A fresh table, defined exactly as template.yaml defines `logical_id`; deleted afterwards."""
    name = f"{prefix}-{uuid.uuid4().hex[:12]}"
    create_table(dynamodb, logical_id, name)
    yield name
    dynamodb.delete_table(TableName=name)


@pytest.fixture
def sessions_table(dynamodb: "DynamoDBClient") -> Iterator[str]:
    yield from _fresh_table(dynamodb, "SessionsTable", "sessions")


@pytest.fixture
def state_table(dynamodb: "DynamoDBClient") -> Iterator[str]:
    yield from _fresh_table(dynamodb, "StateTable", "state")


@pytest.fixture
def repository(dynamodb: "DynamoDBClient", sessions_table: str) -> SessionRepository:
    # No TTL attribute: these tests stamp 2019 dates, and DynamoDB Local deletes rows past their TTL.
    return SessionRepository(sessions_table, dynamodb, retention_days=0)
