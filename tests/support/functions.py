"""Loading a function module the way Lambda does, for handler tests."""

import importlib
import json
import sys
import uuid
from types import ModuleType

import boto3

from hpp_core.settings import clear_settings_cache
from tests.support.fake_klarna import FakeKlarna


def import_function(name: str) -> ModuleType:
    """Import a function module as Lambda would at cold start, under the current environment."""
    clear_settings_cache()
    from aws_lambda_powertools.utilities.parameters import base

    base.DEFAULT_PROVIDERS.clear()
    module = importlib.reload(sys.modules[name]) if name in sys.modules else importlib.import_module(name)
    # Powertools keeps the handler of the first import, bound to that moment's sys.stdout; write to the
    # real fd 1 instead, which capfd captures (as Lambda's runtime captures it).
    module.logger.registered_handler.setStream(sys.__stdout__)
    return module


def klarna_credentials_secret(secrets_endpoint_url: str, klarna: FakeKlarna) -> str:
    """A Secrets Manager secret holding the fake Klarna's credentials, as the template expects; its ARN."""
    secrets = boto3.client("secretsmanager", endpoint_url=secrets_endpoint_url)
    return str(
        secrets.create_secret(
            Name=f"klarna-{uuid.uuid4().hex[:8]}",
            SecretString=json.dumps({"username": klarna.username, "password": klarna.password}),
        )["ARN"]
    )
