"""DynamoDB backends for integration tests: DynamoDB Local (AWS's engine) and moto, same tests on both."""

import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from moto import mock_aws

from hpp_core.repository import SessionRepository
from tests.support.template import create_table

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient


@pytest.fixture(params=["dynamodb_local", "moto"])
def dynamodb(request: pytest.FixtureRequest) -> Iterator["DynamoDBClient"]:
    """A DynamoDB client on DynamoDB Local, then on moto (in-process)."""
    if request.param == "dynamodb_local":
        server: Any = request.getfixturevalue("dynamodb_local")
        yield boto3.client("dynamodb", endpoint_url=server.endpoint_url)
    else:
        with mock_aws():
            yield boto3.client("dynamodb")


@pytest.fixture
def sessions_table(dynamodb: "DynamoDBClient") -> Iterator[str]:
    """A fresh sessions table, defined exactly as template.yaml defines it."""
    name = f"sessions-{uuid.uuid4().hex[:12]}"
    create_table(dynamodb, "SessionsTable", name)
    yield name
    dynamodb.delete_table(TableName=name)


@pytest.fixture
def repository(dynamodb: "DynamoDBClient", sessions_table: str) -> SessionRepository:
    # No TTL attribute: these tests stamp 2019 dates, and DynamoDB Local deletes rows past their TTL.
    return SessionRepository(sessions_table, dynamodb, retention_days=0)
