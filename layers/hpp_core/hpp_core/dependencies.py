"""Building the adapters from settings, once per Lambda execution environment.

AWS endpoints come from the standard SDK settings (AWS_ENDPOINT_URL, AWS_ENDPOINT_URL_DYNAMODB, ...),
so the same code talks to AWS, to DynamoDB Local and to moto; how long a call may take comes from the
function's settings (settings.AwsCallSettings).
"""

from typing import TYPE_CHECKING

import boto3
from botocore.config import Config

from hpp_core.klarna import KlarnaClient, secrets_manager_credentials
from hpp_core.repository import SessionRepository, StateRepository
from hpp_core.settings import KlarnaSettings, StateSettings, TableSettings
from hpp_core.tracing import annotate_dynamodb_calls

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

    from hpp_core.idempotency import IdempotentCreates


def dynamodb_config(
    config: Config, *, max_pool_connections: int | None = None, validate_requests: bool = True
) -> Config:
    """`config` (the settings' timeouts and attempts) for one DynamoDB client.

    `max_pool_connections`: threaded callers (the poller's) need a connection each, or botocore discards
    extras. `validate_requests=False` skips botocore's own check of each request against the API model
    (about half a millisecond of CPU a call): the repository builds its requests from fixed shapes and
    DynamoDB checks them again, while the poller's threads feel every millisecond as time the others
    wait for the interpreter.
    """
    if max_pool_connections is not None:
        config = config.merge(Config(max_pool_connections=max_pool_connections))
    if not validate_requests:
        config = config.merge(Config(parameter_validation=False))
    return config


def dynamodb_client(
    config: Config, *, max_pool_connections: int | None = None, validate_requests: bool = True
) -> "DynamoDBClient":
    config = dynamodb_config(
        config, max_pool_connections=max_pool_connections, validate_requests=validate_requests
    )
    client = boto3.client("dynamodb", config=config)
    annotate_dynamodb_calls(client)
    return client


def session_repository(
    settings: TableSettings,
    *,
    max_pool_connections: int | None = None,
    validate_requests: bool = True,
    client: "DynamoDBClient | None" = None,
) -> SessionRepository:
    """The sessions table's adapter; `client` for a caller with its own credentials (the recovery CLI)."""
    calls = settings.aws_call_config()
    return SessionRepository(
        settings.table_name,
        client
        or dynamodb_client(
            calls, max_pool_connections=max_pool_connections, validate_requests=validate_requests
        ),
        poll_shards=settings.poll_shards,
        first_poll_delay_seconds=settings.first_poll_delay_seconds,
        retention_days=settings.session_retention_days,
    )


def state_repository(settings: StateSettings, *, client: "DynamoDBClient | None" = None) -> StateRepository:
    """The state table's adapter; `client` to share one the function already made (one less at cold start)."""
    return StateRepository(settings.state_table_name, client or dynamodb_client(settings.aws_call_config()))


def klarna_client(settings: KlarnaSettings) -> KlarnaClient:
    """Klarna, with the credentials read from Secrets Manager within the settings' AWS call budget."""
    return KlarnaClient(
        settings.klarna_base_url,
        secrets_manager_credentials(
            settings.klarna_credentials_secret_arn,
            max_age_seconds=settings.credentials_cache_seconds,
            boto_config=settings.aws_call_config(),
        ),
        timeout_seconds=settings.klarna_timeout_seconds,
    )


def idempotent_creates(table_name: str, calls: Config) -> "IdempotentCreates":
    """Idempotent creates on `table_name`, its calls within `calls` (timeouts, attempts); Powertools'
    idempotency is imported here, on first use only."""
    from hpp_core.idempotency import IdempotentCreates  # noqa: PLC0415 - kept off the cold start

    return IdempotentCreates(table_name, dynamodb_client(calls))
