"""The poller Lambda, invoked with the EventBridge Scheduler sample event and a counting-down Lambda
context, on DynamoDB Local with the Klarna simulator over real HTTP and credentials in moto's Secrets
Manager."""

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from types import ModuleType
from typing import Any

import boto3
import pytest

from hpp_core.repository import POLL_ATTEMPTS, POLL_DUE_AT, SessionRepository
from hpp_core.timestamps import utc_now
from local.klarna_simulator import KlarnaSimulator
from tests.support.functions import import_function, klarna_credentials_secret
from tests.support.klarna import klarna_reads, simulated_klarna
from tests.support.lambda_runtime import LambdaContext, load_event

TOKEN = "a1a8f727-2756-6058-bd3c-40069be0994b"


@dataclass
class Stack:
    handler: ModuleType
    repository: SessionRepository
    klarna: KlarnaSimulator

    def invoke(self, context: LambdaContext | None = None, event: Any = None) -> dict[str, Any]:
        event = load_event("poller/scheduled") if event is None else event
        context = context or LambdaContext(timeout_seconds=60)
        result: dict[str, Any] = self.handler.lambda_handler(event, context)
        return result

    def track_due(self, status: str = "WAITING", **fields: Any) -> str:
        """A session tracked five minutes ago (so due now), which Klarna has in `status`."""
        session_id = str(uuid.uuid4())
        self.klarna.add_session(session_id, status=status, **fields)
        earlier = SessionRepository(
            self.repository.table_name, self.repository.client, clock=lambda: utc_now() - timedelta(minutes=5)
        )
        earlier.create_session(
            session_id,
            expires_at=utc_now() + timedelta(hours=40),
            session_url=self.klarna.session_url(session_id),
            callback_secret_hash=None,
        )
        return session_id

    def row(self, session_id: str) -> dict[str, Any]:
        item = self.repository.get_item(session_id)
        assert item is not None
        return item


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch, dynamodb_local: Any, moto_server: Any) -> Iterator[Any]:
    client = dynamodb_local.client()
    table = f"sessions-{uuid.uuid4().hex[:12]}"
    from tests.support.template import create_table

    create_table(client, "SessionsTable", table)
    state_table = f"state-{uuid.uuid4().hex[:12]}"
    create_table(client, "StateTable", state_table)
    with simulated_klarna() as klarna:
        secrets = boto3.client("secretsmanager", endpoint_url=moto_server.endpoint_url)
        arn = klarna_credentials_secret(moto_server.endpoint_url, klarna)
        env = {
            "TABLE_NAME": table,
            "STATE_TABLE_NAME": state_table,
            "KLARNA_API_URL": klarna.url,
            "KLARNA_CREDENTIALS_SECRET_ARN": arn,
            "AWS_ENDPOINT_URL": moto_server.endpoint_url,
            "AWS_ENDPOINT_URL_DYNAMODB": dynamodb_local.endpoint_url,
            "POWERTOOLS_SERVICE_NAME": "hpp-poller",
            "KLARNA_TIMEOUT_SECONDS": "1",
            "POLL_TIME_MARGIN_SECONDS": "2",
        }
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        yield klarna, SessionRepository(table, client), secrets, arn
    client.delete_table(TableName=table)
    client.delete_table(TableName=state_table)


def start(environment: Any, monkeypatch: pytest.MonkeyPatch, **env: str) -> Stack:
    klarna, repository, _, _ = environment
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    handler = import_function("poller")
    return Stack(handler, repository, klarna)


def output_lines(output: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def metrics_of(lines: list[dict[str, Any]]) -> dict[str, Any]:
    (emf,) = [line for line in lines if "_aws" in line]
    directive = emf["_aws"]["CloudWatchMetrics"][0]
    assert directive["Namespace"] == "HppTrackerTest"
    assert ["service"] in directive["Dimensions"]
    assert emf["service"] == "hpp-poller"
    values = {}
    for metric in directive["Metrics"]:
        value = emf[metric["Name"]]
        (values[metric["Name"]],) = value if isinstance(value, list) else [value]  # one value per run
    return values


def metric_units(lines: list[dict[str, Any]]) -> dict[str, str]:
    (emf,) = [line for line in lines if "_aws" in line]
    return {metric["Name"]: metric["Unit"] for metric in emf["_aws"]["CloudWatchMetrics"][0]["Metrics"]}


def test_a_scheduled_run_records_klarnas_state_and_reports_metrics(
    environment: Any, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    stack = start(environment, monkeypatch)
    completed = stack.track_due("COMPLETED", authorization_token=TOKEN)
    waiting = stack.track_due()
    capfd.readouterr()
    summary = stack.invoke()
    output = capfd.readouterr().out
    assert summary["due"] == 2
    assert summary["outcomes"] == {"changed": 2}
    assert stack.row(completed)["status"] == "COMPLETED"
    assert stack.row(waiting)[POLL_ATTEMPTS] == 0

    lines = output_lines(output)
    values = metrics_of(lines)
    assert values["PollSessionsDue"] == 2
    assert values["PollSessionsRead"] == 2
    assert values["PollSessionsChanged"] == 2
    assert values["PollSessionsExpired"] == 0
    assert values["PollThrottles"] == 0
    assert values["PollLagSeconds"] >= 240, "tracked 5 minutes ago, first due after 1"
    assert "KlarnaAuthFailed" not in values
    (finished,) = [line for line in lines if line.get("message") == "poll run finished"]
    assert finished["level"] == "INFO"
    # The schedule's context attributes are logged for correlation.
    assert finished["scheduled_time"] == "2026-03-02T12:00:00Z"
    assert finished["execution_id"] == "d32c5kddcf5bb8c3"
    assert TOKEN not in output


def test_a_run_reports_the_evidence_of_lost_callbacks_and_keeps_it_for_the_next(
    environment: Any, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    stack = start(environment, monkeypatch)
    stack.track_due("COMPLETED", authorization_token=TOKEN)  # its callback never came
    stack.track_due()
    capfd.readouterr()
    summary = stack.invoke()
    lines = output_lines(capfd.readouterr().out)
    # One change no callback reported, among the (at least) 100 reads the evidence counts: under the
    # threshold, no catch-up.
    values = metrics_of(lines)
    assert (values["PollLostCallbackEvidence"], values["PollCatchUpReads"]) == (1.0, 0)
    assert metric_units(lines)["PollLostCallbackEvidence"] == "Percent"
    assert (summary["unreported_changes"], summary["evidence_percent"], summary["catching_up"]) == (
        1,
        1.0,
        False,
    )
    stored = stack.handler.state.poller_state()
    assert (stored.unreported_changes, stored.reads, stored.catching_up) == (1, 2, False)


def test_nothing_due_still_reports_the_lag_signal(
    environment: Any, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    stack = start(environment, monkeypatch)
    capfd.readouterr()
    assert stack.invoke(event={})["due"] == 0, "a hand-made invocation polls all the same"
    values = metrics_of(output_lines(capfd.readouterr().out))
    assert (values["PollSessionsDue"], values["PollLagSeconds"]) == (0, 0)


def test_wrong_credentials_stop_the_run_with_a_metric_and_an_error_log(
    environment: Any, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    _, _, secrets, arn = environment
    secrets.put_secret_value(SecretId=arn, SecretString=json.dumps({"username": "PK1", "password": "wrong"}))
    stack = start(environment, monkeypatch, POLL_CONCURRENCY="2")
    sessions = [stack.track_due() for _ in range(10)]
    before = {s: stack.row(s) for s in sessions}
    capfd.readouterr()
    summary = stack.invoke()
    output = capfd.readouterr().out
    assert summary["stopped"] == "klarna_auth_failed"
    assert len(stack.klarna.requests) <= 2
    assert {s: stack.row(s) for s in sessions} == before
    lines = output_lines(output)
    assert metrics_of(lines)["KlarnaAuthFailed"] == 1
    (error,) = [line for line in lines if line.get("level") == "ERROR"]
    assert "credentials" in error["message"]
    assert "wrong" not in output, "the password is never logged"


def test_an_unreadable_credentials_secret_stops_the_run_too(
    environment: Any, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    _, _, secrets, arn = environment
    secrets.put_secret_value(SecretId=arn, SecretString="not json")
    stack = start(environment, monkeypatch)
    stack.track_due()
    summary = stack.invoke()
    assert summary["stopped"] == "klarna_auth_failed"
    assert stack.klarna.requests == []
    assert metrics_of(output_lines(capfd.readouterr().out))["KlarnaAuthFailed"] == 1


def test_a_short_invocation_leaves_the_rest_due_and_the_next_one_finishes(
    environment: Any, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    stack = start(environment, monkeypatch, POLL_RATE_PER_SECOND="10", POLL_CONCURRENCY="3")
    sessions = [stack.track_due() for _ in range(30)]
    due_before = {s: stack.row(s)[POLL_DUE_AT] for s in sessions}
    context = LambdaContext(timeout_seconds=3.5)  # 2 s margin: about 1.5 s of polling at 10/s
    capfd.readouterr()
    first = stack.invoke(context)
    assert context.get_remaining_time_in_millis() > 0, "returned before the invocation's timeout"
    assert first["stopped"] == "time_budget"
    polled = set(klarna_reads(stack.klarna))
    assert 0 < len(polled) < 30
    for session_id in set(sessions) - polled:
        row = stack.row(session_id)
        assert (row[POLL_DUE_AT], row[POLL_ATTEMPTS], row["updated_at_ms"]) == (due_before[session_id], 0, 0)
    lines = output_lines(capfd.readouterr().out)
    assert metrics_of(lines)["PollRunCutShort"] == 1
    assert any(line.get("message", "").startswith("poll run stopped at its time budget") for line in lines)

    second = stack.invoke(LambdaContext(timeout_seconds=60))
    assert second["stopped"] is None
    assert sorted(klarna_reads(stack.klarna)) == sorted(sessions)
    assert all(stack.row(s)["updated_at_ms"] > 0 for s in sessions)


def test_per_session_failures_are_logged_with_klarnas_details(
    environment: Any, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    stack = start(environment, monkeypatch)
    broken = stack.track_due()
    stack.track_due()
    stack.klarna.fail_next("GET", stack.klarna.session_url(broken), status=503)
    capfd.readouterr()
    summary = stack.invoke()
    assert summary["errors"] == {"KlarnaUnavailable": 1}
    lines = output_lines(capfd.readouterr().out)
    (warning,) = [line for line in lines if line.get("message") == "session poll failed"]
    assert (warning["session_id"], warning["klarna_http_status"], warning["error_kind"]) == (
        broken,
        503,
        "KlarnaUnavailable",
    )
    assert warning["klarna_correlation_id"]
    values = metrics_of(lines)
    assert (values["PollErrors"], values["PollErrors_KlarnaUnavailable"]) == (1, 1)


def test_settings_errors_name_the_variable(environment: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from hpp_core.settings import ConfigurationError

    with pytest.raises(ConfigurationError, match="POLL_RATE_PER_SECOND"):
        start(environment, monkeypatch, POLL_RATE_PER_SECOND="fast")


def test_a_stored_url_off_klarna_is_counted_as_klarna_url_refused_and_logged_once(
    environment: Any, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    stack = start(environment, monkeypatch)
    session_id = stack.track_due()
    stack.repository.client.update_item(
        TableName=stack.repository.table_name,
        Key={"session_id": {"S": session_id}},
        UpdateExpression="SET session_url = :url",
        ExpressionAttributeValues={":url": {"S": f"https://evil.example/hpp/v1/sessions/{session_id}"}},
    )
    capfd.readouterr()
    summary = stack.invoke()
    lines = output_lines(capfd.readouterr().out)
    assert summary["errors"] == {"KlarnaUrlRefused": 1}
    assert stack.klarna.requests == []
    assert metrics_of(lines)["KlarnaUrlRefused"] == 1
    (refused,) = [line for line in lines if line.get("message") == "session poll failed"]
    assert (refused["session_id"], refused["refused_origin"]) == (session_id, "https://evil.example:443")
