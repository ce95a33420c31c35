"""Suite-wide set-up: fake AWS credentials before anything imports boto3, and local AWS servers."""

import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest
from hypothesis import settings

from tests.support.dynamodb_local import DynamoDBLocal

if TYPE_CHECKING:
    from tests.support.moto_server import MotoServer

# Set at import, before any test module creates a boto3 client or session: whatever the shell has
# (profiles, SSO, real keys, endpoint overrides), the tests use fake credentials and never reach AWS.
FAKE_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SECURITY_TOKEN": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "eu-west-1",
    "AWS_REGION": "eu-west-1",
    # No account id in the fake credentials: don't let the SDK try account-based endpoints.
    "AWS_ACCOUNT_ID_ENDPOINT_MODE": "disabled",
    # No config/credentials files and no instance metadata lookups (which would wait for a timeout).
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "AWS_EC2_METADATA_DISABLED": "true",
    "POWERTOOLS_METRICS_NAMESPACE": "HppTrackerTest",
    "POWERTOOLS_SERVICE_NAME": "hpp-tracker-test",
}
_INHERITED_TO_DROP = ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE")

for _name in _INHERITED_TO_DROP:
    os.environ.pop(_name, None)
for _name in [name for name in os.environ if name.startswith("AWS_ENDPOINT_URL")]:
    os.environ.pop(_name)  # a test that wants a local endpoint sets it itself
os.environ.update(FAKE_AWS_ENV)

# CI machines are small and shared: a slow example is not a failure there; keep the failing seed visible.
settings.register_profile("ci", deadline=None, print_blob=True)
settings.load_profile("ci" if os.environ.get("CI") else "default")


@pytest.fixture(scope="session", autouse=True)
def aws_test_environment() -> Iterator[dict[str, str]]:
    """The fake AWS environment, set again for the session in case something changed it since import."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in FAKE_AWS_ENV.items():
            patch.setenv(name, value)
        yield FAKE_AWS_ENV


@pytest.fixture(scope="session")
def dynamodb_local() -> Iterator[DynamoDBLocal]:
    """DynamoDB Local (AWS's engine) for the whole session; ``.endpoint_url`` and ``.client()``."""
    with DynamoDBLocal() as server:
        yield server


@pytest.fixture(scope="session")
def moto_server() -> Iterator["MotoServer"]:
    """moto's server (EventBridge, SQS, Secrets Manager, ...) for the whole session; ``.endpoint_url``."""
    # Imported here: moto's server pulls in Flask, which unit-only runs need not load.
    from tests.support.moto_server import MotoServer

    with MotoServer() as server:
        yield server
