"""DynamoDB Local for tests: the runner is ``local.emulators.dynamodb_local``, shared with the local stack;
and a client on either engine the DynamoDB tests run on."""

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

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
]
