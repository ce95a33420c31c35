"""The sessions Lambda, invoked with the events/sessions samples, on DynamoDB Local and on moto, with
the Klarna simulator over real HTTP on 127.0.0.1 and the credentials in (moto's) Secrets Manager.

Every Klarna failure is checked for its answer and for the table being exactly as before: nothing
half-written. Costs (Klarna requests, DynamoDB calls) are counted, not timed.
"""

import json
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from types import ModuleType
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest

from hpp_core.callback_secrets import SESSION_ID_PLACEHOLDER, hash_callback_secret
from hpp_core.klarna import origin
from hpp_core.repository import POLL_DUE_AT, POLL_SHARD, SECRET_HASH, SessionRepository
from hpp_core.timestamps import format_timestamp, parse_timestamp, to_epoch_millis
from local.klarna_simulator import KlarnaSimulator
from tests.support.dynamodb_items import from_item
from tests.support.functions import dynamodb_endpoint, import_function, tracker_environment
from tests.support.klarna import KEPT_URLS, MOVED_SESSIONS_PATH, simulated_klarna
from tests.support.lambda_runtime import LambdaContext, load_event, with_json_body
from tests.support.openapi import response_errors

SID = "39a1c773-bafd-754d-af1f-b30c592f1267"  # the session of events/sessions/{track,read,disable}.json
UNKNOWN = "6a1b0f5e-0000-4c1d-9e8f-000000000404"
TOKEN = "a1a8f727-2756-6058-bd3c-40069be0994b"
API_DOMAIN = "abcdef1234.execute-api.eu-west-1.amazonaws.com"
CALLBACK_PREFIX = f"https://{API_DOMAIN}/prod/callbacks/hpp?session_id={SESSION_ID_PLACEHOLDER}&secret="
SESSIONS_PATH = "/hpp/v1/sessions"
KLARNA_TIMEOUT = 1.0
RETRY_ATTEMPTS = 3


@dataclass
class Stack:
    sessions: ModuleType
    client: Any
    table: str
    klarna: KlarnaSimulator
    idempotency_table: str = ""
    dynamodb_calls: list[str] = field(default_factory=list)

    def invoke(
        self, event: dict[str, Any], module: ModuleType | None = None
    ) -> tuple[int, Any, dict[str, str]]:
        response = (module or self.sessions).lambda_handler(event, LambdaContext(timeout_seconds=15))
        body = json.loads(response["body"]) if response.get("body") else None
        # REST API proxy answers carry headers as multiValueHeaders.
        headers = {name: values[-1] for name, values in (response.get("multiValueHeaders") or {}).items()}
        return response["statusCode"], body, headers

    def load(self) -> None:
        """Start counting DynamoDB calls of the (re)imported sessions module."""
        self.sessions.repository.client.meta.events.register(
            "before-call.dynamodb", lambda model, **_: self.dynamodb_calls.append(model.name)
        )

    @property
    def repository(self) -> SessionRepository:
        return SessionRepository(self.table, self.client)

    def row(self, session_id: str = SID) -> dict[str, Any] | None:
        return self.repository.get_item(session_id)

    def table_contents(self) -> list[dict[str, Any]]:
        items = self.client.scan(TableName=self.table, ConsistentRead=True)["Items"]
        return sorted((from_item(item) for item in items), key=lambda item: str(item["session_id"]))

    def reset_counts(self) -> None:
        self.dynamodb_calls.clear()
        self.klarna.clear_requests()


@pytest.fixture(params=["dynamodb_local", "moto"])
def stack(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, moto_server: Any
) -> Iterator[Stack]:
    with tracker_environment(
        monkeypatch,
        dynamodb_endpoint_url=dynamodb_endpoint(request, moto_server),
        moto_endpoint_url=moto_server.endpoint_url,
        service="hpp-sessions",
    ) as environment:
        klarna = environment.klarna
        monkeypatch.setenv("KLARNA_TIMEOUT_SECONDS", str(KLARNA_TIMEOUT))
        monkeypatch.setenv("KLARNA_RETRY_ATTEMPTS", str(RETRY_ATTEMPTS))
        monkeypatch.setenv("KLARNA_RETRY_BUDGET_SECONDS", "4")
        monkeypatch.delenv("CALLBACK_BASE_URL", raising=False)
        stack = Stack(
            import_function("sessions"),
            environment.dynamodb,
            environment.table,
            klarna,
            environment.idempotency_table,
        )
        stack.load()
        yield stack
        assert klarna.errors == [], "the simulated Klarna itself failed"


def log_lines(output: str) -> list[dict[str, Any]]:
    """The structured log lines (Powertools' JSON) among captured output."""
    return [json.loads(line) for line in output.splitlines() if line.startswith('{"level"')]


def created_session_id(stack: Stack) -> str:
    (request,) = stack.klarna.requests_to("POST", SESSIONS_PATH)
    assert request.response_status == 201
    (session_id,) = stack.klarna.session_ids()
    return session_id


def callback_event(url: str, body: dict[str, Any]) -> dict[str, Any]:
    """The API Gateway event Klarna's POST to `url` produces (events/callback samples as the template)."""
    event = load_event("callback/in_progress")
    parts = urlsplit(url)
    # The URL must reach this API's callback route: host, then stage + route path.
    assert parts.scheme == "https"
    assert parts.netloc == event["requestContext"]["domainName"]
    assert parts.path == f"/{event['requestContext']['stage']}{event['path']}"
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    event["queryStringParameters"] = query
    event["multiValueQueryStringParameters"] = {name: [value] for name, value in query.items()}
    event["body"] = json.dumps(body)
    return event


# -- POST /sessions ---------------------------------------------------------------------------------


def sent_secret(stack: Stack) -> str:
    """The secret in the status_update URL of the one Create Session the tracker sent Klarna."""
    (request,) = stack.klarna.requests
    status_update = request.json["merchant_urls"]["status_update"]
    return dict(parse_qsl(urlsplit(status_update).query))["secret"]


def test_create_answers_klarnas_body_and_sends_klarna_the_callers_body_with_the_tracker_callback_url(
    stack: Stack,
) -> None:
    status, body, _ = stack.invoke(load_event("sessions/create"))
    assert status == 201
    session_id = created_session_id(stack)
    (request,) = stack.klarna.requests
    # The caller gets Klarna's answer as Klarna sent it.
    assert body["session_id"] == session_id
    assert set(body) >= {"session_url", "redirect_url", "qr_code_url", "distribution_url", "expires_at"}
    assert body["expires_at"] == stack.klarna.read_body(session_id)["expires_at"]

    # What Klarna was sent: the caller's body unchanged plus the tracker's status_update URL.
    sent = request.json
    caller_body = json.loads(load_event("sessions/create")["body"])
    status_update = sent["merchant_urls"].pop("status_update")
    assert sent == caller_body
    assert status_update.startswith(CALLBACK_PREFIX), "placeholder left literal for Klarna to fill in"
    secret = dict(parse_qsl(urlsplit(status_update).query))["secret"]
    assert len(secret) >= 22  # >= 128 bits in URL-safe base64


def test_create_stores_waiting_with_only_the_secret_hash_and_due_for_the_poller(stack: Stack) -> None:
    status, body, _ = stack.invoke(load_event("sessions/create"))
    assert status == 201
    session_id = created_session_id(stack)
    secret = sent_secret(stack)

    row = stack.row(session_id)
    assert row is not None
    assert row[SECRET_HASH] == hash_callback_secret(secret)
    assert secret not in json.dumps(row, default=str), "only the hash is stored"
    assert (row["status"], row["updated_at_ms"], row["last_source"]) == ("WAITING", 0, "sessions_api")
    assert row["session_url"] == body["session_url"]
    assert row["expires_at"] == format_timestamp(parse_timestamp(body["expires_at"]))
    assert {POLL_SHARD, POLL_DUE_AT} <= row.keys(), "the poller knows it from the first second"
    # Cost of a create: one Klarna call (sent_secret took the only one), one DynamoDB call.
    assert stack.dynamodb_calls == ["PutItem"]


def test_create_logs_the_session_and_its_caller_but_never_the_secret(
    stack: Stack, capfd: pytest.CaptureFixture[str]
) -> None:
    capfd.readouterr()
    status, _, _ = stack.invoke(load_event("sessions/create"))
    output = capfd.readouterr()
    assert status == 201
    assert sent_secret(stack) not in output.out + output.err
    (created,) = [line for line in log_lines(output.out) if line.get("message") == "session created"]
    assert created["session_id"] == created_session_id(stack)
    assert created["caller_arn"].endswith("assumed-role/merchant-backend/checkout-service")


def test_a_callback_to_the_url_klarna_was_given_is_accepted_and_one_with_another_secret_refused(
    stack: Stack,
) -> None:
    status, _, _ = stack.invoke(load_event("sessions/create"))
    assert status == 201
    session_id = created_session_id(stack)
    callback = import_function("callback")
    stack.klarna.act(session_id, "IN_PROGRESS", callback=False)  # the test delivers it
    url = stack.klarna.status_update_url(session_id)  # {{session_id}} filled in, as Klarna does
    assert url is not None

    altered = url.replace("secret=", "secret=x")
    status, body, _ = stack.invoke(callback_event(altered, stack.klarna.callback_body(session_id)), callback)
    assert (status, body["error"]["code"]) == (403, "forbidden")
    assert response_errors("POST", "/callbacks/hpp", status, body) == []
    row = stack.row(session_id)
    assert row is not None
    assert row["status"] == "WAITING"

    status, body, _ = stack.invoke(callback_event(url, stack.klarna.callback_body(session_id)), callback)
    assert (status, body["outcome"], body["source"]) == (200, "applied", "callback")
    assert response_errors("POST", "/callbacks/hpp", status, body) == []
    row = stack.row(session_id)
    assert row is not None
    assert (row["status"], row["last_source"]) == ("IN_PROGRESS", "callback")


def test_create_with_only_payment_session_url(stack: Stack) -> None:
    status, _, _ = stack.invoke(load_event("sessions/create_minimal"))
    assert status == 201
    (request,) = stack.klarna.requests
    assert set(request.json) == {"payment_session_url", "merchant_urls"}
    assert list(request.json["merchant_urls"]) == ["status_update"]


def test_unknown_fields_pass_through_to_klarna(stack: Stack) -> None:
    event = load_event("sessions/create_minimal")
    sent = json.loads(event["body"])
    sent.update(
        {
            "merchant_reference": "order-42",
            "options": {"place_order_mode": "CAPTURE_ORDER", "logo_url": "https://shop.example.com/l.png"},
            "merchant_urls": {"success": "https://shop.example.com/ok", "a_future_url": "https://x.example"},
        }
    )
    event["body"] = json.dumps(sent)
    status, _, _ = stack.invoke(event)
    assert status == 201
    (request,) = stack.klarna.requests
    assert request.json["merchant_reference"] == "order-42"
    assert request.json["options"] == sent["options"]
    assert request.json["merchant_urls"]["a_future_url"] == "https://x.example"


@pytest.mark.parametrize(
    ("sample", "status", "mentions"),
    [
        ("create_missing_payment_session_url", 400, ["payment_session_url: Field required"]),
        ("create_with_status_update", 400, ["merchant_urls.status_update", "must be left out"]),
        (
            "create_wrong_types",
            400,
            ["payment_session_url:", "merchant_urls.success:", "options.place_order_mode:", "profile_id:"],
        ),
        ("create_http_payment_session_url", 400, ["payment_session_url:", "https://"]),
        ("create_not_json", 400, ["not valid JSON"]),
        ("create_oversize", 413, ["65536 bytes"]),
    ],
)
def test_bad_create_requests_say_what_is_wrong_and_touch_nothing(
    stack: Stack, sample: str, status: int, mentions: list[str], capfd: pytest.CaptureFixture[str]
) -> None:
    capfd.readouterr()
    got, body, _ = stack.invoke(load_event(f"sessions/{sample}"))
    output = capfd.readouterr().out
    assert got == status
    text = json.dumps(body)
    for mention in mentions:
        assert mention in text
    assert stack.klarna.requests == []
    assert stack.dynamodb_calls == []
    assert stack.table_contents() == []
    assert any(line.get("http_status") == status for line in log_lines(output)), "a log line says why"
    assert "shop.example.com/klarna/status" not in output, "request data is not logged"


def test_a_custom_domain_without_callback_base_url_is_refused_before_klarna_is_called(stack: Stack) -> None:
    event = load_event("sessions/create")
    event["requestContext"]["domainName"] = "pay.example.com"
    status, body, _ = stack.invoke(event)
    assert (status, body["error"]["code"]) == (500, "misconfigured")
    assert "CALLBACK_BASE_URL" in body["error"]["message"]
    assert stack.klarna.requests == []
    assert stack.table_contents() == []


def test_callback_base_url_overrides_the_derived_url(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CALLBACK_BASE_URL", "https://pay.example.com/hpp/")
    stack.sessions = import_function("sessions")
    event = load_event("sessions/create")
    event["requestContext"]["domainName"] = "pay.example.com"
    status, _, _ = stack.invoke(event)
    assert status == 201
    (request,) = stack.klarna.requests
    assert request.json["merchant_urls"]["status_update"].startswith(
        f"https://pay.example.com/hpp/callbacks/hpp?session_id={SESSION_ID_PLACEHOLDER}&secret="
    )


@pytest.mark.parametrize(
    ("fault", "status", "code", "message"),
    [
        ({"status": 400}, 400, "klarna_rejected", "create session failed"),
        ({"status": 401}, 502, "klarna_credentials_refused", "credentials refused"),
        ({"status": 403}, 502, "klarna_credentials_refused", "credentials refused"),
        ({"status": 404}, 400, "bad_request", "payment_session_url"),
        ({"status": 429, "headers": {"X-Ratelimit-Reset": "2"}}, 503, "klarna_rate_limited", "rate limited"),
        ({"status": 500}, 502, "klarna_unavailable", "create session failed"),
        ({"status": 503}, 502, "klarna_unavailable", "create session failed"),
        ({"status": None, "delay": KLARNA_TIMEOUT + 1.5}, 504, "klarna_timeout", "may or may not"),
        ({"status": None, "disconnect": True}, 502, "klarna_unavailable", "may or may not"),
        ({"status": 201, "body": b"<html>oops</html>"}, 502, "klarna_bad_response", "probably created"),
        ({"status": 201, "body": {"no": "session id"}}, 502, "klarna_bad_response", "session_id"),
    ],
)
def test_klarna_failures_on_create_are_mapped_never_retried_and_store_nothing(
    stack: Stack, fault: dict[str, Any], status: int, code: str, message: str
) -> None:
    stack.klarna.fail_next("POST", SESSIONS_PATH, **fault)
    got, body, headers = stack.invoke(load_event("sessions/create"))
    assert (got, body["error"]["code"]) == (status, code)
    assert message in body["error"]["message"]
    assert len(stack.klarna.requests_to("POST", SESSIONS_PATH)) == 1, "create is never retried"
    assert stack.dynamodb_calls == []
    assert stack.table_contents() == []
    if fault.get("status") and fault["status"] >= 400:
        klarna = body["error"]["klarna"]
        assert klarna["http_status"] == fault["status"]
        assert klarna["correlation_id"], "Klarna's correlation id reaches the caller"
    if fault.get("status") == 429:
        assert headers["Retry-After"] == "2"


def test_a_store_failure_after_klarna_created_the_session_answers_its_id(
    stack: Stack, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", "http://127.0.0.1:9")  # nothing listens there
    broken = import_function("sessions")
    # A row that was never written holds no session_url: PUT and DELETE can only use the documented
    # form, which this Klarna serves (as Klarna does today) for the session created here.
    stack.klarna.set_session_url_path(SESSIONS_PATH)
    capfd.readouterr()
    status, body, _ = stack.invoke(load_event("sessions/create"), broken)
    output = capfd.readouterr().out
    assert (status, body["error"]["code"]) == (503, "session_not_tracked")
    session_id = created_session_id(stack)
    assert body["error"]["session_id"] == session_id
    assert body["error"]["session_url"] == stack.klarna.session_url(session_id)
    assert "PUT /sessions/" in body["error"]["message"]
    assert stack.table_contents() == []
    assert any(
        json.loads(line).get("session_id") == session_id
        for line in output.splitlines()
        if line.startswith("{")
    ), "the orphan's id is logged"

    # The way out the answer describes: track it once storage is back.
    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", stack.client.meta.endpoint_url)
    stack.sessions = import_function("sessions")
    event = load_event("sessions/track")
    event["path"] = f"/sessions/{session_id}"
    event["pathParameters"] = {"session_id": session_id}
    status, body, _ = stack.invoke(event)
    assert (status, body["session_id"], body["status"]) == (200, session_id, "WAITING")


# -- PUT /sessions/{session_id} ---------------------------------------------------------------------


def test_track_reads_klarna_and_records_it_idempotently(stack: Stack) -> None:
    stack.klarna.add_session(SID, status="IN_PROGRESS", updated_at="2026-11-21T10:14:00.123Z")
    status, body, _ = stack.invoke(load_event("sessions/track"))
    assert status == 200
    assert (body["session_id"], body["status"], body["updated_at"]) == (
        SID,
        "IN_PROGRESS",
        "2026-11-21T10:14:00.123Z",
    )
    assert SECRET_HASH not in body and POLL_SHARD not in body
    assert [(r.method, r.path) for r in stack.klarna.requests] == [("GET", f"{SESSIONS_PATH}/{SID}")]
    assert stack.dynamodb_calls == ["GetItem", "UpdateItem"]  # the URL on file, if tracked already
    row = stack.row()
    assert row is not None
    assert (row["status"], row["last_source"]) == ("IN_PROGRESS", "sessions_api")
    assert SECRET_HASH not in row

    before = stack.table_contents()
    status, again, _ = stack.invoke(load_event("sessions/track"))
    assert (status, again) == (200, body)
    assert stack.table_contents() == before


def test_track_of_a_completed_session_returns_the_token_to_the_caller_but_never_logs_it(
    stack: Stack, capfd: pytest.CaptureFixture[str]
) -> None:
    stack.klarna.add_session(SID, status="COMPLETED", authorization_token=TOKEN)
    capfd.readouterr()
    status, body, _ = stack.invoke(load_event("sessions/track"))
    status_read, read, _ = stack.invoke(load_event("sessions/read"))
    output = capfd.readouterr()
    assert (status, body["status"], body["authorization_token"]) == (200, "COMPLETED", TOKEN)
    assert (status_read, read) == (200, body)
    assert TOKEN not in output.out + output.err


def test_track_of_a_session_klarna_does_not_know_is_404_and_stores_nothing(stack: Stack) -> None:
    status, body, _ = stack.invoke(load_event("sessions/track_unknown_session"))
    assert (status, body["error"]["code"]) == (404, "klarna_not_found")
    assert body["error"]["klarna"]["http_status"] == 404
    assert stack.table_contents() == []


def test_track_retries_5xx_and_429_honouring_the_rate_limit_reset(stack: Stack) -> None:
    stack.klarna.add_session(SID, status="BACK")
    stack.klarna.fail_next("GET", SESSIONS_PATH, status=503)
    stack.klarna.fail_next("GET", SESSIONS_PATH, status=429, headers={"X-Ratelimit-Reset": "0.3"})
    status, body, _ = stack.invoke(load_event("sessions/track"))
    assert (status, body["status"]) == (200, "BACK")
    reads = stack.klarna.requests_to("GET", SESSIONS_PATH)
    assert [r.response_status for r in reads] == [503, 429, 200]
    assert reads[2].monotonic - reads[1].monotonic >= 0.3, "not retried before Klarna's reset"


def test_track_timeout_is_retried(stack: Stack) -> None:
    stack.klarna.add_session(SID, status="IN_PROGRESS")
    stack.klarna.fail_next("GET", SESSIONS_PATH, status=None, delay=KLARNA_TIMEOUT + 1.0)
    status, body, _ = stack.invoke(load_event("sessions/track"))
    assert (status, body["status"]) == (200, "IN_PROGRESS")
    assert len(stack.klarna.requests_to("GET", SESSIONS_PATH)) == 2


@pytest.mark.parametrize(
    ("fault", "status", "code", "attempts"),
    [
        ({"status": 503}, 502, "klarna_unavailable", RETRY_ATTEMPTS),
        ({"status": 429, "headers": {"X-Ratelimit-Reset": "0"}}, 503, "klarna_rate_limited", RETRY_ATTEMPTS),
        ({"status": 429, "headers": {"X-Ratelimit-Reset": "60"}}, 503, "klarna_rate_limited", 1),
        ({"status": None, "delay": KLARNA_TIMEOUT + 3.0}, 504, "klarna_timeout", None),
        ({"status": 401}, 502, "klarna_credentials_refused", 1),
        ({"status": 400}, 400, "klarna_rejected", 1),
        ({"status": 200, "body": b"{not json"}, 502, "klarna_bad_response", 1),
    ],
)
def test_klarna_failing_for_good_on_track_is_mapped_and_changes_nothing(
    stack: Stack, fault: dict[str, Any], status: int, code: str, attempts: int | None
) -> None:
    stack.repository.create_session(SID, expires_at=None, session_url=None, callback_secret_hash="h")
    stack.klarna.add_session(SID, status="IN_PROGRESS")
    before = stack.table_contents()
    stack.klarna.fail_always("GET", SESSIONS_PATH, **fault)
    got, body, _ = stack.invoke(load_event("sessions/track"))
    assert (got, body["error"]["code"]) == (status, code)
    reads = len(stack.klarna.requests_to("GET", SESSIONS_PATH))
    if attempts is None:  # timeouts: as many as the budget (4 s) allows, at least two
        assert 2 <= reads <= RETRY_ATTEMPTS
    else:
        assert reads == attempts
    assert stack.table_contents() == before
    stack.klarna.clear_faults()


# -- GET /sessions/{session_id} ---------------------------------------------------------------------


def test_read_returns_the_tracked_state_without_the_secret_hash_and_without_calling_klarna(
    stack: Stack,
) -> None:
    stack.repository.create_session(
        SID,
        expires_at=datetime(2026, 11, 23, 9, 0, tzinfo=UTC),
        session_url=f"https://api.playground.klarna.com{SESSIONS_PATH}/{SID}",
        callback_secret_hash=hash_callback_secret("the-secret"),
    )
    stack.reset_counts()
    status, body, _ = stack.invoke(load_event("sessions/read"))
    assert status == 200
    assert body["status"] == "WAITING"
    assert body["session_url"].endswith(SID)
    assert body["expires_at"] == "2026-11-23T09:00:00.000Z"
    assert not {SECRET_HASH, POLL_SHARD, POLL_DUE_AT, "updated_at_ms", "expires_ttl"} & set(body)
    assert hash_callback_secret("the-secret") not in json.dumps(body)
    assert stack.klarna.requests == []
    assert stack.dynamodb_calls == ["GetItem"]


@pytest.mark.parametrize(
    ("sample", "status", "code"),
    [("read_unknown_session", 404, "not_found"), ("read_invalid_session_id", 400, "bad_request")],
)
def test_read_of_an_unknown_or_invalid_session(stack: Stack, sample: str, status: int, code: str) -> None:
    got, body, _ = stack.invoke(load_event(f"sessions/{sample}"))
    assert (got, body["error"]["code"]) == (status, code)
    assert stack.klarna.requests == []


@pytest.mark.parametrize("sample", ["track", "read", "disable"])
@pytest.mark.parametrize("suffix", ["\n", "\r\n", "%0A"])
def test_a_session_id_with_a_trailing_newline_is_a_400_and_acts_on_nothing(
    stack: Stack, sample: str, suffix: str
) -> None:
    # The finding: the route's `$` matched before a final newline, so `DELETE /sessions/<id>%0A` (which
    # API Gateway decodes) disabled the session <id>.
    stack.klarna.add_session(SID, status="IN_PROGRESS")
    stack.invoke(load_event("sessions/track"))
    before = stack.table_contents()
    stack.reset_counts()
    event = load_event(f"sessions/{sample}")
    event["path"] = f"/sessions/{SID}{suffix}"
    event["pathParameters"] = {"session_id": f"{SID}{suffix}"}
    status, body, _ = stack.invoke(event)
    assert (status, body["error"]["code"]) == (400, "bad_request")
    assert "session_id" in body["error"]["message"]
    assert stack.klarna.requests == []
    assert stack.dynamodb_calls == []
    assert stack.table_contents() == before
    assert stack.klarna.read_body(SID)["status"] == "IN_PROGRESS"


# -- DELETE /sessions/{session_id} ------------------------------------------------------------------


def test_disable_records_klarnas_own_disabled(stack: Stack) -> None:
    stack.klarna.add_session(SID, status="IN_PROGRESS")
    stack.invoke(load_event("sessions/track"))
    stack.reset_counts()
    status, body, _ = stack.invoke(load_event("sessions/disable"))
    assert (status, body) == (204, None)
    assert stack.klarna.read_body(SID)["status"] == "DISABLED"
    assert [r.method for r in stack.klarna.requests] == ["DELETE", "GET"]
    assert stack.dynamodb_calls == ["GetItem", "UpdateItem"]
    row = stack.row()
    assert row is not None
    assert row["status"] == "DISABLED"
    assert row["updated_at"] == stack.klarna.read_body(SID)["updated_at"], "Klarna's time, not the tracker's"
    assert POLL_SHARD not in row, "final: out of the poller's index"


def klarna_ahead(stack: Stack, hours: int = 2) -> None:
    """Klarna's clock runs ahead of the tracker's: its updated_at values are 'in the future'."""
    stack.klarna.clock.offset = timedelta(hours=hours)


def test_disable_when_klarnas_clock_is_ahead_is_still_recorded(stack: Stack) -> None:
    klarna_ahead(stack)
    stack.klarna.add_session(SID, status="IN_PROGRESS")
    stack.invoke(load_event("sessions/track"))
    status, _, _ = stack.invoke(load_event("sessions/disable"))
    assert status == 204
    row = stack.row()
    assert row is not None
    assert (row["status"], row["updated_at"]) == ("DISABLED", stack.klarna.read_body(SID)["updated_at"])


@pytest.mark.parametrize("read_back", ["unavailable", "lagging"])
def test_disable_when_the_read_back_fails_or_lags_stamps_disabled_after_what_the_tracker_knows(
    stack: Stack, read_back: str
) -> None:
    klarna_ahead(stack)
    stack.klarna.add_session(SID, status="IN_PROGRESS")
    stack.invoke(load_event("sessions/track"))
    stored = stack.row()
    assert stored is not None
    if read_back == "unavailable":  # Klarna unreadable after the 204
        stack.klarna.fail_always("GET", SESSIONS_PATH, status=503)
    else:  # Klarna's read still shows the status from before the disable
        stack.klarna.fail_always("GET", SESSIONS_PATH, status=200, body=stack.klarna.read_body(SID))
    status, _, _ = stack.invoke(load_event("sessions/disable"))
    assert status == 204
    row = stack.row()
    assert row is not None
    assert row["status"] == "DISABLED"
    # The tracker's "now" is hours behind Klarna's last updated_at: DISABLED is stamped just after it.
    assert row["updated_at_ms"] == stored["updated_at_ms"] + 1
    assert row["updated_at_ms"] > to_epoch_millis(datetime.now(UTC))
    stack.klarna.clear_faults()


def test_disable_of_a_session_completed_at_klarna_is_409_and_records_the_completion(stack: Stack) -> None:
    stack.klarna.add_session(SID, status="IN_PROGRESS")
    stack.invoke(load_event("sessions/track"))
    stack.klarna.act(SID, "COMPLETED", authorization_token=TOKEN)
    status, body, _ = stack.invoke(load_event("sessions/disable"))
    assert (status, body["error"]["code"]) == (409, "conflict")
    assert "COMPLETED" in body["error"]["message"]
    assert body["error"]["klarna"]["http_status"] == 400
    assert body["error"]["klarna"]["correlation_id"]
    assert TOKEN not in json.dumps(body)
    row = stack.row()
    assert row is not None
    assert (row["status"], row["authorization_token"]) == ("COMPLETED", TOKEN)


def test_disable_of_a_session_completed_in_the_table_is_409_without_calling_klarna(stack: Stack) -> None:
    stack.klarna.add_session(SID, status="COMPLETED", authorization_token=TOKEN)
    stack.invoke(load_event("sessions/track"))
    stack.reset_counts()
    before = stack.table_contents()
    status, body, _ = stack.invoke(load_event("sessions/disable"))
    assert (status, body["error"]["code"]) == (409, "conflict")
    assert stack.klarna.requests == []
    assert stack.table_contents() == before


def test_disable_is_idempotent(stack: Stack) -> None:
    stack.klarna.add_session(SID, status="WAITING")
    assert stack.invoke(load_event("sessions/disable"))[0] == 204
    before = stack.table_contents()
    stack.reset_counts()
    assert stack.invoke(load_event("sessions/disable"))[0] == 204
    assert stack.klarna.requests == [], "already DISABLED in the table: Klarna not asked again"
    assert stack.table_contents() == before


def test_disable_of_a_session_klarna_does_not_know_is_404_and_stores_nothing(stack: Stack) -> None:
    status, body, _ = stack.invoke(load_event("sessions/disable_unknown_session"))
    assert (status, body["error"]["code"]) == (404, "klarna_not_found")
    assert stack.table_contents() == []


def test_disable_retries_a_5xx(stack: Stack) -> None:
    stack.klarna.add_session(SID, status="WAITING")
    stack.klarna.fail_next("DELETE", SESSIONS_PATH, status=502)
    status, _, _ = stack.invoke(load_event("sessions/disable"))
    assert status == 204
    assert [r.response_status for r in stack.klarna.requests_to("DELETE")] == [502, 204]


@pytest.mark.parametrize(
    ("fault", "status", "code"),
    [
        ({"status": 500}, 502, "klarna_unavailable"),
        ({"status": 429, "headers": {"X-Ratelimit-Reset": "30"}}, 503, "klarna_rate_limited"),
        ({"status": 401}, 502, "klarna_credentials_refused"),
        ({"status": None, "delay": KLARNA_TIMEOUT + 3.0}, 504, "klarna_timeout"),
    ],
)
def test_klarna_failing_for_good_on_disable_is_mapped_and_changes_nothing(
    stack: Stack, fault: dict[str, Any], status: int, code: str
) -> None:
    stack.klarna.add_session(SID, status="IN_PROGRESS")
    stack.invoke(load_event("sessions/track"))
    before = stack.table_contents()
    stack.klarna.fail_always("DELETE", SESSIONS_PATH, **fault)
    got, body, _ = stack.invoke(load_event("sessions/disable"))
    assert (got, body["error"]["code"]) == (status, code)
    assert stack.table_contents() == before
    stack.klarna.clear_faults()


def test_klarna_error_bodies_are_passed_on_without_request_data(stack: Stack) -> None:
    error = {
        "error_code": "BAD_VALUE",
        "error_messages": ["Bad value: options.purchase_type"],
        "correlation_id": "6f1d0c1e-8a5b-4c2d-9e3f-0a1b2c3d4e5f",
    }
    stack.klarna.fail_next("POST", SESSIONS_PATH, status=400, body=error)
    status, body, _ = stack.invoke(load_event("sessions/create"))
    assert status == 400
    assert body["error"]["klarna"] == {
        "http_status": 400,
        "error_code": "BAD_VALUE",
        "error_messages": ["Bad value: options.purchase_type"],
        "correlation_id": error["correlation_id"],
    }
    assert "secret=" not in json.dumps(body)


# -- the answers are what openapi.yaml promises -----------------------------------------------------


def test_every_answer_matches_openapi_yaml(stack: Stack) -> None:
    """Real answers of each route (successes and errors) against the schemas openapi.yaml documents."""
    one = "/sessions/{session_id}"
    answers: list[tuple[str, str, int, Any]] = []

    def call(event: dict[str, Any], method: str, path: str) -> None:
        status, body, _ = stack.invoke(event)
        answers.append((method, path, status, body))

    call(load_event("sessions/create"), "POST", "/sessions")
    call(load_event("sessions/create_wrong_types"), "POST", "/sessions")
    call(load_event("sessions/create_oversize"), "POST", "/sessions")
    stack.klarna.fail_next("POST", SESSIONS_PATH, status=429, headers={"X-Ratelimit-Reset": "1"})
    call(load_event("sessions/create"), "POST", "/sessions")
    stack.klarna.add_session(SID, status="COMPLETED", authorization_token=TOKEN)
    call(load_event("sessions/track"), "PUT", one)
    call(load_event("sessions/track_unknown_session"), "PUT", one)
    call(load_event("sessions/read"), "GET", one)
    call(load_event("sessions/read_unknown_session"), "GET", one)
    call(load_event("sessions/read_invalid_session_id"), "GET", one)
    call(load_event("sessions/disable"), "DELETE", one)
    call(load_event("sessions/disable_unknown_session"), "DELETE", one)

    statuses = [status for _, _, status, _ in answers]
    assert statuses == [201, 400, 413, 503, 200, 404, 200, 404, 400, 409, 404]
    for method, path, status, body in answers:
        assert response_errors(method, path, status, body) == [], (method, path, status, body)


# -- the URLs Klarna returned -----------------------------------------------------------------------


def created_through_the_api(stack: Stack) -> dict[str, Any]:
    """POST /sessions; Klarna's answer (its session_url under the test Klarna's moved path)."""
    status, body, _ = stack.invoke(load_event("sessions/create"))
    assert status == 201
    assert MOVED_SESSIONS_PATH in body["session_url"]
    stack.reset_counts()
    return dict(body)


def for_session(sample: str, session_id: str) -> dict[str, Any]:
    """A sample event of the sessions API, for another session."""
    event = load_event(f"sessions/{sample}")
    event["path"] = event["path"].replace(SID, session_id)
    event["pathParameters"] = {"session_id": session_id}
    return event


def test_put_and_delete_go_exactly_to_the_session_url_klarna_returned(stack: Stack) -> None:
    created = created_through_the_api(stack)
    session_id, moved = created["session_id"], urlsplit(created["session_url"]).path
    stack.klarna.act(session_id, "IN_PROGRESS", callback=False)
    assert stack.invoke(for_session("track", session_id))[0] == 200
    assert stack.invoke(for_session("disable", session_id))[0] == 204
    assert [(r.method, r.path) for r in stack.klarna.requests] == [
        ("GET", moved),
        ("DELETE", moved),
        ("GET", moved),
    ]
    row = stack.row(session_id)
    assert row is not None and row["status"] == "DISABLED"


def test_get_returns_the_consumer_links_its_create_returned_without_the_distribution_token(
    stack: Stack,
) -> None:
    created = created_through_the_api(stack)
    status, body, _ = stack.invoke(for_session("read", created["session_id"]))
    assert status == 200
    for link in KEPT_URLS:
        assert body[link] == created[link], link
    module = created["distribution_module"]
    assert body["distribution_module"] == {key: module[key] for key in ("standalone_url", "generation_url")}
    assert module["token"] not in json.dumps(stack.table_contents(), default=str), "never stored"
    assert response_errors("GET", "/sessions/{session_id}", status, body) == []


def test_a_returned_url_on_another_host_is_refused_and_nothing_is_sent_there(
    stack: Stack, capfd: pytest.CaptureFixture[str]
) -> None:
    with simulated_klarna() as elsewhere:
        foreign = f"{elsewhere.url}{MOVED_SESSIONS_PATH}/{SID}"
        answer = {"session_id": SID, "session_url": foreign, "distribution_url": f"{foreign}/distribution"}
        stack.klarna.fail_next("POST", SESSIONS_PATH, status=201, body=answer)  # Klarna says so
        assert stack.invoke(load_event("sessions/create"))[0] == 201
        stack.reset_counts()
        capfd.readouterr()
        answers = [
            stack.invoke(load_event("sessions/track")),
            stack.invoke(load_event("sessions/disable")),
            stack.invoke(with_json_body(load_event("sessions/distribute_email"), EMAIL_BODY)),
        ]
        output = capfd.readouterr().out
        assert [(status, body["error"]["code"]) for status, body, _ in answers] == [
            (502, "klarna_url_refused")
        ] * 3
        assert elsewhere.requests == [] and stack.klarna.requests == [], "no request, so no credentials"
        lines = log_lines(output)
        refused = [line for line in lines if line.get("error_code") == "klarna_url_refused"]
        assert len(refused) == 3 and {line["refused_origin"] for line in refused} == {origin(elsewhere.url)}
        assert sum(line.get("KlarnaUrlRefused", [0])[0] for line in output_metrics(output)) == 3
        row = stack.row()
        assert row is not None and row["status"] == "WAITING"


def output_metrics(output: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in output.splitlines() if line.startswith('{"_aws"')]


# -- POST /sessions/{session_id}/distribution ---------------------------------------------------------

EMAIL_ADDRESS = "anna.andersson@example.com"  # the address and number in events/sessions/distribute_*.json
PHONE = "+46701740633"
EMAIL_BODY = {"method": "email", "contact_information": {"email": EMAIL_ADDRESS}}


@pytest.mark.parametrize("klarna_status", [201, 204])
@pytest.mark.parametrize("sample", ["distribute_email", "distribute_sms"])
def test_distribution_reaches_klarna_at_the_distribution_url_with_the_merchants_body(
    stack: Stack,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    sample: str,
    klarna_status: int,
) -> None:
    monkeypatch.setattr(
        stack.klarna, "config", replace(stack.klarna.config, distribution_status=klarna_status)
    )
    created = created_through_the_api(stack)
    event = for_session(sample, created["session_id"])
    capfd.readouterr()
    status, body, _ = stack.invoke(event)
    output = capfd.readouterr()
    assert (status, body) == (204, None)
    (sent,) = stack.klarna.requests
    assert (sent.method, f"{stack.klarna.url}{sent.path}") == ("POST", created["distribution_url"])
    assert sent.json == json.loads(event["body"]), "Klarna gets the merchant's body as it came"
    assert sent.response_status == klarna_status
    assert stack.dynamodb_calls == ["GetItem"]
    for contact in (EMAIL_ADDRESS, PHONE):
        assert contact not in output.out + output.err, "contact data is never logged"
        assert contact not in json.dumps(stack.table_contents(), default=str), "nor stored"
    (logged,) = [line for line in log_lines(output.out) if line.get("message") == "payment link sent"]
    assert logged["method"] == sent.json["method"]


def test_distribution_for_a_final_session_is_409_without_calling_klarna(stack: Stack) -> None:
    stack.klarna.add_session(SID, status="COMPLETED", authorization_token=TOKEN)
    stack.invoke(load_event("sessions/track"))
    stack.reset_counts()
    status, body, _ = stack.invoke(load_event("sessions/distribute_email"))
    assert (status, body["error"]["code"]) == (409, "conflict")
    assert stack.klarna.requests == []


def test_distribution_for_a_session_the_merchant_disabled_at_klarna_is_409_and_records_it(
    stack: Stack,
) -> None:
    created = created_through_the_api(stack)
    session_id = created["session_id"]
    stack.klarna.act(session_id, "DISABLED", callback=False)  # disabled at Klarna, not through the tracker
    status, body, _ = stack.invoke(for_session("distribute_email", session_id))
    assert (status, body["error"]["code"]) == (409, "conflict")
    assert body["error"]["klarna"]["http_status"] == 400
    assert [r.method for r in stack.klarna.requests] == ["POST", "GET"]
    row = stack.row(session_id)
    assert row is not None and row["status"] == "DISABLED"
    assert response_errors("POST", "/sessions/{session_id}/distribution", status, body) == []


@pytest.mark.parametrize(
    ("fault", "status", "code"),
    [
        (
            {
                "status": 400,
                "body": {"error_code": "BAD_VALUE", "error_message": f"Bad value: {EMAIL_ADDRESS}"},
            },
            400,
            "klarna_rejected",
        ),
        ({"status": 404}, 404, "klarna_not_found"),
        ({"status": 503}, 502, "klarna_unavailable"),
        ({"status": 401}, 502, "klarna_credentials_refused"),
        ({"status": 429, "headers": {"X-Ratelimit-Reset": "2"}}, 503, "klarna_rate_limited"),
        ({"status": None, "delay": KLARNA_TIMEOUT + 2.0}, 504, "klarna_timeout"),
    ],
)
def test_klarnas_answers_to_distribution_are_mapped_like_every_route_and_never_echo_the_contact_data(
    stack: Stack, capfd: pytest.CaptureFixture[str], fault: dict[str, Any], status: int, code: str
) -> None:
    created = created_through_the_api(stack)
    stack.klarna.fail_next("POST", urlsplit(created["distribution_url"]).path, **fault)
    capfd.readouterr()
    got, body, _ = stack.invoke(for_session("distribute_email", created["session_id"]))
    output = capfd.readouterr()
    assert (got, body["error"]["code"]) == (status, code)
    assert len(stack.klarna.requests_to("POST")) == 1, "never retried: a retry could send a second e-mail"
    assert EMAIL_ADDRESS not in json.dumps(body) + output.out + output.err
    assert response_errors("POST", "/sessions/{session_id}/distribution", got, body) == []


@pytest.mark.parametrize(
    ("sample", "status", "code"),
    [("distribute_invalid_contact", 400, "bad_request"), ("distribute_unknown_session", 404, "not_found")],
)
def test_a_bad_or_untracked_distribution_is_refused_before_klarna_and_says_why(
    stack: Stack, capfd: pytest.CaptureFixture[str], sample: str, status: int, code: str
) -> None:
    stack.repository.create_session(SID, expires_at=None, session_url=None, callback_secret_hash="h")
    capfd.readouterr()
    got, body, _ = stack.invoke(load_event(f"sessions/{sample}"))
    output = capfd.readouterr().out
    assert (got, body["error"]["code"]) == (status, code)
    assert stack.klarna.requests == []
    assert any(line.get("http_status") == status for line in log_lines(output))
    for value in ("call me maybe", "Sweden", EMAIL_ADDRESS):
        assert value not in json.dumps(body) + output
    if sample == "distribute_invalid_contact":
        assert {"contact_information.phone", "contact_information.phone_country"} <= {
            line.split(":")[0] for line in body["error"]["details"]
        }


# -- POST /sessions with an Idempotency-Key -----------------------------------------------------------


def keyed(
    key: str = "order-4711-attempt-1", body: dict[str, Any] | None = None, caller: str | None = None
) -> dict[str, Any]:
    event = load_event("sessions/create_idempotent")
    for headers in (event["headers"], event["multiValueHeaders"]):
        headers["Idempotency-Key"] = key if headers is event["headers"] else [key]
    if body is not None:
        event["body"] = json.dumps(body)
    if caller is not None:
        event["requestContext"]["identity"]["userArn"] = caller
    return event


def idempotency_items(stack: Stack) -> list[dict[str, Any]]:
    items = stack.client.scan(TableName=stack.idempotency_table, ConsistentRead=True)["Items"]
    return [from_item(item) for item in items]


def test_the_same_key_and_body_answer_the_first_answer_and_create_one_klarna_session(stack: Stack) -> None:
    first = stack.invoke(keyed())
    second = stack.invoke(keyed())
    assert (first[0], second[0]) == (201, 201)
    assert second[1] == first[1], "the first answer, as it was"
    assert (first[2]["Idempotent-Replayed"], second[2]["Idempotent-Replayed"]) == ("false", "true")
    assert len(stack.klarna.requests_to("POST", SESSIONS_PATH)) == 1
    assert [row["session_id"] for row in stack.table_contents()] == [first[1]["session_id"]]
    (record,) = idempotency_items(stack)
    assert record["status"] == "COMPLETED"
    assert 23 * 3600 < int(record["expiration"]) - datetime.now(UTC).timestamp() <= 24 * 3600
    assert "order-4711-attempt-1" not in json.dumps(record, default=str), "keyed by a hash of it"
    assert response_errors("POST", "/sessions", second[0], second[1]) == []


def test_the_same_key_with_another_body_is_422_and_creates_nothing(stack: Stack) -> None:
    assert stack.invoke(keyed())[0] == 201
    other = json.loads(load_event("sessions/create_minimal")["body"])
    status, body, _ = stack.invoke(keyed(body=other))
    assert (status, body["error"]["code"]) == (422, "idempotency_key_reused")
    assert len(stack.klarna.requests_to("POST", SESSIONS_PATH)) == 1
    assert response_errors("POST", "/sessions", status, body) == []


def test_the_same_body_reordered_is_the_same_request(stack: Stack) -> None:
    first = stack.invoke(keyed())
    body = json.loads(load_event("sessions/create")["body"])
    reordered = dict(reversed(list(body.items())))
    assert stack.invoke(keyed(body=reordered))[1] == first[1]
    assert len(stack.klarna.requests_to("POST", SESSIONS_PATH)) == 1


def test_keys_are_per_caller(stack: Stack) -> None:
    mine = stack.invoke(keyed())[1]
    theirs = stack.invoke(keyed(caller="arn:aws:iam::123456789012:user/another-service"))[1]
    assert mine["session_id"] != theirs["session_id"]
    assert len(stack.klarna.requests_to("POST", SESSIONS_PATH)) == 2


@pytest.mark.parametrize(
    ("fault", "status"),
    [
        ({"status": 503}, 502),
        ({"status": 429, "headers": {"X-Ratelimit-Reset": "1"}}, 503),
        ({"status": 401}, 502),
    ],
)
def test_a_failure_that_may_pass_is_not_remembered_and_the_key_can_be_retried(
    stack: Stack, fault: dict[str, Any], status: int
) -> None:
    stack.klarna.fail_next("POST", SESSIONS_PATH, **fault)
    assert stack.invoke(keyed())[0] == status
    assert idempotency_items(stack) == [], "forgotten"
    retried = stack.invoke(keyed())
    assert (retried[0], retried[2]["Idempotent-Replayed"]) == (201, "false")
    assert len(stack.klarna.requests_to("POST", SESSIONS_PATH)) == 2


def test_klarnas_400_settles_the_request_and_is_remembered(stack: Stack) -> None:
    stack.klarna.fail_next(
        "POST", SESSIONS_PATH, status=400, body={"error_code": "BAD_VALUE", "correlation_id": "c-1"}
    )
    first = stack.invoke(keyed())
    second = stack.invoke(keyed())
    assert (first[0], first[1]["error"]["code"]) == (400, "klarna_rejected")
    assert (second[0], second[1], second[2]["Idempotent-Replayed"]) == (400, first[1], "true")
    assert len(stack.klarna.requests_to("POST", SESSIONS_PATH)) == 1
    assert stack.table_contents() == []


@pytest.mark.parametrize("key", ["", "x" * 256, "tab\there", "order-4711-éé"])
def test_a_bad_key_is_400_and_touches_nothing(stack: Stack, key: str) -> None:
    status, body, _ = stack.invoke(keyed(key))
    assert (status, body["error"]["code"]) == (400, "bad_request")
    assert "Idempotency-Key" in body["error"]["message"]
    assert stack.klarna.requests == [] and idempotency_items(stack) == []
    assert stack.invoke(load_event("sessions/create_bad_idempotency_key"))[0] == 400


def test_a_create_without_a_key_never_touches_the_idempotency_table(stack: Stack) -> None:
    assert stack.invoke(load_event("sessions/create"))[0] == 201
    assert stack.dynamodb_calls == ["PutItem"]
    assert idempotency_items(stack) == []
