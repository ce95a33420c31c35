"""The sessions API's decisions with the shared in-memory store and the Klarna simulator served in
memory (no I/O): the tracker's own KlarnaClient talks to the same Klarna as the integration tests."""

import base64
import json
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest

from hpp_core.callback_secrets import hash_callback_secret
from hpp_core.errors import (
    BadRequest,
    Conflict,
    Misconfigured,
    NotFound,
    PayloadTooLarge,
    SessionNotTracked,
    StorageUnavailable,
)
from hpp_core.http import error_response
from hpp_core.klarna import KlarnaClient, KlarnaUnavailable, RetryPolicy
from hpp_core.models import KlarnaSession, StatusUpdate, WriteOutcome
from hpp_core.request_body import MAX_BODY_BYTES
from hpp_core.sessions import (
    SessionsSettings,
    callback_url,
    create_session,
    disable_session,
    idempotency_key,
    parse_create_request,
    session_view,
    track_session,
    tracked_session,
)
from hpp_core.settings import ConfigurationError
from local.klarna_simulator import KlarnaSimulator
from tests.support.klarna import KEPT_URLS, MOVED_SESSIONS_PATH, simulated_klarna
from tests.support.memory_store import MemorySessionStore

SID = "39a1c773-bafd-754d-af1f-b30c592f1267"
KP = "https://api.playground.klarna.com/payments/v1/sessions/0b1d9815-165e-42e2-8867-35bc03789e00"
CALLBACK = "https://abc.execute-api.eu-west-1.amazonaws.com/prod/callbacks/hpp"
NOW = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)


def request_body(**fields: Any) -> str:
    return json.dumps({"payment_session_url": KP, **fields})


def details_of(error: BadRequest) -> str:
    return " | ".join([error.message, *error.details])


# -- parsing the create request ---------------------------------------------------------------------


def test_a_minimal_request_becomes_klarnas_body_with_the_status_update_url() -> None:
    request = parse_create_request(request_body())
    assert request.klarna_body("https://t/cb") == {
        "payment_session_url": KP,
        "merchant_urls": {"status_update": "https://t/cb"},
    }


def test_the_callers_fields_pass_through_unchanged_known_or_not() -> None:
    sent = {
        "payment_session_url": KP,
        "merchant_urls": {"success": "https://s.example/ok?sid={{session_id}}", "future": "x"},
        "options": {"place_order_mode": "PLACE_ORDER", "payment_method_categories": ["KLARNA"], "new": 1},
        "profile_id": "p-1",
        "merchant_reference": {"nested": [1, 2.5, None]},
    }
    body = parse_create_request(json.dumps(sent)).klarna_body("https://t/cb")
    assert body["merchant_urls"].pop("status_update") == "https://t/cb"
    assert body == sent


@pytest.mark.parametrize("value", ["https://shop.example/klarna", None, 42])
def test_a_status_update_of_any_value_is_refused_naming_the_field(value: object) -> None:
    with pytest.raises(BadRequest) as raised:
        parse_create_request(
            request_body(merchant_urls={"success": "https://s.example", "status_update": value})
        )
    (detail,) = raised.value.details
    assert detail.startswith("merchant_urls.status_update:")
    assert "must be left out" in detail


@pytest.mark.parametrize(
    ("fields", "field_name"),
    [
        ({"payment_session_url": None}, "payment_session_url"),
        ({"payment_session_url": 12}, "payment_session_url"),
        ({"payment_session_url": "api.klarna.com/payments/v1/sessions/1"}, "payment_session_url"),
        ({"payment_session_url": "http://api.klarna.com/payments/v1/sessions/1"}, "payment_session_url"),
        ({"payment_session_url": "https://" + "a" * 2050}, "payment_session_url"),
        ({"merchant_urls": "https://s.example"}, "merchant_urls"),
        ({"merchant_urls": {"success": ["https://s.example"]}}, "merchant_urls.success"),
        ({"merchant_urls": {"cancel": "javascript:alert(1)"}}, "merchant_urls.cancel"),
        ({"options": []}, "options"),
        ({"options": {"place_order_mode": "SOMETIMES"}}, "options.place_order_mode"),
        ({"profile_id": 7}, "profile_id"),
        ({"profile_id": ""}, "profile_id"),
    ],
)
def test_wrong_types_and_values_are_refused_naming_the_field(fields: dict[str, Any], field_name: str) -> None:
    with pytest.raises(BadRequest) as raised:
        parse_create_request(json.dumps({"payment_session_url": KP, **fields}))
    assert any(detail.startswith(f"{field_name}:") for detail in raised.value.details), raised.value.details


def test_a_missing_payment_session_url_is_named() -> None:
    with pytest.raises(BadRequest) as raised:
        parse_create_request(json.dumps({"options": {}}))
    assert raised.value.details == ["payment_session_url: Field required"]


def test_messages_never_echo_the_input() -> None:
    with pytest.raises(BadRequest) as raised:
        parse_create_request(json.dumps({"payment_session_url": "ftp://SECRET-IN-INPUT", "profile_id": 1}))
    assert "SECRET-IN-INPUT" not in details_of(raised.value)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (None, "required"),
        ("", "required"),
        ("   ", "required"),
        ("payment_session_url=x", "not valid JSON"),
        ("[1, 2]", "JSON object"),
        ('"text"', "JSON object"),
    ],
)
def test_unusable_bodies_are_400(body: str | None, message: str) -> None:
    with pytest.raises(BadRequest) as raised:
        parse_create_request(body)
    assert message in raised.value.message


def test_the_size_limit_is_checked_before_parsing() -> None:
    padding = "x" * (MAX_BODY_BYTES - len(request_body(pad="")))
    at_limit = request_body(pad=padding)
    assert len(at_limit.encode()) == MAX_BODY_BYTES
    assert parse_create_request(at_limit).model_extra == {"pad": padding}
    with pytest.raises(PayloadTooLarge):
        parse_create_request(request_body(pad=padding + "x"))
    with pytest.raises(PayloadTooLarge):  # not even JSON: refused for its size alone
        parse_create_request("{" * (MAX_BODY_BYTES + 1))
    multibyte = request_body(pad="é" * (MAX_BODY_BYTES // 2))  # fewer characters than bytes
    with pytest.raises(PayloadTooLarge):
        parse_create_request(multibyte)


def test_a_base64_body_is_decoded_and_its_decoded_size_counts() -> None:
    encoded = base64.b64encode(request_body(profile_id="p").encode()).decode()
    assert parse_create_request(encoded, base64_encoded=True).profile_id == "p"
    with pytest.raises(BadRequest):
        parse_create_request("not base64!", base64_encoded=True)
    big = base64.b64encode(request_body(pad="x" * MAX_BODY_BYTES).encode()).decode()
    with pytest.raises(PayloadTooLarge):
        parse_create_request(big, base64_encoded=True)


# -- where callbacks go -----------------------------------------------------------------------------


def test_the_callback_url_is_derived_from_the_execute_api_domain_and_stage() -> None:
    url = callback_url(
        None, domain_name="abc.execute-api.eu-west-1.amazonaws.com", stage="prod", api_id="abc"
    )
    assert url == CALLBACK


@pytest.mark.parametrize(
    ("domain", "stage", "api_id"),
    [("pay.example.com", "prod", "abc"), (None, "prod", "abc"), ("abc.execute-api.x", None, "abc")],
)
def test_without_configuration_an_unknown_domain_is_a_configuration_error(
    domain: str | None, stage: str | None, api_id: str
) -> None:
    with pytest.raises(Misconfigured) as raised:
        callback_url(None, domain_name=domain, stage=stage, api_id=api_id)
    assert "CALLBACK_BASE_URL" in raised.value.message
    assert error_response(raised.value)[0] == 500


def settings(**env: str) -> SessionsSettings:
    base = {
        "TABLE_NAME": "sessions",
        "KLARNA_API_URL": "https://api.playground.klarna.com",
        "KLARNA_CREDENTIALS_SECRET_ARN": "arn:aws:secretsmanager:eu-west-1:123456789012:secret:k",
        "IDEMPOTENCY_TABLE_NAME": "idempotency",
    }
    return SessionsSettings.from_environment({**base, **env})


def test_callback_base_url_configures_custom_domains() -> None:
    configured = settings(CALLBACK_BASE_URL="https://pay.example.com/hpp/")
    assert configured.callback_base == "https://pay.example.com/hpp"
    url = callback_url(configured.callback_base, domain_name="pay.example.com", stage="prod", api_id="abc")
    assert url == "https://pay.example.com/hpp/callbacks/hpp"
    assert settings(CALLBACK_BASE_URL="").callback_base is None  # CloudFormation's "not set"


@pytest.mark.parametrize(
    "value",
    ["https://pay.example.com/hpp?x=1", "not a url", "ftp://pay.example.com", "http://pay.example.com/hpp"],
)
def test_a_bad_callback_base_url_fails_at_start_up_naming_the_variable(value: str) -> None:
    with pytest.raises(ConfigurationError) as raised:
        settings(CALLBACK_BASE_URL=value)
    assert "CALLBACK_BASE_URL" in str(raised.value)


def test_an_http_callback_base_url_needs_the_explicit_local_setting() -> None:
    # Klarna calls back over HTTPS only; the local stack's gateway is plain http on 127.0.0.1 and says so.
    with pytest.raises(ConfigurationError, match="https"):
        settings(CALLBACK_BASE_URL="http://127.0.0.1:3000/prod")
    with pytest.raises(ConfigurationError, match="https"):
        settings(CALLBACK_BASE_URL="http://127.0.0.1:3000/prod", ALLOW_HTTP_CALLBACK_BASE_URL="false")
    local = settings(CALLBACK_BASE_URL="http://127.0.0.1:3000/prod", ALLOW_HTTP_CALLBACK_BASE_URL="true")
    assert local.callback_base == "http://127.0.0.1:3000/prod"


def test_the_sessions_function_needs_its_idempotency_table() -> None:
    with pytest.raises(ConfigurationError, match="IDEMPOTENCY_TABLE_NAME"):
        settings(IDEMPOTENCY_TABLE_NAME="")


def test_retry_settings_make_the_policy() -> None:
    policy = settings(KLARNA_RETRY_ATTEMPTS="5", KLARNA_RETRY_BUDGET_SECONDS="3.5").retry_policy()
    assert (policy.max_attempts, policy.budget_seconds) == (5, 3.5)
    with pytest.raises(ConfigurationError, match="KLARNA_RETRY_ATTEMPTS"):
        settings(KLARNA_RETRY_ATTEMPTS="0")


# -- Klarna and the store -----------------------------------------------------------------------------


@pytest.fixture
def simulator() -> KlarnaSimulator:
    """Klarna with its clock standing at NOW."""
    return simulated_klarna(clock=lambda: NOW)


def klarna_calls(simulator: KlarnaSimulator) -> list[str]:
    return [request.method for request in simulator.requests]


def created_id(simulator: KlarnaSimulator) -> str:
    (session_id,) = simulator.session_ids()
    return session_id


def first_created_id() -> str:
    """The id a fresh test simulator gives the first session created on it (the same seed gives the
    same ids), for a store that must hold that session before the tracker stores it."""
    return simulated_klarna().add_session()["session_id"]


def session(status: str, updated_at: str = "2026-11-21T10:00:00.000Z", **fields: Any) -> KlarnaSession:
    return KlarnaSession.model_validate(
        {"session_id": SID, "status": status, "updated_at": updated_at, **fields}
    )


def observed(status: str, updated_at: str, source: Any = "callback", session_id: str = SID) -> StatusUpdate:
    return StatusUpdate(session=session(status, updated_at, session_id=session_id), source=source)


def store_with(
    status: str, updated_at: str = "2026-11-21T10:00:00.000Z", session_id: str = SID
) -> MemorySessionStore:
    """A store in which `session_id`'s last recorded status is `status`."""
    store = MemorySessionStore(clock=lambda: NOW)
    store.record_status(observed(status, updated_at, session_id=session_id))
    return store


def status_of(store: MemorySessionStore) -> str | None:
    stored = store.get_session(SID)
    return None if stored is None else stored.status


# -- create -------------------------------------------------------------------------------------------


def test_create_sends_a_fresh_secret_each_time_and_stores_only_its_hash(
    simulator: KlarnaSimulator, klarna: KlarnaClient
) -> None:
    request = parse_create_request(request_body())
    store = MemorySessionStore()
    stored = []
    for _ in range(2):
        result = create_session(request, callback_url=CALLBACK, klarna=klarna, store=store)
        assert not result.already_tracked
        stored.append(store.get_session(result.session_id))
    urls = [sent.json["merchant_urls"]["status_update"] for sent in simulator.requests_to("POST")]
    secrets = [dict(parse_qsl(urlsplit(url).query))["secret"] for url in urls]
    assert secrets[0] != secrets[1]
    assert [row.callback_secret_hash for row in stored if row] == [hash_callback_secret(s) for s in secrets]
    assert [(row.status, row.expires_at) for row in stored if row] == [
        ("WAITING", datetime(2026, 11, 23, 9, 0, tzinfo=UTC))
    ] * 2
    assert all(secret not in str(vars(row)) for secret in secrets for row in stored)


def test_when_klarna_fails_nothing_is_stored(simulator: KlarnaSimulator, klarna: KlarnaClient) -> None:
    simulator.fail_next("POST", None, status=500)
    store = MemorySessionStore()
    with pytest.raises(KlarnaUnavailable):
        create_session(
            parse_create_request(request_body()), callback_url=CALLBACK, klarna=klarna, store=store
        )
    assert store.session_ids() == []


def test_klarna_404_on_create_blames_the_payment_session_url_and_keeps_klarnas_details(
    simulator: KlarnaSimulator, klarna: KlarnaClient
) -> None:
    simulator.fail_next("POST", None, status=404, body={"correlation_id": "c-404"})
    store = MemorySessionStore()
    with pytest.raises(BadRequest) as raised:
        create_session(
            parse_create_request(request_body()), callback_url=CALLBACK, klarna=klarna, store=store
        )
    status, body, _ = error_response(raised.value)
    assert status == 400
    assert body["error"]["message"].startswith("payment_session_url:")
    assert body["error"]["klarna"] == {"http_status": 404, "correlation_id": "c-404"}


@pytest.mark.parametrize(
    "failure", [StorageUnavailable("session storage failed (Throttling)"), RuntimeError()]
)
def test_a_store_failure_after_klarna_created_the_session_names_the_session(
    failure: Exception, simulator: KlarnaSimulator, klarna: KlarnaClient
) -> None:
    store = MemorySessionStore()
    store.fail_next("create_session", failure)
    with pytest.raises(SessionNotTracked) as raised:
        create_session(
            parse_create_request(request_body()), callback_url=CALLBACK, klarna=klarna, store=store
        )
    status, body, _ = error_response(raised.value)
    assert status == 503
    assert body["error"]["session_id"] == created_id(simulator)
    assert body["error"]["session_url"] == simulator.session_url(created_id(simulator))
    assert raised.value.__cause__ is failure


def test_a_session_already_tracked_when_stored_is_still_a_success(
    simulator: KlarnaSimulator, klarna: KlarnaClient
) -> None:
    # Its first callback, confirmed by Klarna, was stored first.
    store = store_with("IN_PROGRESS", session_id=first_created_id())
    result = create_session(
        parse_create_request(request_body()), callback_url=CALLBACK, klarna=klarna, store=store
    )
    assert result.already_tracked
    assert result.created.body["session_id"] == created_id(simulator) == first_created_id()
    stored = store.get_session(created_id(simulator))
    assert stored is not None
    assert stored.status == "IN_PROGRESS"


# -- track and read -----------------------------------------------------------------------------------


def test_track_records_klarnas_answer_as_the_sessions_api(
    simulator: KlarnaSimulator, klarna: KlarnaClient
) -> None:
    simulator.add_session(SID, status="IN_PROGRESS")
    store = MemorySessionStore()
    result = track_session(SID, klarna=klarna, store=store)
    (write,) = store.writes
    assert (write.update.source, write.update.status) == ("sessions_api", "IN_PROGRESS")
    assert (result.outcome, result.session.status) == (WriteOutcome.APPLIED, "IN_PROGRESS")


def test_track_retries_klarnas_hiccup_as_its_retry_policy_says(
    simulator: KlarnaSimulator, klarna: KlarnaClient
) -> None:
    simulator.add_session(SID, status="IN_PROGRESS")
    simulator.fail_next("GET", None, status=503)
    waits: list[float] = []
    retry = RetryPolicy(max_attempts=2, sleep=waits.append, jitter=lambda: 0.5)
    result = track_session(SID, klarna=klarna, store=MemorySessionStore(), retry=retry)
    assert result.session is not None
    assert result.session.status == "IN_PROGRESS"
    assert klarna_calls(simulator) == ["GET", "GET"]
    assert waits == [0.05]  # half of the first backoff step (0.1 s)


@pytest.mark.parametrize("bad", ["a/b", "a.b", "", "x" * 129, "../../x", "id with space"])
def test_invalid_session_ids_are_refused_before_anything_is_asked(
    bad: str, simulator: KlarnaSimulator, klarna: KlarnaClient
) -> None:
    store = MemorySessionStore()
    for operation in (
        lambda: track_session(bad, klarna=klarna, store=store),
        lambda: tracked_session(bad, store=store),
        lambda: disable_session(bad, klarna=klarna, store=store),
    ):
        with pytest.raises(BadRequest):
            operation()
    assert simulator.requests == []
    assert store.writes == []


def test_read_of_an_untracked_session_is_404() -> None:
    with pytest.raises(NotFound):
        tracked_session(SID, store=MemorySessionStore())


def test_the_view_reveals_the_token_to_the_caller_but_never_the_hash() -> None:
    store = MemorySessionStore(clock=lambda: NOW)
    secret_hash = hash_callback_secret("the-secret")
    store.create_session(SID, expires_at=None, session_url=None, callback_secret_hash=secret_hash)
    completed = session("COMPLETED", authorization_token="tok-1")
    store.record_status(StatusUpdate(session=completed, source="callback", event_id="e-1"))
    view = session_view(tracked_session(SID, store=store))
    assert view == {
        "session_id": SID,
        "status": "COMPLETED",
        "updated_at": "2026-11-21T10:00:00.000Z",
        "authorization_token": "tok-1",
        "last_event_id": "e-1",
        "last_source": "callback",
        "recorded_at": "2026-11-21T10:00:00.000Z",
    }
    assert secret_hash not in json.dumps(view)
    assert "tok-1" not in repr(tracked_session(SID, store=store))
    assert secret_hash not in repr(tracked_session(SID, store=store))


# -- disable ------------------------------------------------------------------------------------------


def test_disable_records_klarnas_own_disabled_when_the_read_back_shows_it(
    simulator: KlarnaSimulator, klarna: KlarnaClient
) -> None:
    simulator.add_session(SID, status="IN_PROGRESS", updated_at="2026-11-21T09:00:00.000Z")
    store = MemorySessionStore()
    result = disable_session(SID, klarna=klarna, store=store, now=lambda: NOW)
    assert (result.outcome, result.recorded_from) == ("disabled", "klarna_read")
    assert klarna_calls(simulator) == ["DELETE", "GET"]
    disabled = KlarnaSession.model_validate(simulator.read_body(SID))
    assert (disabled.status, disabled.updated_at) == ("DISABLED", NOW)
    assert store.writes[0].update.session == disabled
    assert status_of(store) == "DISABLED"


def test_a_newer_observation_recorded_meanwhile_makes_the_stamp_move_after_it(
    simulator: KlarnaSimulator, klarna: KlarnaClient
) -> None:
    store = store_with("IN_PROGRESS", "1970-01-01T00:00:01.000Z")
    raced = observed("BACK", "2286-11-20T17:46:39.999Z")  # 9_999_999_999_999 ms
    store.before_next_writes(raced)
    simulator.add_session(SID, status="IN_PROGRESS")
    simulator.fail_always("GET", None, status=503)  # the read-back fails
    result = disable_session(SID, klarna=klarna, store=store, now=lambda: NOW)
    assert result.recorded_from == "tracker_clock"
    assert result.read_back_error is not None
    first, second = store.writes[1:]
    assert first.update.updated_at_ms == max(1_001, int(NOW.timestamp() * 1000))
    assert first.outcome is WriteOutcome.STALE
    assert (second.update.updated_at_ms, second.outcome) == (raced.updated_at_ms + 1, WriteOutcome.APPLIED)
    assert all(write.update.status == "DISABLED" for write in store.writes[1:])
    assert status_of(store) == "DISABLED"


def test_a_session_that_keeps_changing_is_a_retryable_error_not_a_false_success(
    simulator: KlarnaSimulator, klarna: KlarnaClient
) -> None:
    store = store_with("IN_PROGRESS")
    # Each lands just before one of the tracker's DISABLED writes, and is newer than it.
    store.before_next_writes(
        observed("BACK", "2026-11-21T11:00:00.000Z"),
        observed("FAILED", "2026-11-21T12:00:00.000Z"),
        observed("BACK", "2026-11-21T13:00:00.000Z"),
    )
    simulator.add_session(SID, status="IN_PROGRESS")
    simulator.fail_always("GET", None, status=503)  # the read-back fails
    with pytest.raises(StorageUnavailable):
        disable_session(SID, klarna=klarna, store=store, now=lambda: NOW)
    assert [write.outcome for write in store.writes[1:]] == [WriteOutcome.STALE] * 3
    assert status_of(store) == "BACK"


@pytest.mark.parametrize("final", ["COMPLETED", "CANCELLED", "EXPIRED"])
def test_a_session_final_in_the_table_is_409_without_asking_klarna(
    final: str, simulator: KlarnaSimulator, klarna: KlarnaClient
) -> None:
    store = store_with(final)
    with pytest.raises(Conflict, match=final):
        disable_session(SID, klarna=klarna, store=store)
    assert simulator.requests == []
    assert status_of(store) == final


def test_klarnas_400_with_an_unreadable_session_is_still_409(
    simulator: KlarnaSimulator, klarna: KlarnaClient
) -> None:
    simulator.add_session(SID, status="IN_PROGRESS")
    simulator.fail_next("DELETE", None, status=400, body={"correlation_id": "c-1"})
    simulator.fail_always("GET", None, status=503)
    store = MemorySessionStore()
    with pytest.raises(Conflict) as raised:
        disable_session(SID, klarna=klarna, store=store)
    assert store.writes == []
    assert error_response(raised.value)[1]["error"]["klarna"]["correlation_id"] == "c-1"


def test_klarnas_400_for_a_session_already_disabled_there_is_a_success(
    simulator: KlarnaSimulator, klarna: KlarnaClient
) -> None:
    simulator.add_session(SID, status="DISABLED")
    simulator.fail_next("DELETE", None, status=400)  # where Klarna's own answer would be a 204
    store = MemorySessionStore()
    result = disable_session(SID, klarna=klarna, store=store)
    assert (result.outcome, result.recorded_from) == ("already_disabled", "klarna_read")
    assert [write.update.status for write in store.writes] == ["DISABLED"]


# -- the URLs and links a create returned -------------------------------------------------------------


def created_session(klarna: KlarnaClient, store: MemorySessionStore) -> str:
    result = create_session(
        parse_create_request(request_body()), callback_url=CALLBACK, klarna=klarna, store=store
    )
    return result.session_id


def test_create_keeps_the_consumer_links_and_get_returns_them_but_not_the_distribution_token(
    simulator: KlarnaSimulator, klarna: KlarnaClient
) -> None:
    store = MemorySessionStore(clock=lambda: NOW)
    result = create_session(
        parse_create_request(request_body()), callback_url=CALLBACK, klarna=klarna, store=store
    )
    answer = result.created.body
    view = session_view(tracked_session(result.session_id, store=store))
    for link in KEPT_URLS:
        assert view[link] == answer[link], link
    token = answer["distribution_module"]["token"]
    assert view["distribution_module"] == {
        "standalone_url": answer["distribution_module"]["standalone_url"],
        "generation_url": answer["distribution_module"]["generation_url"],
    }
    assert token not in json.dumps(view) and token not in repr(store.get_session(result.session_id))
    assert token in json.dumps(answer), "the caller got it in the create answer"


def test_links_in_an_unexpected_shape_are_dropped_not_a_failed_create(
    simulator: KlarnaSimulator, klarna: KlarnaClient
) -> None:
    odd = {
        "session_id": SID,
        "session_url": f"{simulator.url}/hpp/v1/sessions/{SID}",
        "redirect_url": ["not", "a", "url"],
        "qr_code_url": "x" * 5000,
        "distribution_module": "token-only",
        "expires_at": "2026-11-23T09:00:00.000Z",
    }
    simulator.fail_next("POST", None, status=201, body=odd)
    store = MemorySessionStore()
    result = create_session(
        parse_create_request(request_body()), callback_url=CALLBACK, klarna=klarna, store=store
    )
    stored = store.get_session(result.session_id)
    assert stored is not None and stored.session_url == odd["session_url"]
    assert (stored.redirect_url, stored.qr_code_url, stored.distribution_module) == (None, None, None)
    assert result.created.body == odd, "the caller still gets Klarna's answer as Klarna sent it"


def test_track_and_disable_of_a_tracked_session_go_to_its_session_url(
    simulator: KlarnaSimulator, klarna: KlarnaClient
) -> None:
    store = MemorySessionStore(clock=lambda: NOW)
    session_id = created_session(klarna, store)
    session_url = simulator.session_url(session_id)
    assert MOVED_SESSIONS_PATH in session_url
    simulator.act(session_id, "IN_PROGRESS", callback=False)
    assert track_session(session_id, klarna=klarna, store=store).session.status == "IN_PROGRESS"
    assert disable_session(session_id, klarna=klarna, store=store).recorded_from == "klarna_read"
    moved = f"{MOVED_SESSIONS_PATH}/{session_id}"
    assert [(r.method, r.path) for r in simulator.requests[1:]] == [
        ("GET", moved),
        ("DELETE", moved),
        ("GET", moved),
    ]
    assert status_of_session(store, session_id) == "DISABLED"


def status_of_session(store: MemorySessionStore, session_id: str) -> str | None:
    stored = store.get_session(session_id)
    return None if stored is None else stored.status


# -- the idempotency key ------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["a", "order-4711/attempt 1", "~" * 255, "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}"])
def test_an_idempotency_key_is_1_to_255_printable_characters(key: str) -> None:
    assert idempotency_key([key]) == key


@pytest.mark.parametrize(
    "values", [[""], ["x" * 256], ["tab\there"], ["line\nbreak"], ["é"], ["\x00"], ["a", "b"]]
)
def test_any_other_idempotency_key_is_a_400_never_echoing_it(values: list[str]) -> None:
    with pytest.raises(BadRequest, match="Idempotency-Key") as raised:
        idempotency_key(values)
    assert all(value not in raised.value.message for value in values if len(value) > 1)


def test_no_idempotency_key_is_none() -> None:
    assert idempotency_key([]) is None
