"""The Klarna HPP simulator over real HTTP: Klarna's API, seeded journeys, callback delivery, chaos, truth."""

import itertools
import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
import urllib3

from local.common.httpserver import Response
from local.klarna_simulator import KlarnaSimulator, SimulatorConfig, chaos_profile
from tests.support.callback_receiver import CallbackReceiver, always

KP_URL = "https://api.playground.klarna.com/payments/v1/sessions/0b1d9815-165e-42e2-8867-35bc03789e00"
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
HTTP = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(total=10))
# Fast journeys and fast callback retries, so a test sees whole lifetimes in seconds.
FAST = SimulatorConfig(think_time=(0.01, 0.05), callback_retry_delay=0.05, callback_timeout=1.0)
MANUAL = replace(FAST, journeys="manual")


def call(
    simulator: KlarnaSimulator,
    method: str,
    url: str,
    body: Any = None,
    *,
    auth: bool = True,
    raw: bytes | None = None,
    timeout: float = 10.0,
) -> urllib3.BaseHTTPResponse:
    headers = {"Content-Type": "application/json", **(simulator.auth_header() if auth else {})}
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    if not url.startswith("http"):
        url = simulator.url + url
    return HTTP.request(method, url, body=data, headers=headers, timeout=urllib3.Timeout(total=timeout))


def create(
    simulator: KlarnaSimulator, status_update: str | None = None, mode: str = "NONE"
) -> dict[str, Any]:
    body: dict[str, Any] = {"payment_session_url": KP_URL, "options": {"place_order_mode": mode}}
    if status_update:
        body["merchant_urls"] = {"status_update": status_update, "success": "https://shop.example/ok"}
    response = call(simulator, "POST", "/hpp/v1/sessions", body)
    assert response.status == 201, response.data
    return response.json()


def assert_klarna_error(response: urllib3.BaseHTTPResponse, status: int, code: str) -> dict[str, Any]:
    assert response.status == status
    body = response.json()
    assert set(body) == {"error_code", "error_messages", "correlation_id"}
    assert body["error_code"] == code
    assert body["error_messages"] and all(isinstance(m, str) for m in body["error_messages"])
    assert body["correlation_id"] == response.headers["Klarna-Correlation-Id"]
    return body


@pytest.fixture
def simulator() -> Iterator[KlarnaSimulator]:
    with KlarnaSimulator(MANUAL) as sim:
        yield sim


@pytest.fixture
def receiver() -> Iterator[CallbackReceiver]:
    with CallbackReceiver() as server:
        yield server


# ------------------------------------------------------------------------------------- Klarna's API


def test_create_returns_klarnas_urls_and_each_one_works(simulator: KlarnaSimulator) -> None:
    created = create(simulator)

    assert set(created) >= {
        "session_id",
        "session_url",
        "redirect_url",
        "qr_code_url",
        "distribution_url",
        "distribution_module",
        "expires_at",
    }
    assert TIMESTAMP.match(created["expires_at"])
    read = call(simulator, "GET", created["session_url"])
    assert read.status == 200
    assert read.json() == {
        "session_id": created["session_id"],
        "status": "WAITING",
        "updated_at": read.json()["updated_at"],
        "expires_at": created["expires_at"],
    }
    page = call(simulator, "GET", created["redirect_url"], auth=False)
    assert (page.status, page.headers["Content-Type"]) == (200, "text/html; charset=utf-8")
    assert created["session_id"] in page.data.decode()
    qr = call(simulator, "GET", created["qr_code_url"], auth=False)
    assert (qr.status, qr.headers["Content-Type"]) == (200, "image/svg+xml")
    distribute = {"method": "email", "contact_information": {"email": "buyer@example.com"}}
    assert call(simulator, "POST", created["distribution_url"], distribute).status == 200
    assert call(simulator, "POST", created["distribution_url"], {"method": "fax"}).status == 400


def test_wrong_or_missing_credentials_get_401_in_klarnas_error_format(simulator: KlarnaSimulator) -> None:
    created = create(simulator)
    assert_klarna_error(call(simulator, "GET", created["session_url"], auth=False), 401, "UNAUTHORIZED")
    wrong = HTTP.request("GET", created["session_url"], headers={"Authorization": "Basic bm9wZTpub3Bl"})
    assert_klarna_error(wrong, 401, "UNAUTHORIZED")
    garbage = HTTP.request("GET", created["session_url"], headers={"Authorization": "Basic %%%"})
    assert_klarna_error(garbage, 401, "UNAUTHORIZED")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "not valid JSON"),
        (b"[]", "must be a JSON object"),
        (b"{}", "payment_session_url"),
        (json.dumps({"payment_session_url": "https://shop.example/cart"}).encode(), "payment_session_url"),
        (
            json.dumps({"payment_session_url": KP_URL, "options": {"place_order_mode": "X"}}).encode(),
            "place_order",
        ),
        (
            json.dumps({"payment_session_url": KP_URL, "merchant_urls": {"success": 1}}).encode(),
            "merchant_urls",
        ),
    ],
)
def test_a_bad_create_request_gets_400_naming_the_field(
    simulator: KlarnaSimulator, body: bytes, message: str
) -> None:
    response = call(simulator, "POST", "/hpp/v1/sessions", raw=body)
    error = assert_klarna_error(response, 400, "BAD_VALUE")
    assert message in error["error_messages"][0]
    assert simulator.session_ids() == []


def test_unknown_sessions_and_routes_get_404_and_wrong_methods_405(simulator: KlarnaSimulator) -> None:
    assert_klarna_error(call(simulator, "GET", "/hpp/v1/sessions/nope"), 404, "NOT_FOUND")
    assert_klarna_error(call(simulator, "DELETE", "/hpp/v1/sessions/nope"), 404, "NOT_FOUND")
    assert_klarna_error(call(simulator, "GET", "/payments/v1/sessions"), 404, "NOT_FOUND")
    assert_klarna_error(call(simulator, "PUT", "/hpp/v1/sessions"), 405, "METHOD_NOT_ALLOWED")


def test_read_and_disable_answer_404_once_the_session_has_expired() -> None:
    config = SimulatorConfig(journeys="manual", session_lifetime=0.3)
    with KlarnaSimulator(config) as simulator:
        created = create(simulator)
        assert call(simulator, "GET", created["session_url"]).status == 200
        time.sleep(0.5)

        assert_klarna_error(call(simulator, "GET", created["session_url"]), 404, "NOT_FOUND")
        assert_klarna_error(call(simulator, "DELETE", created["session_url"]), 404, "NOT_FOUND")
        assert simulator.session_truth(created["session_id"])["final_status"] == "EXPIRED"


def test_disable_gives_204_and_disabled_but_a_completed_session_cannot_be_disabled(
    simulator: KlarnaSimulator,
) -> None:
    first, second = create(simulator), create(simulator)

    assert call(simulator, "DELETE", first["session_url"]).status == 204
    assert call(simulator, "DELETE", first["session_url"]).status == 204  # again: nothing changes
    assert call(simulator, "GET", first["session_url"]).json()["status"] == "DISABLED"
    simulator.act(second["session_id"], "COMPLETED")
    assert_klarna_error(call(simulator, "DELETE", second["session_url"]), 400, "INVALID_OPERATION")
    assert call(simulator, "GET", second["session_url"]).json()["status"] == "COMPLETED"
    truth = simulator.session_truth(first["session_id"])
    assert [change["status"] for change in truth["history"]] == ["WAITING", "DISABLED"]
    assert truth["history"][-1]["source"] == "merchant_api"


def test_over_the_rate_limit_klarna_answers_429_with_its_headers() -> None:
    config = SimulatorConfig(journeys="manual", create_rate_limit=2, other_rate_limit=3)
    with KlarnaSimulator(config) as simulator:
        creates = [
            call(simulator, "POST", "/hpp/v1/sessions", {"payment_session_url": KP_URL}) for _ in range(8)
        ]
        limited = [response for response in creates if response.status == 429]

        assert limited, "8 creates at a limit of 2 per second must be throttled"
        assert {response.status for response in creates} == {201, 429}
        for response in limited:
            assert_klarna_error(response, 429, "TOO_MANY_REQUESTS")
            assert response.headers["X-Ratelimit-Limit"] == "2"
            assert response.headers["X-Ratelimit-Remaining"] == "0"
            assert int(response.headers["X-Ratelimit-Reset"]) >= 1
        session_url = next(r for r in creates if r.status == 201).json()["session_url"]
        reads = [call(simulator, "GET", session_url) for _ in range(10)]
        assert any(r.status == 429 and r.headers["X-Ratelimit-Limit"] == "3" for r in reads)


def test_without_credentials_nothing_counts_against_the_rate_limit() -> None:
    with KlarnaSimulator(SimulatorConfig(journeys="manual", create_rate_limit=1)) as simulator:
        for _ in range(5):
            assert call(simulator, "POST", "/hpp/v1/sessions", {}, auth=False).status == 401
        assert call(simulator, "POST", "/hpp/v1/sessions", {"payment_session_url": KP_URL}).status == 201


# -------------------------------------------------------------------------------------- callbacks


def test_a_status_change_is_posted_to_status_update_with_the_session_id_filled_in(
    simulator: KlarnaSimulator, receiver: CallbackReceiver
) -> None:
    created = create(simulator, receiver.status_update_url("abc"))
    simulator.act(created["session_id"], "IN_PROGRESS")

    [callback] = receiver.wait_for(1)
    assert callback.request.method == "POST"
    assert callback.request.query_pairs() == [("session_id", created["session_id"]), ("secret", "abc")]
    body = callback.json()
    assert set(body) == {"event_id", "session"}
    assert body["session"] == call(simulator, "GET", created["session_url"]).json()
    assert body["session"]["status"] == "IN_PROGRESS"


def test_completed_callbacks_carry_the_token_in_kp_mode_and_the_order_in_place_order_mode(
    simulator: KlarnaSimulator, receiver: CallbackReceiver
) -> None:
    kp = create(simulator, receiver.status_update_url(), mode="NONE")
    order = create(simulator, receiver.status_update_url(), mode="PLACE_ORDER")
    simulator.act(kp["session_id"], "COMPLETED")
    simulator.act(order["session_id"], "COMPLETED")

    bodies = {r.json()["session"]["session_id"]: r.json()["session"] for r in receiver.wait_for(2)}
    assert set(bodies[kp["session_id"]]) == {
        "session_id",
        "status",
        "updated_at",
        "expires_at",
        "authorization_token",
    }
    assert set(bodies[order["session_id"]]) == {
        "session_id",
        "status",
        "updated_at",
        "expires_at",
        "order_id",
        "klarna_reference",
    }
    truth = simulator.session_truth(order["session_id"])
    assert (truth["order_id"], truth["klarna_reference"]) == (
        bodies[order["session_id"]]["order_id"],
        bodies[order["session_id"]]["klarna_reference"],
    )


def test_a_failed_callback_is_retried_until_it_is_accepted() -> None:
    def fail_twice(request, index):
        return Response(500 if index < 2 else 200)

    with KlarnaSimulator(MANUAL) as simulator, CallbackReceiver(fail_twice) as receiver:
        created = create(simulator, receiver.status_update_url())
        simulator.act(created["session_id"], "IN_PROGRESS")
        received = receiver.wait_for(3)
        assert simulator.wait_settled(5)

        assert len({r.json()["event_id"] for r in received}) == 1
        assert all(b.monotonic - a.monotonic >= 0.05 for a, b in itertools.pairwise(received))
        [event] = simulator.session_truth(created["session_id"])["callbacks"]
        [delivery] = event["deliveries"]
        assert [a["result"] for a in delivery["attempts"]] == ["http_500", "http_500", "http_200"]
        assert delivery["outcome"] == "delivered"


def test_klarna_gives_up_after_four_attempts() -> None:
    with KlarnaSimulator(MANUAL) as simulator, CallbackReceiver(always(503)) as receiver:
        created = create(simulator, receiver.status_update_url())
        simulator.act(created["session_id"], "IN_PROGRESS")
        assert simulator.wait_settled(5)

        assert len(receiver.received) == 4
        [event] = simulator.session_truth(created["session_id"])["callbacks"]
        assert event["deliveries"][0]["outcome"] == "gave_up"
        assert [a["number"] for a in event["deliveries"][0]["attempts"]] == [1, 2, 3, 4]


def test_an_answer_slower_than_the_callback_timeout_counts_as_failed_and_is_retried() -> None:
    def slow_first(request, index):
        if index == 0:
            time.sleep(0.6)
        return Response(200)

    config = SimulatorConfig(journeys="manual", callback_timeout=0.2, callback_retry_delay=0.05)
    with KlarnaSimulator(config) as simulator, CallbackReceiver(slow_first) as receiver:
        created = create(simulator, receiver.status_update_url())
        simulator.act(created["session_id"], "IN_PROGRESS")
        assert simulator.wait_settled(5)

        attempts = simulator.session_truth(created["session_id"])["callbacks"][0]["deliveries"][0]["attempts"]
        assert [a["result"] for a in attempts] == ["timeout", "http_200"]


def test_a_merchant_endpoint_that_is_down_is_retried_then_given_up() -> None:
    with CallbackReceiver() as receiver:
        dead_url = receiver.status_update_url()
    with KlarnaSimulator(MANUAL) as simulator:
        created = create(simulator, dead_url)
        simulator.act(created["session_id"], "IN_PROGRESS")
        assert simulator.wait_settled(5)
        delivery = simulator.session_truth(created["session_id"])["callbacks"][0]["deliveries"][0]
        assert [a["result"] for a in delivery["attempts"]] == ["connection_error"] * 4
        assert delivery["outcome"] == "gave_up"


# ------------------------------------------------------------------------------------------ chaos


def chaotic(**rates: str) -> SimulatorConfig:
    return replace(MANUAL, chaos=chaos_profile("none", rates))


def test_chaos_drops_callbacks_and_the_truth_says_so(receiver: CallbackReceiver) -> None:
    with KlarnaSimulator(chaotic(callback_drop_rate="1")) as simulator:
        created = create(simulator, receiver.status_update_url())
        simulator.act(created["session_id"], "IN_PROGRESS")
        simulator.act(created["session_id"], "COMPLETED")
        assert simulator.wait_settled(5)

        assert receiver.received == []
        events = simulator.session_truth(created["session_id"])["callbacks"]
        assert [(e["status"], e["chaos"], e["deliveries"]) for e in events] == [
            ("IN_PROGRESS", ["dropped"], []),
            ("COMPLETED", ["dropped"], []),
        ]
        assert simulator.truth()["summary"]["callbacks"]["dropped"] == 2


def test_chaos_duplicates_a_callback_with_the_same_event_id(receiver: CallbackReceiver) -> None:
    with KlarnaSimulator(chaotic(callback_duplicate_rate="1")) as simulator:
        created = create(simulator, receiver.status_update_url())
        simulator.act(created["session_id"], "IN_PROGRESS")
        first, second = receiver.wait_for(2)

        assert first.json() == second.json()
        assert simulator.wait_settled(5)
        assert simulator.session_truth(created["session_id"])["callbacks"][0]["chaos"] == ["duplicated"]


def test_chaos_empties_callback_bodies(receiver: CallbackReceiver) -> None:
    with KlarnaSimulator(chaotic(callback_empty_rate="1")) as simulator:
        created = create(simulator, receiver.status_update_url())
        simulator.act(created["session_id"], "IN_PROGRESS")
        [callback] = receiver.wait_for(1)

        assert callback.body == b""
        assert callback.request.query_pairs()[0] == ("session_id", created["session_id"])


def test_chaos_delays_reorder_callbacks(receiver: CallbackReceiver) -> None:
    with KlarnaSimulator(chaotic(callback_delay_rate="1", callback_delay_seconds="0.8:0.8")) as simulator:
        created = create(simulator, receiver.status_update_url())
        simulator.act(created["session_id"], "IN_PROGRESS")  # held back 0.8 s
        simulator.set_chaos(chaos_profile("none"))
        simulator.act(created["session_id"], "COMPLETED")  # sent at once

        statuses = [r.json()["session"]["status"] for r in receiver.wait_for(2)]
        assert statuses == ["COMPLETED", "IN_PROGRESS"]
        history = simulator.session_truth(created["session_id"])["history"]
        assert history[1]["updated_at"] < history[2]["updated_at"]


def test_chaos_makes_read_session_fail_with_5xx_or_429() -> None:
    with KlarnaSimulator(chaotic(read_error_rate="1")) as simulator:
        created = create(simulator)
        response = call(simulator, "GET", created["session_url"])
        assert response.status in (500, 502, 503)
        assert_klarna_error(response, response.status, "INTERNAL_SERVER_ERROR")
    with KlarnaSimulator(chaotic(read_rate_limited_rate="1")) as simulator:
        created = create(simulator)
        response = call(simulator, "GET", created["session_url"])
        assert_klarna_error(response, 429, "TOO_MANY_REQUESTS")
        assert response.headers["X-Ratelimit-Remaining"] == "0"
        assert simulator.truth()["summary"]["reads"] == {"rate_limited": 1}


def test_chaos_makes_read_session_slower_than_a_tight_client_timeout() -> None:
    with KlarnaSimulator(chaotic(read_slow_rate="1", read_slow_seconds="0.6:0.6")) as simulator:
        created = create(simulator)
        with pytest.raises(urllib3.exceptions.TimeoutError):
            call(simulator, "GET", created["session_url"], timeout=0.2)
        patient = call(simulator, "GET", created["session_url"], timeout=5)
        assert patient.status == 200


def test_chaos_never_hides_a_404() -> None:
    with KlarnaSimulator(chaotic(read_error_rate="1")) as simulator:
        assert_klarna_error(call(simulator, "GET", "/hpp/v1/sessions/unknown"), 404, "NOT_FOUND")


# --------------------------------------------------------------------------------------- journeys


def run_journeys(
    seed: int, sessions: int, receiver: CallbackReceiver, lifetime: float = 1.5
) -> dict[str, Any]:
    """Create `sessions` one by one, let every journey run to its end and every session expire."""
    config = replace(FAST, seed=seed, session_lifetime=lifetime, create_rate_limit=1000)
    with KlarnaSimulator(config) as simulator:
        for n in range(sessions):
            create(simulator, receiver.status_update_url(), mode="PLACE_ORDER" if n % 3 == 0 else "NONE")
        assert simulator.wait_settled(20)
        time.sleep(lifetime + 0.1)  # past the last one's expiry
        return simulator.truth()


def test_seeded_journeys_are_reproducible(receiver: CallbackReceiver) -> None:
    first = run_journeys(11, 12, receiver, lifetime=0.8)
    again = run_journeys(11, 12, receiver, lifetime=0.8)
    other = run_journeys(12, 12, receiver, lifetime=0.8)

    def shape(truth: dict[str, Any]) -> list[tuple]:
        return [
            (
                s["session_id"],
                s["journey"],
                s["final_status"],
                s.get("authorization_token"),
                s.get("order_id"),
            )
            for s in truth["sessions"]
        ]

    assert shape(first) == shape(again)
    assert [s["session_id"] for s in first["sessions"]] != [s["session_id"] for s in other["sessions"]]


def test_journeys_reach_every_status_with_strictly_later_timestamps_and_the_truth_matches_callbacks(
    receiver: CallbackReceiver,
) -> None:
    truth = run_journeys(5, 60, receiver)

    sessions = truth["sessions"]
    assert truth["settled"]
    assert set(truth["summary"]["final_status"]) == {"COMPLETED", "CANCELLED", "DISABLED", "EXPIRED"}
    seen = {change["status"] for s in sessions for change in s["history"]}
    assert seen == {"WAITING", "IN_PROGRESS", "FAILED", "BACK", "ERROR", "COMPLETED", "CANCELLED", "DISABLED"}
    for session in sessions:
        stamps = [change["updated_at"] for change in session["history"]]
        assert all(TIMESTAMP.match(stamp) for stamp in stamps)
        assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps), "strictly later each time"
        if session["final_status"] == "COMPLETED":
            if session["place_order_mode"] == "NONE":
                assert session["authorization_token"] and "order_id" not in session
            else:
                assert (
                    session["order_id"]
                    and session["klarna_reference"]
                    and "authorization_token" not in session
                )
        expected = [c["status"] for c in session["history"] if c["source"] == "consumer"]
        assert [e["status"] for e in session["callbacks"]] == expected
    # Without chaos every consumer change reached the merchant exactly once (in any order, as with Klarna:
    # two changes milliseconds apart are sent concurrently).
    delivered = [r.json() for r in receiver.received]
    assert len(delivered) == sum(len(s["callbacks"]) for s in sessions)
    by_session: dict[str, list[str]] = {}
    for body in delivered:
        by_session.setdefault(body["session"]["session_id"], []).append(body["session"]["status"])
    for session in sessions:
        assert sorted(by_session.get(session["session_id"], [])) == sorted(
            e["status"] for e in session["callbacks"]
        )


def test_merchant_disable_steps_go_to_the_configured_url(receiver: CallbackReceiver) -> None:
    with CallbackReceiver(always(204)) as merchant:
        config = replace(FAST, seed=5, merchant_disable_url=f"{merchant.url}/prod/sessions/{{session_id}}")
        with KlarnaSimulator(config) as simulator:
            for _ in range(30):
                create(simulator, receiver.status_update_url())
            assert simulator.wait_settled(20)
            disabling = [s for s in simulator.truth()["sessions"] if s["merchant_actions"]]

            assert disabling
            paths = sorted(r.request.path for r in merchant.received)
            assert paths == sorted(f"/prod/sessions/{s['session_id']}" for s in disabling)
            assert all(r.request.method == "DELETE" for r in merchant.received)
            assert all(s["merchant_actions"][0]["result"] == "http_204" for s in disabling)


# ------------------------------------------------------------------------------------ control API


def test_the_control_api_drives_and_expires_sessions_and_serves_the_truth(
    simulator: KlarnaSimulator, receiver: CallbackReceiver
) -> None:
    created = create(simulator, receiver.status_update_url())
    session_id = created["session_id"]

    moved = call(
        simulator, "POST", f"/_simulator/sessions/{session_id}/status", {"status": "IN_PROGRESS"}, auth=False
    )
    assert (moved.status, moved.json()["status"]) == (200, "IN_PROGRESS")
    receiver.wait_for(1)
    bad = call(
        simulator, "POST", f"/_simulator/sessions/{session_id}/status", {"status": "lower"}, auth=False
    )
    assert bad.status == 409
    assert (
        call(simulator, "POST", "/_simulator/sessions/nope/status", {"status": "X"}, auth=False).status == 404
    )
    assert call(simulator, "POST", f"/_simulator/sessions/{session_id}/expire", auth=False).status == 200
    assert call(simulator, "GET", created["session_url"]).status == 404
    truth = call(simulator, "GET", "/_simulator/truth", auth=False).json()
    assert truth["summary"]["final_status"] == {"EXPIRED": 1}
    assert truth["sessions"][0]["callbacks"][0]["url"] == f"{receiver.url}/callbacks/hpp"  # no secret
    one = call(simulator, "GET", f"/_simulator/truth/{session_id}", auth=False).json()
    assert one["final_status"] == "EXPIRED"


def test_the_consumer_page_moves_the_session(simulator: KlarnaSimulator) -> None:
    created = create(simulator)
    response = HTTP.request(
        "POST",
        created["redirect_url"],
        body=b"action=CANCELLED",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        redirect=False,
    )
    assert response.status == 303
    assert call(simulator, "GET", created["session_url"]).json()["status"] == "CANCELLED"


def test_the_command_line_prints_its_url_and_stops_on_sigterm() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "local.klarna_simulator", "--port", "0", "--seed", "3", "--chaos", "default"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        ready = json.loads(process.stdout.readline())
        assert ready["klarna_url"].startswith("http://127.0.0.1:")
        config = HTTP.request("GET", ready["klarna_url"] + "/_simulator/config").json()
        assert (config["seed"], config["chaos"]["name"]) == (3, "default")
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0


def test_the_control_api_changes_the_chaos_profile(simulator: KlarnaSimulator) -> None:
    changed = call(
        simulator, "POST", "/_simulator/chaos", {"profile": "heavy", "set": {"callback_drop_rate": "1"}}
    )
    assert (changed.status, changed.json()["name"], changed.json()["callback_drop_rate"]) == (
        200,
        "heavy+custom",
        1.0,
    )
    assert simulator.chaos.callback_drop_rate == 1.0
    assert call(simulator, "POST", "/_simulator/chaos", {"profile": "wild"}).status == 400
    assert call(simulator, "POST", "/_simulator/chaos", {"set": {"nope": "1"}}).status == 400
    assert simulator.chaos.name == "heavy+custom"
