"""DynamoDB Local for tests: the runner is ``local.emulators.dynamodb_local``, shared with the local stack."""

from local.emulators.dynamodb_local import (
    HOST,
    PACKAGE_DIR,
    REGION,
    DynamoDBLocal,
    DynamoDBLocalError,
    find_distribution,
    free_port,
)

__all__ = [
    "HOST",
    "PACKAGE_DIR",
    "REGION",
    "DynamoDBLocal",
    "DynamoDBLocalError",
    "find_distribution",
    "free_port",
]
