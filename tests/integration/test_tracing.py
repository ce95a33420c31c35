"""What the functions' X-Ray traces hold: the session id on every Klarna and DynamoDB call, and never a
token, a secret, contact data or a body.

Each function runs in a process of its own (tests/support/traced_run.py) with tracing on as in Lambda
(LAMBDA_TASK_ROOT set, a trace id per invocation) and the real X-Ray SDK recorder, which sends its
segments over UDP to AWS_XRAY_DAEMON_ADDRESS: here a socket of this test, standing in for the daemon.
The paths are those that handle secrets: a create (Klarna's answer holds the callback URL's secret and the
consumer links), a distribution by e-mail and by SMS, a callback with a token, a poll that reads a token
from Klarna, and the publisher putting a token on the bus.
"""

import json
import os
import re
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest

from hpp_core.callback_secrets import hash_callback_secret
from hpp_core.repository import SessionRepository
from tests.support.functions import TrackerEnvironment, tracker_environment
from tests.support.lambda_runtime import load_event

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CALLBACK_EVENT = load_event("callback/completed_authorization_token")
CALLBACK_SESSION = CALLBACK_EVENT["queryStringParameters"]["session_id"]
CALLBACK_SECRET = CALLBACK_EVENT["queryStringParameters"]["secret"]
CALLBACK_TOKEN = json.loads(CALLBACK_EVENT["body"])["session"]["authorization_token"]
POLLED_TOKEN = "b7e1c2d3-0000-4a5b-9c8d-7e6f5a4b3c2d"
PUBLISHED_EVENT = load_event("publisher/completed_authorization_token")
PUBLISHED_TOKEN = PUBLISHED_EVENT["Records"][0]["dynamodb"]["NewImage"]["authorization_token"]["S"]
EMAIL_EVENT, SMS_EVENT = load_event("sessions/distribute_email"), load_event("sessions/distribute_sms")


class Daemon:
    """A UDP socket where the X-Ray SDK sends what it records, as the X-Ray daemon would receive it."""

    def __init__(self) -> None:
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.socket.bind(("127.0.0.1", 0))
        self.socket.settimeout(0.5)
        self.address = f"127.0.0.1:{self.socket.getsockname()[1]}"
        self.datagrams: list[str] = []

    def drain(self) -> list[dict[str, Any]]:
        """Every entity received so far (segments and subsegments, nested ones flattened)."""
        while True:
            try:
                self.datagrams.append(self.socket.recv(65_536).decode())
            except TimeoutError:
                break
        entities: list[dict[str, Any]] = []
        for datagram in self.datagrams:
            header, _, document = datagram.partition("\n")
            assert json.loads(header) == {"format": "json", "version": 1}
            entities.extend(_flattened(json.loads(document)))
        return entities


def _flattened(entity: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield entity
    for child in entity.get("subsegments", []):
        yield from _flattened(child)


@pytest.fixture
def daemon() -> Iterator[Daemon]:
    udp = Daemon()
    yield udp
    udp.socket.close()


@pytest.fixture
def environment(
    monkeypatch: pytest.MonkeyPatch, dynamodb_local: Any, moto_server: Any
) -> Iterator[TrackerEnvironment]:
    with tracker_environment(
        monkeypatch,
        dynamodb_endpoint_url=dynamodb_local.endpoint_url,
        moto_endpoint_url=moto_server.endpoint_url,
        service="hpp-sessions",
    ) as env:
        bus = boto3.client("events", endpoint_url=moto_server.endpoint_url).create_event_bus(
            Name=f"bus-{uuid.uuid4().hex[:8]}"
        )
        monkeypatch.setenv("EVENT_BUS_NAME", bus["EventBusArn"].rsplit("/", 1)[-1])
        monkeypatch.setenv("SESSION_RETENTION_DAYS", "0")  # DynamoDB Local deletes rows past their TTL
        monkeypatch.delenv("CALLBACK_BASE_URL", raising=False)
        yield env


def run_traced(function: str, events: list[dict[str, Any]], daemon: Daemon) -> list[Any]:
    """The handler's answers to `events`, in a process traced as Lambda traces it."""
    variables = {
        **os.environ,
        "LAMBDA_TASK_ROOT": str(ROOT),
        "AWS_XRAY_DAEMON_ADDRESS": daemon.address,
        "POWERTOOLS_TRACE_DISABLED": "false",
        "POWERTOOLS_SERVICE_NAME": f"hpp-{function}",
        "PYTHONPATH": os.pathsep.join(
            [str(ROOT / "layers/hpp_core"), str(ROOT / "functions" / function), str(ROOT)]
        ),
    }
    done = subprocess.run(
        [sys.executable, "-m", "tests.support.traced_run"],
        input=json.dumps({"function": function, "events": events}),
        capture_output=True,
        text=True,
        env=variables,
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    (answers,) = [line for line in done.stdout.splitlines() if line.startswith("ANSWERS ")]
    return list(json.loads(answers.removeprefix("ANSWERS ")))


def for_session(event: dict[str, Any], session_id: str) -> dict[str, Any]:
    sample = event["pathParameters"]["session_id"]
    return {
        **event,
        "path": event["path"].replace(sample, session_id),
        "pathParameters": {"session_id": session_id},
    }


def annotated(entities: list[dict[str, Any]], name: str, session_id: str) -> list[dict[str, Any]]:
    return [
        e
        for e in entities
        if e.get("name") == name and e.get("annotations", {}).get("session_id") == session_id
    ]


@dataclass(frozen=True)
class Traced:
    """What the paths left: the entities the daemon received, the raw datagrams, and the ids involved."""

    entities: list[dict[str, Any]]
    recorded: str
    created_id: str
    polled_id: str
    created_secret: str


def run_every_path(environment: TrackerEnvironment, daemon: Daemon) -> Traced:
    """Create and distribute (sessions), a callback with a token, a poll that reads one, a publish of one."""
    repository = SessionRepository(environment.table, environment.dynamodb, retention_days=0)
    secret_hash = hash_callback_secret(CALLBACK_SECRET)
    repository.create_session(
        CALLBACK_SESSION, expires_at=None, session_url=None, callback_secret_hash=secret_hash
    )
    polled = str(uuid.uuid4())
    ten_minutes_ago = lambda: datetime.now(UTC) - timedelta(minutes=10)  # noqa: E731 - due for a poll now
    SessionRepository(
        environment.table, environment.dynamodb, retention_days=0, clock=ten_minutes_ago
    ).create_session(
        polled,
        expires_at=datetime.now(UTC) + timedelta(hours=40),
        session_url=None,
        callback_secret_hash=None,
    )
    environment.klarna.add_session(polled, status="COMPLETED", authorization_token=POLLED_TOKEN)

    (create,) = run_traced("sessions", [load_event("sessions/create")], daemon)
    assert create["statusCode"] == 201, create
    created_id = json.loads(create["body"])["session_id"]
    distributions = [for_session(EMAIL_EVENT, created_id), for_session(SMS_EVENT, created_id)]
    assert [answer["statusCode"] for answer in run_traced("sessions", distributions, daemon)] == [204, 204]
    # Again: DynamoDB refuses the write and hands back the stored row, token included (ALL_OLD), in the
    # error botocore raises, which its patch records.
    applied, again = run_traced("callback", [CALLBACK_EVENT, CALLBACK_EVENT], daemon)
    assert [json.loads(answer["body"])["outcome"] for answer in (applied, again)] == ["applied", "duplicate"]
    (poll,) = run_traced("poller", [load_event("poller/scheduled")], daemon)
    assert poll["outcomes"]["changed"] == 1, poll
    assert run_traced("publisher", [PUBLISHED_EVENT], daemon) == [{"batchItemFailures": []}]

    (create_request,) = environment.klarna.requests_to("POST", "/hpp/v1/sessions")
    (created_secret,) = re.findall(r"[?&]secret=([^&\"]+)", json.dumps(create_request.json))
    entities = daemon.drain()
    return Traced(entities, "\n".join(daemon.datagrams), created_id, polled, created_secret)


def test_every_klarna_and_dynamodb_call_is_a_subsegment_annotated_with_its_session(
    environment: TrackerEnvironment, daemon: Daemon
) -> None:
    traced = run_every_path(environment, daemon)
    entities = traced.entities
    # One handler subsegment per invocation, each function's.
    handlers = [e for e in entities if e.get("name") == "## lambda_handler"]
    assert sorted(e["annotations"]["Service"] for e in handlers) == sorted(
        ["hpp-sessions"] * 3 + ["hpp-callback"] * 2 + ["hpp-poller", "hpp-publisher"]
    )
    # The Klarna calls, each annotated with its session id and Klarna's status.
    distributed = annotated(entities, "Klarna distribute session", traced.created_id)
    assert [e["annotations"]["http_status"] for e in distributed] == [201, 201]
    assert [
        e["annotations"]["http_status"] for e in annotated(entities, "Klarna read session", traced.polled_id)
    ] == [200]
    assert [
        e["annotations"]["http_status"] for e in entities if e.get("name") == "Klarna create session"
    ] == [201]
    # The DynamoDB calls, annotated with the session id of their key: each callback's one write among them.
    callback_calls = annotated(entities, "dynamodb", CALLBACK_SESSION)
    assert [e["aws"]["operation"] for e in callback_calls] == ["UpdateItem", "UpdateItem"]
    (refused,) = [e for e in callback_calls if "cause" in e]  # the duplicate: its type and message only
    assert [x["type"] for x in refused["cause"]["exceptions"]] == ["ConditionalCheckFailedException"]
    assert "UpdateItem" in {e["aws"]["operation"] for e in annotated(entities, "dynamodb", traced.polled_id)}
    assert "PutItem" in {e["aws"]["operation"] for e in annotated(entities, "dynamodb", traced.created_id)}
    assert [e["aws"]["operation"] for e in entities if e.get("name") == "events"] == ["PutEvents"]

    # Nothing a trace must never hold.
    email = json.loads(EMAIL_EVENT["body"])["contact_information"]["email"]
    phone = json.loads(SMS_EVENT["body"])["contact_information"]["phone"]
    never = {
        "callback token": CALLBACK_TOKEN,
        "polled token": POLLED_TOKEN,
        "published token": PUBLISHED_TOKEN,
        "callback secret": CALLBACK_SECRET,
        "callback secret hash": hash_callback_secret(CALLBACK_SECRET),
        "the created session's callback secret": traced.created_secret,
        "Klarna username": environment.klarna.config.username,
        "Klarna password": environment.klarna.config.password,
        "e-mail": email,
        "phone number": phone,
        "the create's body": "shop.example.com",
        "an HTTP authorization": "Basic ",
    }
    assert [what for what, value in never.items() if value in traced.recorded] == []
