"""DynamoDB Local for tests: the runner is ``local.emulators.dynamodb_local``, shared with the local stack;
and a client on either engine the DynamoDB tests run on."""

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from moto import mock_aws

from local.emulators.dynamodb_local import (
    HOST,
    PACKAGE_DIR,
    REGION,
    DynamoDBLocal,
    DynamoDBLocalError,
    find_distribution,
    free_port,
)

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_dynamodbstreams import DynamoDBStreamsClient

# The engines every DynamoDB test runs on: AWS's own, then moto in-process.
ENGINES = ("dynamodb_local", "moto")


@contextmanager
def engine_client(engine: str, request: pytest.FixtureRequest) -> Iterator["DynamoDBClient"]:
    """A DynamoDB client on `engine`: the session's DynamoDB Local, or moto in-process for the block."""
    if engine == "dynamodb_local":
        server: DynamoDBLocal = request.getfixturevalue("dynamodb_local")
        yield server.client()
    else:
        with mock_aws():
            yield boto3.client("dynamodb")


def stream_clients(
    engine: str, request: pytest.FixtureRequest, moto_server: Any
) -> tuple["DynamoDBClient", "DynamoDBStreamsClient"]:
    """DynamoDB and DynamoDB Streams clients on `engine`: the session's DynamoDB Local, or moto's server
    (whose streams other processes' clients can read too)."""
    if engine == "dynamodb_local":
        server: DynamoDBLocal = request.getfixturevalue("dynamodb_local")
        return server.client(), server.streams_client()
    return (
        boto3.client("dynamodb", endpoint_url=moto_server.endpoint_url),
        boto3.client("dynamodbstreams", endpoint_url=moto_server.endpoint_url),
    )


__all__ = [
    "ENGINES",
    "HOST",
    "PACKAGE_DIR",
    "REGION",
    "DynamoDBLocal",
    "DynamoDBLocalError",
    "engine_client",
    "find_distribution",
    "free_port",
    "stream_clients",
]
