"""Building the adapters from settings, once per Lambda execution environment.

AWS endpoints come from the standard SDK settings (AWS_ENDPOINT_URL, AWS_ENDPOINT_URL_DYNAMODB, ...),
so the same code talks to AWS, to DynamoDB Local and to moto.
"""

from typing import TYPE_CHECKING

import boto3
from botocore.config import Config

from hpp_core.klarna import KlarnaClient, secrets_manager_credentials
from hpp_core.repository import SessionRepository, StateRepository
from hpp_core.settings import KlarnaSettings, StateSettings, TableSettings

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

    from hpp_core.idempotency import IdempotentCreates

# Tight timeouts and few attempts: a callback has 3 seconds in all, and a failed write must become a 5xx
# (Klarna retries) rather than a hung request.
_DYNAMODB_CONFIG = Config(
    connect_timeout=1,
    read_timeout=2,
    retries={"mode": "standard", "total_max_attempts": 3},
)


def dynamodb_client(*, max_pool_connections: int | None = None) -> "DynamoDBClient":
    config = _DYNAMODB_CONFIG
    if max_pool_connections is not None:
        # Threaded callers (the poller's workers) need a connection each, or botocore discards extras.
        config = config.merge(Config(max_pool_connections=max_pool_connections))
    return boto3.client("dynamodb", config=config)


def session_repository(
    settings: TableSettings,
    *,
    max_pool_connections: int | None = None,
    client: "DynamoDBClient | None" = None,
) -> SessionRepository:
    """The sessions table's adapter; `client` for a caller with its own credentials (the recovery CLI)."""
    return SessionRepository(
        settings.table_name,
        client or dynamodb_client(max_pool_connections=max_pool_connections),
        poll_shards=settings.poll_shards,
        first_poll_delay_seconds=settings.first_poll_delay_seconds,
        retention_days=settings.session_retention_days,
    )


def state_repository(settings: StateSettings) -> StateRepository:
    return StateRepository(settings.state_table_name, dynamodb_client())


def klarna_client(settings: KlarnaSettings) -> KlarnaClient:
    return KlarnaClient(
        settings.klarna_base_url,
        secrets_manager_credentials(
            settings.klarna_credentials_secret_arn, max_age_seconds=settings.credentials_cache_seconds
        ),
        timeout_seconds=settings.klarna_timeout_seconds,
    )


def idempotent_creates(table_name: str) -> "IdempotentCreates":
    """Idempotent creates on `table_name`; Powertools' idempotency is imported here, on first use only."""
    from hpp_core.idempotency import IdempotentCreates  # noqa: PLC0415 - kept off the cold start

    return IdempotentCreates(table_name, dynamodb_client())
