"""Loading a function module the way Lambda does, for handler tests."""

import gc
import importlib
import json
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import boto3
import pytest

from hpp_core.settings import clear_settings_cache
from local.klarna_simulator import KlarnaSimulator
from tests.support.klarna import simulated_klarna
from tests.support.template import create_table


def import_function(name: str) -> ModuleType:
    """Import a function module as Lambda would at cold start, under the current environment."""
    clear_settings_cache()
    from aws_lambda_powertools.utilities.parameters import base

    base.DEFAULT_PROVIDERS.clear()
    try:
        module = importlib.reload(sys.modules[name]) if name in sys.modules else importlib.import_module(name)
    finally:
        # A function's init turns the collector off until its end and freezes what it built: Lambda does
        # it once per environment, a test process hundreds of times, where frozen garbage would pile up
        # (and an init that failed would leave the collector off).
        gc.unfreeze()
        gc.enable()
    # Powertools keeps the handler of the first import, bound to that moment's sys.stdout; write to the
    # real fd 1 instead, which capfd captures (as Lambda's runtime captures it).
    module.logger.registered_handler.setStream(sys.__stdout__)
    return module


def klarna_credentials_secret(secrets_endpoint_url: str, klarna: KlarnaSimulator) -> str:
    """A Secrets Manager secret with the simulated Klarna's credentials, as the template expects; its ARN."""
    secrets = boto3.client("secretsmanager", endpoint_url=secrets_endpoint_url)
    return str(
        secrets.create_secret(
            Name=f"klarna-{uuid.uuid4().hex[:8]}",
            SecretString=json.dumps({"username": klarna.config.username, "password": klarna.config.password}),
        )["ARN"]
    )


@dataclass(frozen=True)
class TrackerEnvironment:
    """What a function under test talks to: a sessions table, the simulated Klarna, its credentials secret."""

    dynamodb: Any
    table: str
    klarna: KlarnaSimulator
    # The sessions function's idempotency records (template.yaml's IdempotencyTable).
    idempotency_table: str
    # The state table (template.yaml's StateTable): counters and caches that are no session.
    state_table: str


def dynamodb_endpoint(request: pytest.FixtureRequest, moto_server: Any) -> str:
    """The DynamoDB a parametrised test runs on: `dynamodb_local` (AWS's engine) or `moto`."""
    if request.param == "dynamodb_local":
        return str(request.getfixturevalue("dynamodb_local").endpoint_url)
    return str(moto_server.endpoint_url)


@contextmanager
def tracker_environment(
    monkeypatch: pytest.MonkeyPatch, *, dynamodb_endpoint_url: str, moto_endpoint_url: str, service: str
) -> Iterator[TrackerEnvironment]:
    """Fresh tables (as template.yaml defines them) and a simulated Klarna, with the environment variables a
    function reads pointing at them; the tables are deleted afterwards. Every function gets the sessions
    and the state table; the sessions function also its idempotency table."""
    client = boto3.client("dynamodb", endpoint_url=dynamodb_endpoint_url)
    suffix = uuid.uuid4().hex[:12]
    table, idempotency_table, state_table = f"sessions-{suffix}", f"idempotency-{suffix}", f"state-{suffix}"
    tables = {"SessionsTable": table, "StateTable": state_table}
    if service == "hpp-sessions":
        tables["IdempotencyTable"] = idempotency_table
    for logical_id, name in tables.items():
        create_table(client, logical_id, name)
    with simulated_klarna() as klarna:
        environment = {
            "TABLE_NAME": table,
            "IDEMPOTENCY_TABLE_NAME": idempotency_table,
            "STATE_TABLE_NAME": state_table,
            "KLARNA_API_URL": klarna.url,
            "KLARNA_CREDENTIALS_SECRET_ARN": klarna_credentials_secret(moto_endpoint_url, klarna),
            "AWS_ENDPOINT_URL": moto_endpoint_url,
            "AWS_ENDPOINT_URL_DYNAMODB": dynamodb_endpoint_url,
            "POWERTOOLS_SERVICE_NAME": service,
            # The functions' short read timeouts are for AWS. On a loaded test machine a write that waits
            # past one is sent again and finds itself (a "duplicate"); tests of the budgets set their own.
            "AWS_CALL_READ_TIMEOUT_SECONDS": "10",
        }
        for name, value in environment.items():
            monkeypatch.setenv(name, value)
        yield TrackerEnvironment(client, table, klarna, idempotency_table, state_table)
    for name in tables.values():
        client.delete_table(TableName=name)
