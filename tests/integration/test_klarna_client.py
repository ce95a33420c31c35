"""The Klarna Read Session client over real HTTP (the Klarna simulator on 127.0.0.1), with credentials from
Secrets Manager (moto server) through Powertools parameters."""

import json
import socket
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from hpp_core.errors import DependencyError
from hpp_core.klarna import (
    KlarnaAuthFailed,
    KlarnaBadResponse,
    KlarnaClient,
    KlarnaCredentials,
    KlarnaNotFound,
    KlarnaRateLimited,
    KlarnaTimeout,
    KlarnaUnavailable,
    secrets_manager_credentials,
)
from local.klarna_simulator import KlarnaSimulator
from tests.support.klarna import klarna_client, simulated_klarna

SID = "39a1c773-bafd-754d-af1f-b30c592f1267"
TOKEN = "a1a8f727-2756-6058-bd3c-40069be0994b"


@pytest.fixture
def klarna() -> Iterator[KlarnaSimulator]:
    with simulated_klarna() as simulator:
        yield simulator


def test_read_session_parses_klarnas_answer_and_sends_basic_auth(klarna: KlarnaSimulator) -> None:
    klarna.add_session(
        SID,
        status="COMPLETED",
        updated_at="2019-05-13T14:54:04.675Z",
        authorization_token=TOKEN,
        customer={"email": "someone@example.com"},
    )
    session = klarna_client(klarna).read_session(SID)
    assert (session.session_id, session.status) == (SID, "COMPLETED")
    assert session.authorization_token is not None
    assert session.authorization_token.get_secret_value() == TOKEN
    (request,) = klarna.requests
    assert request.header("Authorization") == klarna.auth_header()["Authorization"]
    assert request.path == f"/hpp/v1/sessions/{SID}"


def test_session_id_cannot_escape_the_sessions_path(klarna: KlarnaSimulator) -> None:
    with pytest.raises(KlarnaNotFound):
        klarna_client(klarna).read_session("../../payments/v1/authorizations/x")
    (request,) = klarna.requests
    assert request.path.startswith("/hpp/v1/sessions/")
    assert "/payments/" not in request.path.removeprefix("/hpp/v1/sessions/").replace("%2F", "")


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        ({"status": 404}, KlarnaNotFound),
        ({"status": 401}, KlarnaAuthFailed),
        ({"status": 403}, KlarnaAuthFailed),
        ({"status": 429, "headers": {"Retry-After": "2"}}, KlarnaRateLimited),
        ({"status": 500}, KlarnaUnavailable),
        ({"status": 503}, KlarnaUnavailable),
        ({"status": 200, "body": b"<html>not json</html>"}, KlarnaBadResponse),
        ({"status": 200, "body": b'{"session_id": "x"}'}, KlarnaBadResponse),
        ({"status": None, "delay": 1.5}, KlarnaTimeout),
        ({"disconnect": True}, KlarnaUnavailable),
    ],
)
def test_failures_become_typed_errors(
    klarna: KlarnaSimulator, fault: dict[str, Any], error: type[Exception]
) -> None:
    klarna.add_session(SID, status="IN_PROGRESS")
    klarna.fail_next("GET", "/hpp/v1/sessions", **fault)
    with pytest.raises(error) as caught:
        klarna_client(klarna, timeout=0.5).read_session(SID)
    if isinstance(caught.value, KlarnaRateLimited):
        assert caught.value.retry_after == 2


def test_klarna_error_body_and_correlation_id_are_kept(klarna: KlarnaSimulator) -> None:
    klarna.fail_next(
        "GET",
        "/hpp/v1/sessions",
        status=400,
        body=json.dumps(
            {"error_code": "BAD_VALUE", "error_messages": ["Bad value: id"], "correlation_id": "corr-1"}
        ),
    )
    with pytest.raises(Exception) as caught:
        klarna_client(klarna).read_session(SID)
    error: Any = caught.value
    assert (error.http_status, error.error_code, error.correlation_id) == (400, "BAD_VALUE", "corr-1")
    assert error.error_messages == ["Bad value: id"]
    assert "corr-1" in str(error)


def test_wrong_credentials_are_an_auth_failure(klarna: KlarnaSimulator) -> None:
    klarna.add_session(SID)
    with pytest.raises(KlarnaAuthFailed):
        klarna_client(klarna, password="wrong").read_session(SID)


def test_answer_for_another_session_is_refused(klarna: KlarnaSimulator) -> None:
    other = klarna.add_session("00000000-aaaa-bbbb-cccc-000000000000", status="COMPLETED")
    klarna.fail_next(
        "GET", f"/hpp/v1/sessions/{SID}", status=200, body=json.dumps(klarna.read_body(other["session_id"]))
    )
    with pytest.raises(KlarnaBadResponse, match="different session"):
        klarna_client(klarna).read_session(SID)


class TestCredentialsFromSecretsManager:
    @pytest.fixture
    def secrets(self, moto_server: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
        monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server.endpoint_url)
        from aws_lambda_powertools.utilities.parameters import base

        base.DEFAULT_PROVIDERS.clear()
        yield boto3.client("secretsmanager", endpoint_url=moto_server.endpoint_url)
        base.DEFAULT_PROVIDERS.clear()

    def create(self, secrets: Any, value: str) -> str:
        return str(secrets.create_secret(Name=f"klarna-{uuid.uuid4().hex[:8]}", SecretString=value)["ARN"])

    def test_credentials_are_read_and_cached(self, secrets: Any, klarna: KlarnaSimulator) -> None:
        config = klarna.config
        arn = self.create(secrets, json.dumps({"username": config.username, "password": config.password}))
        provider = secrets_manager_credentials(arn, max_age_seconds=300)
        klarna.add_session(SID)
        client = KlarnaClient(klarna.url, provider, timeout_seconds=1)
        client.read_session(SID)
        # Rotated in Secrets Manager: the cached value is still used until max_age passes.
        secrets.put_secret_value(SecretId=arn, SecretString=json.dumps({"username": "x", "password": "y"}))
        client.read_session(SID)
        assert all(request.authorized for request in klarna.requests)

    @pytest.mark.parametrize(
        "value", ['{"username": "only"}', "not json", '{"username": "", "password": "p"}']
    )
    def test_malformed_secret_is_an_auth_failure_that_names_no_value(self, secrets: Any, value: str) -> None:
        provider = secrets_manager_credentials(self.create(secrets, value), max_age_seconds=0)
        with pytest.raises(KlarnaAuthFailed) as caught:
            provider()
        assert "only" not in str(caught.value)

    def test_missing_secret_is_a_dependency_error(self, secrets: Any) -> None:
        arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:missing-AbCdEf"
        with pytest.raises(DependencyError):
            secrets_manager_credentials(arn, max_age_seconds=0)()


def test_refused_connection_is_unavailable_not_a_timeout() -> None:
    # A refused connection sent nothing: for a create this must not read "Klarna may have created it".
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    credentials = KlarnaCredentials(username="u", password="p")
    client = KlarnaClient(f"http://127.0.0.1:{port}", lambda: credentials, timeout_seconds=0.5)
    with pytest.raises(KlarnaUnavailable) as caught:
        client.read_session(SID)
    assert not isinstance(caught.value, KlarnaTimeout)
