"""Where `hpp-tracker` acts: a deployed stack or the local stack, seen the same way.

A deployed stack is found by name (`--stack NAME`): its CloudFormation outputs name every resource, the
standard AWS credentials and region reach it, and the commands run as the stack's `OperatorRole` (the
one role besides the publisher that the event bus lets put the tracker's events). The local stack is
found by its ready line (`--local READY_FILE`, written by `make run ARGS="--ready-file FILE"`), which
carries the same outputs with their local values and the emulators' endpoints.

The tracker's own adapters are built here as the functions build them, from settings validated the same
way (`PollerSettings`, from the outputs): the repository writes rows exactly as the functions do (same
poll shards, first delay and retention), the Klarna client reads with the credentials in the stack's
secret, the event bus puts events with the stack's source.
"""

from __future__ import annotations

import getpass
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from pydantic import ValidationError

from hpp_core.dependencies import session_repository
from hpp_core.event_bus import EventBus
from hpp_core.klarna import KlarnaClient, KlarnaCredentials
from hpp_core.models import describe_validation_error
from hpp_core.poller import PollerSettings
from hpp_core.repository import SessionRepository
from hpp_core.settings import ConfigurationError

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

# What the CLI reads from the outputs: the local stack's ready line carries the same names.
SETTINGS_OUTPUTS = {
    "TABLE_NAME": "SessionsTableName",
    "STATE_TABLE_NAME": "StateTableName",
    "POLL_SHARDS": "PollShards",
    "FIRST_POLL_DELAY_SECONDS": "FirstPollDelaySeconds",
    "SESSION_RETENTION_DAYS": "SessionRetentionDays",
    "KLARNA_API_URL": "KlarnaApiUrl",
    "KLARNA_CREDENTIALS_SECRET_ARN": "KlarnaCredentialsSecretArn",
    "POLL_RATE_PER_SECOND": "PollerRatePerSecond",
}
REQUIRED_OUTPUTS = frozenset(
    {
        *SETTINGS_OUTPUTS.values(),
        "CallbackUrl",
        "SessionsTableStreamArn",
        "EventBusName",
        "EventBusArn",
        "EventArchiveName",
        "EventSource",
        "PublisherFailureQueueUrl",
        "PollerDeadLetterQueueUrl",
        "OperatorRoleArn",
    }
)
# No caller waits on the CLI as Klarna waits on a callback: the poller's timeout.
KLARNA_TIMEOUT_SECONDS = "3"
_CONFIG = Config(connect_timeout=3, read_timeout=20, retries={"mode": "standard", "total_max_attempts": 4})
_LOCAL_KEY = "local"  # the emulators take any credentials


class TargetError(RuntimeError):
    """The target cannot be reached, or lacks something a command needs; the message says which."""


class CredentialsProblem(TargetError):
    """The Klarna credentials secret cannot be read, or does not hold what the tracker needs."""


@dataclass
class Target:
    description: str
    outputs: dict[str, str]
    session: boto3.Session
    # Endpoint URL by service, "" for every other service (the local stack's emulators); empty on AWS.
    endpoints: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_stack(cls, name: str, *, region: str | None = None, assume_role: bool = True) -> Target:
        session = boto3.Session(region_name=region)
        try:
            stacks = session.client("cloudformation", config=_CONFIG).describe_stacks(StackName=name)[
                "Stacks"
            ]
            outputs = {o["OutputKey"]: o["OutputValue"] for o in stacks[0].get("Outputs", [])}
        except (BotoCoreError, ClientError) as error:
            raise TargetError(f"stack {name}: {_aws_error(error)}") from None
        target = cls(f"stack {name} ({session.region_name})", outputs, session)
        return target.as_operator() if assume_role else target

    @classmethod
    def from_ready_file(cls, path: Path) -> Target:
        try:
            ready = json.loads(path.read_text(encoding="utf-8").splitlines()[0])
        except (OSError, IndexError, ValueError) as error:
            raise TargetError(f"{path}: not a local stack's ready line ({error})") from None
        if not isinstance(ready, dict) or not isinstance(ready.get("outputs"), dict):
            raise TargetError(
                f"{path}: no outputs in the ready line (a local stack from before hpp-tracker?)"
            )
        session = boto3.Session(
            aws_access_key_id=_LOCAL_KEY, aws_secret_access_key=_LOCAL_KEY, region_name=ready.get("region")
        )
        dynamodb = str(ready["dynamodb_endpoint_url"])
        endpoints = {"dynamodb": dynamodb, "dynamodbstreams": dynamodb, "": str(ready["aws_endpoint_url"])}
        return cls(f"local stack ({path})", dict(ready["outputs"]), session, endpoints)

    def as_operator(self) -> Target:
        """The same target, with the credentials of the stack's OperatorRole."""
        role = self.output("OperatorRoleArn")
        try:
            credentials = self.client("sts").assume_role(
                RoleArn=role, RoleSessionName=f"hpp-tracker-{_user()}"[:64]
            )["Credentials"]
        except (BotoCoreError, ClientError) as error:
            raise TargetError(
                f"could not assume {role} ({_aws_error(error)}); your IAM policy must allow sts:AssumeRole "
                "on it, or pass --no-assume-role to act with your own credentials"
            ) from None
        session = boto3.Session(
            aws_access_key_id=credentials["AccessKeyId"],
            aws_secret_access_key=credentials["SecretAccessKey"],
            aws_session_token=credentials["SessionToken"],
            region_name=self.session.region_name,
        )
        return Target(self.description, self.outputs, session, self.endpoints)

    # -- what the commands use ---------------------------------------------------------------------

    def output(self, name: str) -> str:
        value = self.outputs.get(name)
        if not value:
            raise TargetError(
                f"{self.description} has no output {name}: deploy the stack from this version of the template"
            )
        return value

    def client(self, service: str) -> Any:
        endpoint = self.endpoints.get(service) or self.endpoints.get("") or None
        return self.session.client(service, endpoint_url=endpoint, config=_CONFIG)  # type: ignore[call-overload]

    def settings(self) -> PollerSettings:
        """The tracker's settings as its functions have them: the poller's (it writes, reads, paces)."""
        environment = {variable: self.output(output) for variable, output in SETTINGS_OUTPUTS.items()}
        try:
            return PollerSettings.from_environment(
                {**environment, "KLARNA_TIMEOUT_SECONDS": KLARNA_TIMEOUT_SECONDS}
            )
        except ConfigurationError as error:
            raise TargetError(f"{self.description}: its outputs are not valid settings: {error}") from None

    def repository(self) -> SessionRepository:
        client: DynamoDBClient = self.client("dynamodb")
        return session_repository(self.settings(), client=client)

    def klarna_credentials(self) -> KlarnaCredentials:
        secret_arn = self.output("KlarnaCredentialsSecretArn")
        try:
            secret = self.client("secretsmanager").get_secret_value(SecretId=secret_arn)
        except (BotoCoreError, ClientError) as error:
            raise CredentialsProblem(f"the secret cannot be read: {_aws_error(error)}") from None
        try:
            return KlarnaCredentials.model_validate_json(secret.get("SecretString") or "")
        except ValidationError as error:
            problems = "; ".join(describe_validation_error(error)).replace("body:", "secret:")
            raise CredentialsProblem(
                f'the secret must be JSON {{"username": "...", "password": "..."}}: {problems}'
            ) from None

    def klarna(self, credentials: KlarnaCredentials | None = None) -> KlarnaClient:
        settings = self.settings()
        given = credentials or self.klarna_credentials()
        return KlarnaClient(
            settings.klarna_base_url, lambda: given, timeout_seconds=settings.klarna_timeout_seconds
        )

    def event_bus(self) -> EventBus:
        return EventBus(self.client("events"), self.output("EventBusName"), self.output("EventSource"))


def _aws_error(error: BotoCoreError | ClientError) -> str:
    if isinstance(error, ClientError):
        details = error.response.get("Error", {})
        return f"{details.get('Code', 'error')}: {details.get('Message', '')}".rstrip(": ")
    return str(error)


def _user() -> str:
    try:
        return "".join(c if c.isalnum() or c in "+=,.@-" else "-" for c in getpass.getuser())
    except (KeyError, OSError):
        return "operator"
