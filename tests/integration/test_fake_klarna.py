"""The Klarna HPP fake, exercised over real HTTP so other integration tests can trust it."""

import json
import re
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import urllib3

from tests.support.fake_klarna import SESSIONS_PATH, FakeKlarna, ratelimit_headers

KLARNA_TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
KP_SESSION_URL = "https://api.playground.klarna.com/payments/v1/sessions/92d97f60-7a78-46a5-8f68-c56fe52dc4af"


@pytest.fixture
def klarna() -> Iterator[FakeKlarna]:
    with FakeKlarna(username="PK1_test", password="s3cret") as fake:
        yield fake


@pytest.fixture
def http() -> Iterator[urllib3.PoolManager]:
    # No retries: each test must see exactly what the fake answered.
    pool = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(connect=2.0, read=5.0))
    yield pool
    pool.clear()


def call(
    http: urllib3.PoolManager,
    klarna: FakeKlarna,
    method: str,
    path: str,
    body: object = None,
    *,
    auth: bool = True,
    timeout: float | None = None,
) -> urllib3.BaseHTTPResponse:
    headers = klarna.auth_header() if auth else {}
    url = path if path.startswith("http") else klarna.base_url + path
    kwargs: dict[str, Any] = {"headers": headers}
    if body is not None:
        kwargs["json"] = body
    if timeout is not None:
        kwargs["timeout"] = timeout
    return http.request(method, url, **kwargs)


def create(http: urllib3.PoolManager, klarna: FakeKlarna, **extra: object) -> dict[str, Any]:
    response = call(http, klarna, "POST", SESSIONS_PATH, {"payment_session_url": KP_SESSION_URL, **extra})
    assert response.status == 201, response.data
    created: dict[str, Any] = response.json()
    return created


def assert_klarna_error(response: urllib3.BaseHTTPResponse, status: int, error_code: str) -> None:
    assert response.status == status
    body = response.json()
    assert body["error_code"] == error_code
    assert isinstance(body["error_messages"], list)
    assert body["error_messages"]
    assert re.fullmatch(r"[0-9a-f-]{36}", body["correlation_id"])


def test_credentials_are_required(klarna: FakeKlarna, http: urllib3.PoolManager) -> None:
    session_id = klarna.add_session()["session_id"]
    path = f"{SESSIONS_PATH}/{session_id}"

    assert_klarna_error(call(http, klarna, "GET", path, auth=False), 401, "UNAUTHORIZED")
    wrong = urllib3.make_headers(basic_auth="PK1_test:wrong")
    assert_klarna_error(http.request("GET", klarna.base_url + path, headers=wrong), 401, "UNAUTHORIZED")
    garbage = {"Authorization": "Basic !!!not-base64"}
    assert_klarna_error(http.request("GET", klarna.base_url + path, headers=garbage), 401, "UNAUTHORIZED")
    body = {"payment_session_url": KP_SESSION_URL}
    assert_klarna_error(call(http, klarna, "POST", SESSIONS_PATH, body, auth=False), 401, "UNAUTHORIZED")
    assert len(klarna.sessions) == 1  # the unauthorised create made nothing

    assert call(http, klarna, "GET", path).status == 200


def test_create_read_disable_cycle(klarna: FakeKlarna, http: urllib3.PoolManager) -> None:
    merchant_urls = {
        "success": "https://shop.example/ok?sid={{session_id}}&token={{authorization_token}}",
        "status_update": "https://hooks.example/klarna?hppSessionId={{session_id}}&secretToken=abc",
    }
    created = create(http, klarna, merchant_urls=merchant_urls, options={"place_order_mode": "NONE"})

    session_id = created["session_id"]
    assert created["session_url"] == f"{klarna.base_url}{SESSIONS_PATH}/{session_id}"
    for key in ("redirect_url", "qr_code_url", "distribution_url", "distribution_module"):
        assert created[key]
    assert KLARNA_TIMESTAMP.match(created["expires_at"])
    stored = klarna.sessions[session_id]
    assert stored["merchant_urls"] == merchant_urls
    assert stored["options"] == {"place_order_mode": "NONE"}
    assert stored["payment_session_url"] == KP_SESSION_URL
    lifetime = datetime.fromisoformat(created["expires_at"]) - datetime.now(UTC)
    assert timedelta(hours=46, minutes=59) < lifetime <= timedelta(hours=47)

    read = call(http, klarna, "GET", created["session_url"])
    assert read.status == 200
    assert read.headers["Content-Type"] == "application/json"
    body = read.json()
    assert body["session_id"] == session_id
    assert body["status"] == "WAITING"
    assert body["expires_at"] == created["expires_at"]
    assert KLARNA_TIMESTAMP.match(body["updated_at"])
    assert "merchant_urls" not in body
    assert "authorization_token" not in body

    klarna.set_status(session_id, "COMPLETED", authorization_token="a1a8f727-2756-6058-bd3c-40069be0994b")
    completed = call(http, klarna, "GET", created["session_url"]).json()
    assert completed["status"] == "COMPLETED"
    assert completed["authorization_token"] == "a1a8f727-2756-6058-bd3c-40069be0994b"
    klarna.set_status(session_id, "IN_PROGRESS", authorization_token=None)  # None removes the field

    disabled = call(http, klarna, "DELETE", created["session_url"])
    assert disabled.status == 204
    assert disabled.data == b""
    after = call(http, klarna, "GET", created["session_url"]).json()
    assert after["status"] == "DISABLED"
    assert "authorization_token" not in after
    assert KLARNA_TIMESTAMP.match(after["updated_at"])

    assert klarna.status_update_url(session_id) == (
        f"https://hooks.example/klarna?hppSessionId={session_id}&secretToken=abc"
    )
    callback = klarna.callback_body(session_id, event_id="e-1")
    assert callback == {"event_id": "e-1", "session": after}


def test_create_rejects_invalid_requests(klarna: FakeKlarna, http: urllib3.PoolManager) -> None:
    assert_klarna_error(call(http, klarna, "POST", SESSIONS_PATH, {}), 400, "BAD_VALUE")
    not_kp = {"payment_session_url": "https://shop.example/whatever"}
    assert_klarna_error(call(http, klarna, "POST", SESSIONS_PATH, not_kp), 400, "BAD_VALUE")
    bad_mode = {"payment_session_url": KP_SESSION_URL, "options": {"place_order_mode": "SOMETIMES"}}
    assert_klarna_error(call(http, klarna, "POST", SESSIONS_PATH, bad_mode), 400, "BAD_VALUE")
    headers = {**klarna.auth_header(), "Content-Type": "application/json"}
    not_json = http.request("POST", klarna.base_url + SESSIONS_PATH, body=b"{nope", headers=headers)
    assert_klarna_error(not_json, 400, "BAD_VALUE")
    assert klarna.sessions == {}


def test_read_shows_order_fields_and_extra(klarna: FakeKlarna, http: urllib3.PoolManager) -> None:
    session = klarna.add_session(
        status="COMPLETED",
        updated_at="2019-05-13T14:54:04Z",  # strings are served as given: no-millis form on purpose
        order_id="ord-1",
        klarna_reference="K-REF",
        customer={"national_identification_number": "x"},
    )
    body = call(http, klarna, "GET", klarna.session_url(session["session_id"])).json()
    assert body["updated_at"] == "2019-05-13T14:54:04Z"
    assert body["order_id"] == "ord-1"
    assert body["klarna_reference"] == "K-REF"
    assert body["customer"] == {"national_identification_number": "x"}
    assert KLARNA_TIMESTAMP.match(body["expires_at"])


def test_unknown_and_expired_sessions_are_404(klarna: FakeKlarna, http: urllib3.PoolManager) -> None:
    assert_klarna_error(call(http, klarna, "GET", f"{SESSIONS_PATH}/nope"), 404, "NOT_FOUND")
    assert_klarna_error(call(http, klarna, "DELETE", f"{SESSIONS_PATH}/nope"), 404, "NOT_FOUND")

    past = klarna.add_session(expires_at=datetime.now(UTC) - timedelta(milliseconds=5))
    assert_klarna_error(call(http, klarna, "GET", klarna.session_url(past["session_id"])), 404, "NOT_FOUND")
    assert_klarna_error(
        call(http, klarna, "DELETE", klarna.session_url(past["session_id"])), 404, "NOT_FOUND"
    )

    created = create(http, klarna)
    assert call(http, klarna, "GET", created["session_url"]).status == 200
    # Moving the fake's clock past expires_at expires the session without sleeping.
    later = datetime.now(UTC) + timedelta(hours=47, seconds=1)
    klarna.clock = lambda: later
    assert_klarna_error(call(http, klarna, "GET", created["session_url"]), 404, "NOT_FOUND")

    klarna.clock = lambda: datetime.now(UTC)
    other = klarna.add_session()
    klarna.expire(other["session_id"])
    assert call(http, klarna, "GET", klarna.session_url(other["session_id"])).status == 404


def test_disabling_a_completed_session_is_400(klarna: FakeKlarna, http: urllib3.PoolManager) -> None:
    session = klarna.add_session(status="COMPLETED", authorization_token="tok")
    response = call(http, klarna, "DELETE", klarna.session_url(session["session_id"]))
    assert response.status == 400
    assert response.json()["error_code"]
    assert klarna.sessions[session["session_id"]]["status"] == "COMPLETED"


def test_scripted_429_with_headers_then_normal(klarna: FakeKlarna, http: urllib3.PoolManager) -> None:
    session_url = klarna.session_url(klarna.add_session()["session_id"])
    klarna.fail_next(
        "GET", SESSIONS_PATH + "/", status=429, headers=ratelimit_headers(limit=50, reset=2, retry_after=2)
    )

    limited = call(http, klarna, "GET", session_url)
    assert_klarna_error(limited, 429, "TOO_MANY_REQUESTS")
    assert limited.headers["Retry-After"] == "2"
    assert limited.headers["X-Ratelimit-Limit"] == "50"
    assert limited.headers["X-Ratelimit-Remaining"] == "0"
    assert limited.headers["X-Ratelimit-Reset"] == "2"

    assert call(http, klarna, "GET", session_url).status == 200  # times=1: used up
    assert klarna.faults == []


def test_scripted_faults_match_method_and_path(klarna: FakeKlarna, http: urllib3.PoolManager) -> None:
    session_url = klarna.session_url(klarna.add_session()["session_id"])
    fault = klarna.fail_next("DELETE", session_url, status=503, times=2)  # a full URL works as prefix
    assert call(http, klarna, "GET", session_url).status == 200  # other method: untouched
    assert call(http, klarna, "DELETE", session_url).status == 503
    assert call(http, klarna, "DELETE", session_url).status == 503
    assert fault.hits == 2
    assert call(http, klarna, "DELETE", session_url).status == 204

    klarna.fail_next(None, None, status=200, body=b"<html>not json</html>")
    garbage = call(http, klarna, "GET", session_url)
    assert garbage.status == 200
    assert garbage.data == b"<html>not json</html>"
    with pytest.raises(json.JSONDecodeError):
        json.loads(garbage.data)

    klarna.fail_next("GET", None, status=502, body={"custom": True}, headers={"X-Test": "1"})
    custom = call(http, klarna, "GET", session_url)
    assert (custom.status, custom.json(), custom.headers["X-Test"]) == (502, {"custom": True}, "1")


def test_fail_always_until_cleared(klarna: FakeKlarna, http: urllib3.PoolManager) -> None:
    session_url = klarna.session_url(klarna.add_session()["session_id"])
    fault = klarna.fail_always("GET", SESSIONS_PATH, status=500)
    for _ in range(3):
        assert_klarna_error(call(http, klarna, "GET", session_url), 500, "INTERNAL_SERVER_ERROR")
    klarna.remove_fault(fault)
    assert call(http, klarna, "GET", session_url).status == 200

    klarna.fail_always(None, None, status=503)
    assert call(http, klarna, "POST", SESSIONS_PATH, {"payment_session_url": KP_SESSION_URL}).status == 503
    klarna.clear_faults()
    assert call(http, klarna, "GET", session_url).status == 200


def test_dropped_connection(klarna: FakeKlarna, http: urllib3.PoolManager) -> None:
    session_url = klarna.session_url(klarna.add_session()["session_id"])
    klarna.fail_next("GET", None, disconnect=True)
    with pytest.raises(urllib3.exceptions.ProtocolError):
        call(http, klarna, "GET", session_url)
    assert klarna.requests[-1].response_status is None
    assert call(http, klarna, "GET", session_url).status == 200


def test_scripted_delay_times_out_the_client_without_blocking_others(
    klarna: FakeKlarna, http: urllib3.PoolManager
) -> None:
    session_url = klarna.session_url(klarna.add_session()["session_id"])
    klarna.fail_next("GET", None, status=None, delay=1.0)  # status=None: answer normally, but late

    started = time.monotonic()
    with pytest.raises(urllib3.exceptions.ReadTimeoutError):
        call(http, klarna, "GET", session_url, timeout=0.2)
    assert time.monotonic() - started < 0.9

    # The slow handler is still sleeping; another request is answered at once by another thread.
    started = time.monotonic()
    assert call(http, klarna, "GET", session_url).status == 200
    assert time.monotonic() - started < 0.5


def test_latency_applies_to_every_response(klarna: FakeKlarna, http: urllib3.PoolManager) -> None:
    session_url = klarna.session_url(klarna.add_session()["session_id"])
    klarna.latency = 0.2
    started = time.monotonic()
    assert call(http, klarna, "GET", session_url).status == 200
    assert call(http, klarna, "GET", f"{SESSIONS_PATH}/nope").status == 404
    assert time.monotonic() - started >= 0.4


def test_requests_are_recorded(klarna: FakeKlarna, http: urllib3.PoolManager) -> None:
    before = datetime.now(UTC)
    create(http, klarna, merchant_urls={"status_update": "https://hooks.example/x"})
    call(http, klarna, "GET", f"{SESSIONS_PATH}/abc?probe=1&probe=2", auth=False)

    first, second = klarna.requests
    assert (first.method, first.path, first.response_status) == ("POST", SESSIONS_PATH, 201)
    assert first.json == {
        "payment_session_url": KP_SESSION_URL,
        "merchant_urls": {"status_update": "https://hooks.example/x"},
    }
    assert json.loads(first.body) == first.json
    assert first.header("Authorization") == klarna.auth_header()["Authorization"]
    assert first.header("content-type") == "application/json"
    assert first.authorized
    assert before <= first.received_at <= second.received_at
    assert first.monotonic <= second.monotonic

    assert (second.method, second.path, second.query) == (
        "GET",
        f"{SESSIONS_PATH}/abc",
        {"probe": ["1", "2"]},
    )
    assert second.json is None
    assert second.body == b""
    assert not second.authorized
    assert second.response_status == 401

    assert [r.method for r in klarna.requests_to("GET", SESSIONS_PATH)] == ["GET"]
    klarna.clear_requests()
    assert klarna.requests == []


def test_rate_limit(http: urllib3.PoolManager) -> None:
    with FakeKlarna(rate_limit_per_second=3) as klarna:
        session_url = klarna.session_url(klarna.add_session()["session_id"])
        statuses = []
        limited: urllib3.BaseHTTPResponse | None = None
        for _ in range(10):
            response = call(http, klarna, "GET", session_url)
            statuses.append(response.status)
            if response.status == 429:
                limited = response
        # Ten quick calls span at most two one-second windows: 3 to 6 pass, the rest are limited.
        assert 3 <= statuses.count(200) <= 6
        assert statuses.count(429) == 10 - statuses.count(200)
        assert statuses[:3] == [200, 200, 200]
        assert limited is not None
        assert_klarna_error(limited, 429, "TOO_MANY_REQUESTS")
        assert limited.headers["X-Ratelimit-Limit"] == "3"
        assert limited.headers["X-Ratelimit-Remaining"] == "0"
        assert limited.headers["X-Ratelimit-Reset"] == "1"  # a one-second window resets within 1 s

        time.sleep(1.05)
        assert call(http, klarna, "GET", session_url).status == 200


def test_stop_is_prompt_while_a_delayed_request_is_in_flight() -> None:
    klarna = FakeKlarna().start()
    session_url = klarna.session_url(klarna.add_session()["session_id"])
    klarna.fail_next("GET", None, status=None, delay=30)
    outcome: list[object] = []

    def slow_call() -> None:
        pool = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(connect=2.0, read=60.0))
        try:
            outcome.append(pool.request("GET", session_url, headers=klarna.auth_header()).status)
        except urllib3.exceptions.HTTPError as error:
            outcome.append(error)

    client = threading.Thread(target=slow_call, daemon=True)
    client.start()
    klarna.wait_for_requests(1, "GET", timeout=5)

    started = time.monotonic()
    klarna.stop()
    assert time.monotonic() - started < 1.5

    client.join(timeout=5)
    assert not client.is_alive()
    assert len(outcome) == 1
    assert isinstance(outcome[0], urllib3.exceptions.HTTPError)  # dropped, never answered
    assert klarna.errors == []

    with pytest.raises(RuntimeError):
        _ = klarna.base_url
    klarna.stop()  # idempotent


def test_keep_alive_connection_does_not_hold_up_stop(http: urllib3.PoolManager) -> None:
    klarna = FakeKlarna().start()
    url = klarna.session_url(klarna.add_session()["session_id"])
    for _ in range(3):  # reuses one pooled keep-alive connection
        assert http.request("GET", url, headers=klarna.auth_header()).status == 200
    started = time.monotonic()
    klarna.stop()
    assert time.monotonic() - started < 1.5
    with pytest.raises(urllib3.exceptions.HTTPError):
        http.request("GET", url, headers=klarna.auth_header())


def test_concurrent_creates_are_all_stored(klarna: FakeKlarna) -> None:
    pool = urllib3.PoolManager(retries=False, maxsize=8, timeout=5.0)
    results: list[int] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(5):
            response = pool.request(
                "POST",
                klarna.base_url + SESSIONS_PATH,
                json={"payment_session_url": KP_SESSION_URL},
                headers=klarna.auth_header(),
            )
            with lock:
                results.append(response.status)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert results == [201] * 40
    assert len(klarna.sessions) == 40
    assert len(klarna.requests) == 40
    assert klarna.errors == []
