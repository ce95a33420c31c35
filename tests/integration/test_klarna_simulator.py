"""The Klarna HPP simulator over real HTTP: Klarna's API, seeded journeys, callback delivery, chaos, truth,
and the test API the other tests rely on (seeded sessions, scripted faults, the request log, time)."""

import itertools
import json
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import urllib3

from local.common.httpserver import Response
from local.klarna_simulator import (
    SESSIONS_PATH,
    InvalidOperation,
    KlarnaSimulator,
    SimulatorConfig,
    chaos_profile,
    rate_limit_headers,
)
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
        "manual_identification_check_url",
        "expires_at",
    }
    assert TIMESTAMP.match(created["expires_at"])
    read = call(simulator, "GET", created["session_url"])
    assert (read.status, read.headers["Content-Type"]) == (200, "application/json")
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
    assert call(simulator, "POST", created["distribution_url"], distribute).status == 201
    assert call(simulator, "POST", created["distribution_url"], {"method": "fax"}).status == 400


def test_wrong_or_missing_credentials_get_401_in_klarnas_error_format(simulator: KlarnaSimulator) -> None:
    created = create(simulator)
    assert_klarna_error(call(simulator, "GET", created["session_url"], auth=False), 401, "UNAUTHORIZED")
    wrong = HTTP.request("GET", created["session_url"], headers={"Authorization": "Basic bm9wZTpub3Bl"})
    assert_klarna_error(wrong, 401, "UNAUTHORIZED")
    garbage = HTTP.request("GET", created["session_url"], headers={"Authorization": "Basic %%%"})
    assert_klarna_error(garbage, 401, "UNAUTHORIZED")
    body = {"payment_session_url": KP_URL}
    assert_klarna_error(call(simulator, "POST", SESSIONS_PATH, body, auth=False), 401, "UNAUTHORIZED")
    assert simulator.session_ids() == [created["session_id"]], "the refused create made nothing"


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

    disabled = call(simulator, "DELETE", first["session_url"])
    assert (disabled.status, disabled.data) == (204, b"")
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
            assert response.headers["X-Ratelimit-Limit"] == "2, 2;w=1"  # Klarna's form
            assert response.headers["X-Ratelimit-Remaining"] == "0"
            assert int(response.headers["X-Ratelimit-Reset"]) >= 1
        session_url = next(r for r in creates if r.status == 201).json()["session_url"]
        reads = [call(simulator, "GET", session_url) for _ in range(10)]
        assert any(r.status == 429 and r.headers["X-Ratelimit-Limit"] == "3, 3;w=1" for r in reads)


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


def assert_history_is_strictly_later_each_time(session: dict[str, Any]) -> None:
    stamps = [change["updated_at"] for change in session["history"]]
    assert all(TIMESTAMP.match(stamp) for stamp in stamps)
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps), "strictly later each time"


def assert_completion_fits_the_mode(session: dict[str, Any]) -> None:
    if session["final_status"] != "COMPLETED":
        return
    if session["place_order_mode"] == "NONE":
        assert session["authorization_token"] and "order_id" not in session
    else:
        assert session["order_id"] and session["klarna_reference"] and "authorization_token" not in session


def assert_each_callback_arrived_once(sessions: list[dict[str, Any]], receiver: CallbackReceiver) -> None:
    """Without chaos every consumer change reached the merchant once (in any order, as with Klarna: two
    changes milliseconds apart are sent concurrently) and was answered, plus at most once more for each
    attempt the simulator's record shows as failed: on a busy machine the receiver can take a request
    and answer it after the callback timeout, and Klarna then sends it again, as it should."""
    events = {event["event_id"]: event for session in sessions for event in session["callbacks"]}
    arrived = Counter(received.json()["event_id"] for received in receiver.received)
    assert set(arrived) == set(events)
    for received in receiver.received:
        body = received.json()
        event = events[body["event_id"]]
        assert (body["session"]["status"], body["session"]["updated_at"]) == (
            event["status"],
            event["updated_at"],
        )
    for event_id, event in events.items():
        [delivery] = event["deliveries"]
        results = [attempt["result"] for attempt in delivery["attempts"]]
        assert (delivery["outcome"], results[-1]) == ("delivered", "http_200"), results
        failed = results[:-1]
        assert set(failed) <= {"timeout", "connection_error"}, results  # the receiver never refused one
        assert 1 <= arrived[event_id] <= 1 + len(failed), (results, arrived[event_id])


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
        assert_history_is_strictly_later_each_time(session)
        assert_completion_fits_the_mode(session)
        expected = [c["status"] for c in session["history"] if c["source"] == "consumer"]
        assert [e["status"] for e in session["callbacks"]] == expected
    assert_each_callback_arrived_once(sessions, receiver)


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


def control(simulator: KlarnaSimulator, method: str, path: str, body: Any = None) -> urllib3.BaseHTTPResponse:
    return call(simulator, method, f"/_simulator/{path}", body, auth=False)


def test_the_control_api_drives_and_expires_sessions_and_serves_the_truth(
    simulator: KlarnaSimulator, receiver: CallbackReceiver
) -> None:
    created = create(simulator, receiver.status_update_url())
    session_id = created["session_id"]

    moved = control(simulator, "POST", f"sessions/{session_id}/status", {"status": "IN_PROGRESS"})
    assert (moved.status, moved.json()["status"]) == (200, "IN_PROGRESS")
    receiver.wait_for(1)
    assert control(simulator, "POST", f"sessions/{session_id}/status", {"status": "lower"}).status == 400
    assert control(simulator, "POST", f"sessions/{session_id}/status", {}).status == 400
    assert control(simulator, "POST", "sessions/nope/status", {"status": "X"}).status == 404
    assert control(simulator, "POST", f"sessions/{session_id}/expire").status == 200
    assert call(simulator, "GET", created["session_url"]).status == 404
    assert control(simulator, "POST", f"sessions/{session_id}/status", {"status": "COMPLETED"}).status == 409
    truth = control(simulator, "GET", "truth").json()
    assert truth["summary"]["final_status"] == {"EXPIRED": 1}
    assert truth["sessions"][0]["callbacks"][0]["url"] == f"{receiver.url}/callbacks/hpp"  # no secret
    one = control(simulator, "GET", f"truth/{session_id}").json()
    assert one["final_status"] == "EXPIRED"
    assert control(simulator, "GET", "nothing-here").status == 404


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


# ------------------------------------------------------------------------- test API: sessions


def test_a_seeded_session_reads_as_seeded_with_its_extra_fields(simulator: KlarnaSimulator) -> None:
    seeded = simulator.add_session(
        "seeded-1",
        status="COMPLETED",
        updated_at="2019-05-13T14:54:04.675Z",
        place_order_mode="PLACE_ORDER",
        order_id="ord-1",
        klarna_reference="K-REF",
        customer={"national_identification_number": "x"},
    )
    read = call(simulator, "GET", simulator.session_url("seeded-1"))
    assert read.status == 200
    assert read.json() == seeded == simulator.read_body("seeded-1")
    assert (seeded["updated_at"], seeded["order_id"], seeded["klarna_reference"]) == (
        "2019-05-13T14:54:04.675Z",
        "ord-1",
        "K-REF",
    )
    assert seeded["customer"] == {"national_identification_number": "x"}
    assert TIMESTAMP.match(seeded["expires_at"])
    # COMPLETED without its fields gets Klarna's, drawn like a consumer's completion.
    assert simulator.add_session(status="COMPLETED")["authorization_token"]
    with pytest.raises(ValueError, match="only come with COMPLETED"):
        simulator.add_session(status="IN_PROGRESS", authorization_token="t")
    with pytest.raises(ValueError, match="not a status"):
        simulator.add_session(status="in progress")


def test_act_can_set_the_time_and_the_token_and_keep_its_callback_for_the_test(
    simulator: KlarnaSimulator, receiver: CallbackReceiver
) -> None:
    created = create(simulator, receiver.status_update_url("abc"))
    session_id = created["session_id"]
    moved = simulator.act(
        session_id,
        "COMPLETED",
        updated_at="2030-01-01T00:00:00.000Z",
        callback=False,
        authorization_token="t1",
    )
    assert (moved["status"], moved["updated_at"], moved["authorization_token"]) == (
        "COMPLETED",
        "2030-01-01T00:00:00.000Z",
        "t1",
    )
    assert simulator.wait_settled(5)
    assert receiver.received == [] and simulator.session_truth(session_id)["callbacks"] == []
    # What Klarna would have sent, for the test to deliver: the URL filled in, the body as Read says.
    assert simulator.status_update_url(session_id) == receiver.status_update_url("abc").replace(
        "{{session_id}}", session_id
    )
    assert simulator.callback_body(session_id, "e-1") == {"event_id": "e-1", "session": moved}
    with pytest.raises(InvalidOperation, match="final"):
        simulator.act(session_id, "IN_PROGRESS")


def test_a_forgotten_or_expired_session_is_404_and_the_clock_can_run_ahead(
    simulator: KlarnaSimulator,
) -> None:
    forgotten, expired = simulator.add_session()["session_id"], simulator.add_session()["session_id"]
    past = simulator.add_session(expires_at=datetime.now(UTC) - timedelta(milliseconds=5))["session_id"]
    simulator.forget(forgotten)
    simulator.expire(expired)
    for session_id in (forgotten, expired, past):
        assert_klarna_error(call(simulator, "GET", simulator.session_url(session_id)), 404, "NOT_FOUND")
        assert_klarna_error(call(simulator, "DELETE", simulator.session_url(session_id)), 404, "NOT_FOUND")
    assert forgotten not in simulator.session_ids()

    simulator.clock.offset = timedelta(hours=2)  # Klarna's clock runs two hours ahead of ours
    created = create(simulator)
    moved = simulator.act(created["session_id"], "IN_PROGRESS")
    assert moved["updated_at"] > format_in(hours=1, minutes=59)
    assert call(simulator, "GET", created["session_url"]).json() == moved
    simulator.clock.offset += timedelta(seconds=MANUAL.session_lifetime + 1)
    assert_klarna_error(call(simulator, "GET", created["session_url"]), 404, "NOT_FOUND")


def format_in(**delta: float) -> str:
    """Klarna's form of a moment that far from now, for comparing with its timestamps."""
    moment = datetime.now(UTC) + timedelta(**delta)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def test_a_clock_the_test_moves_drives_expiry() -> None:
    now = [datetime(2026, 3, 2, 12, 0, tzinfo=UTC)]
    with KlarnaSimulator(replace(MANUAL, session_lifetime=60), clock=lambda: now[0]) as simulator:
        session = simulator.add_session()
        assert session["expires_at"] == "2026-03-02T12:01:00.000Z"
        assert call(simulator, "GET", simulator.session_url(session["session_id"])).status == 200
        now[0] += timedelta(seconds=61)
        assert call(simulator, "GET", simulator.session_url(session["session_id"])).status == 404


# --------------------------------------------------------------------------- test API: faults


def test_a_scripted_429_answers_once_with_the_given_headers(simulator: KlarnaSimulator) -> None:
    session_url = simulator.session_url(simulator.add_session()["session_id"])
    headers = rate_limit_headers(limit=50, reset=2) | {"Retry-After": "2"}
    simulator.fail_next("GET", SESSIONS_PATH + "/", status=429, headers=headers)

    limited = call(simulator, "GET", session_url)
    assert_klarna_error(limited, 429, "TOO_MANY_REQUESTS")
    assert {name: limited.headers[name] for name in headers} == headers
    assert call(simulator, "GET", session_url).status == 200  # times=1: used up
    assert simulator.faults == []


def test_scripted_faults_match_method_and_path_and_send_any_body(simulator: KlarnaSimulator) -> None:
    session_url = simulator.session_url(simulator.add_session()["session_id"])
    fault = simulator.fail_next("DELETE", session_url, status=503, times=2)  # a full URL counts by its path
    assert call(simulator, "GET", session_url).status == 200  # another method: untouched
    assert [call(simulator, "DELETE", session_url).status for _ in range(2)] == [503, 503]
    assert fault.hits == 2
    assert call(simulator, "DELETE", session_url).status == 204

    simulator.fail_next(None, None, status=200, body=b"<html>not json</html>")
    garbage = call(simulator, "GET", session_url)
    assert (garbage.status, garbage.data, garbage.headers["Content-Type"]) == (
        200,
        b"<html>not json</html>",
        "application/json",
    )
    simulator.fail_next("GET", None, status=502, body={"custom": True}, headers={"X-Test": "1"})
    custom = call(simulator, "GET", session_url)
    assert (custom.status, custom.json(), custom.headers["X-Test"]) == (502, {"custom": True}, "1")
    assert_klarna_error(call(simulator, "GET", simulator.session_url("nope")), 404, "NOT_FOUND")


def test_fail_always_lasts_until_removed_or_cleared(simulator: KlarnaSimulator) -> None:
    session_url = simulator.session_url(simulator.add_session()["session_id"])
    fault = simulator.fail_always("GET", SESSIONS_PATH, status=500)
    for _ in range(3):
        assert_klarna_error(call(simulator, "GET", session_url), 500, "INTERNAL_SERVER_ERROR")
    simulator.remove_fault(fault)
    assert call(simulator, "GET", session_url).status == 200

    simulator.fail_always(None, None, status=503)
    assert call(simulator, "POST", SESSIONS_PATH, {"payment_session_url": KP_URL}).status == 503
    assert simulator.session_ids() == [session_url.rsplit("/", 1)[-1]], "a scripted answer does nothing else"
    simulator.clear_faults()
    assert call(simulator, "GET", session_url).status == 200


def test_a_dropped_connection_gets_no_answer(simulator: KlarnaSimulator) -> None:
    session_url = simulator.session_url(simulator.add_session()["session_id"])
    simulator.fail_next("GET", None, disconnect=True)
    with pytest.raises(urllib3.exceptions.ProtocolError):
        call(simulator, "GET", session_url)
    assert simulator.requests[-1].response_status is None
    assert call(simulator, "GET", session_url).status == 200


def test_a_late_answer_times_the_client_out_without_holding_up_other_requests(
    simulator: KlarnaSimulator,
) -> None:
    session_url = simulator.session_url(simulator.add_session()["session_id"])
    simulator.fail_next("GET", None, status=None, delay=3.0)  # status=None: Klarna's answer, but late
    with pytest.raises(urllib3.exceptions.ReadTimeoutError):
        call(simulator, "GET", session_url, timeout=0.2)
    # Answered while the late one is still waiting (its status is not recorded yet).
    assert call(simulator, "GET", session_url).status == 200
    late, answered = simulator.requests
    assert (late.response_status, answered.response_status) == (None, 200)
    deadline = time.monotonic() + 10
    while late.response_status is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert late.response_status == 200, "the late answer was still Klarna's"


def test_a_delay_for_every_request_is_a_slow_klarna(simulator: KlarnaSimulator) -> None:
    session_url = simulator.session_url(simulator.add_session()["session_id"])
    simulator.fail_always(None, None, status=None, delay=0.2)
    started = time.monotonic()
    assert call(simulator, "GET", session_url).status == 200
    assert call(simulator, "GET", f"{SESSIONS_PATH}/nope").status == 404
    assert time.monotonic() - started >= 0.4  # a lower bound the simulator imposed


# ---------------------------------------------------------------------- test API: request log


def test_the_merchant_apis_requests_are_recorded_with_what_was_sent(simulator: KlarnaSimulator) -> None:
    before = datetime.now(UTC)
    created = create(simulator, "https://hooks.example/x")
    call(simulator, "GET", f"{SESSIONS_PATH}/abc?probe=1&probe=2", auth=False)
    call(simulator, "GET", created["redirect_url"], auth=False)  # the consumer's page: not the merchant
    control(simulator, "GET", "config")

    first, second = simulator.requests
    assert (first.method, first.path, first.response_status, first.authorized) == (
        "POST",
        SESSIONS_PATH,
        201,
        True,
    )
    assert first.json["merchant_urls"]["status_update"] == "https://hooks.example/x"
    assert json.loads(first.body) == first.json
    assert first.header("Authorization") == simulator.auth_header()["Authorization"]
    assert first.header("content-type") == "application/json"
    assert before <= first.received_at <= second.received_at
    assert first.monotonic <= second.monotonic
    assert (second.method, second.path, second.query) == (
        "GET",
        f"{SESSIONS_PATH}/abc",
        {"probe": ["1", "2"]},
    )
    assert (second.json, second.body, second.authorized, second.response_status) == (None, b"", False, 401)


def test_the_request_log_filters_waits_and_clears(simulator: KlarnaSimulator) -> None:
    session_url = create(simulator)["session_url"]
    call(simulator, "GET", session_url)
    assert [r.method for r in simulator.requests_to("GET", SESSIONS_PATH)] == ["GET"]
    assert [r.method for r in simulator.requests_to(path_prefix=session_url)] == ["GET"]
    assert len(simulator.wait_for_requests(2, timeout=1)) == 2
    with pytest.raises(TimeoutError):
        simulator.wait_for_requests(3, timeout=0.1)
    simulator.clear_requests()
    assert simulator.requests == []


def test_rate_limits_can_be_turned_down_and_back_up_while_running(simulator: KlarnaSimulator) -> None:
    session_url = create(simulator)["session_url"]
    simulator.set_rate_limits(other=1)
    statuses = [call(simulator, "GET", session_url).status for _ in range(4)]
    assert 429 in statuses and statuses[0] == 200
    limited = next(r for r in simulator.requests if r.response_status == 429)
    assert limited.authorized
    simulator.set_rate_limits()
    assert [call(simulator, "GET", session_url).status for _ in range(10)] == [200] * 10


# ---------------------------------------------------------------------- test API over HTTP


def test_the_control_api_seeds_scripts_and_shows_the_request_log(simulator: KlarnaSimulator) -> None:
    seeded = control(simulator, "POST", "sessions", {"session_id": "s-1", "status": "BACK"})
    assert (seeded.status, seeded.json()["status"]) == (201, "BACK")
    assert control(simulator, "POST", "sessions", {"status": 5}).status == 400
    assert control(simulator, "POST", "faults", {"method": "GET", "status": 503, "times": 2}).status == 201
    assert control(simulator, "POST", "faults", {"colour": "red"}).status == 400
    assert [call(simulator, "GET", simulator.session_url("s-1")).status for _ in range(3)] == [503, 503, 200]

    logged = control(simulator, "GET", "requests?method=GET").json()["requests"]
    assert [r["response_status"] for r in logged] == [503, 503, 200]
    assert logged[0]["headers"]["authorization"] == simulator.auth_header()["Authorization"]
    assert control(simulator, "DELETE", "requests").status == 204
    assert control(simulator, "GET", "requests").json() == {"requests": []}

    control(simulator, "POST", "faults", {"status": 500})
    assert control(simulator, "DELETE", "faults").status == 204
    assert simulator.faults == []
    assert control(simulator, "DELETE", "sessions/s-1").status == 204
    assert call(simulator, "GET", simulator.session_url("s-1")).status == 404
    assert control(simulator, "DELETE", "sessions/s-1").status == 404


def test_the_control_api_runs_klarnas_clock_ahead(simulator: KlarnaSimulator) -> None:
    answer = control(simulator, "POST", "clock", {"offset_seconds": 7200})
    assert (answer.status, answer.json()["offset_seconds"]) == (200, 7200.0)
    assert simulator.add_session()["updated_at"] > format_in(hours=1, minutes=59)
    assert control(simulator, "POST", "clock", {"offset_seconds": "soon"}).status == 400


# ------------------------------------------------------------------------------------ lifecycle


def test_stop_is_prompt_while_a_late_answer_is_pending() -> None:
    simulator = KlarnaSimulator(MANUAL).start()
    session_url = simulator.session_url(simulator.add_session()["session_id"])
    simulator.fail_next("GET", None, status=None, delay=30)
    outcome: list[object] = []

    def slow_call() -> None:
        pool = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(connect=2.0, read=60.0))
        try:
            outcome.append(pool.request("GET", session_url, headers=simulator.auth_header()).status)
        except urllib3.exceptions.HTTPError as error:
            outcome.append(error)

    client = threading.Thread(target=slow_call, daemon=True)
    client.start()
    simulator.wait_for_requests(1, "GET", timeout=5)
    started = time.monotonic()
    simulator.stop()
    assert time.monotonic() - started < 10, "stop did not wait out the 30 s delay"
    client.join(timeout=10)
    assert not client.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], urllib3.exceptions.HTTPError)  # never answered
    assert simulator.errors == []
    simulator.stop()  # again: nothing happens


def test_an_idle_keep_alive_connection_does_not_hold_up_stop() -> None:
    simulator = KlarnaSimulator(MANUAL).start()
    url = simulator.session_url(simulator.add_session()["session_id"])
    pool = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(total=5))
    for _ in range(3):  # one pooled keep-alive connection, idle afterwards
        assert pool.request("GET", url, headers=simulator.auth_header()).status == 200
    started = time.monotonic()
    simulator.stop()
    assert time.monotonic() - started < 10, "stop did not wait for the 60 s idle timeout"
    with pytest.raises(urllib3.exceptions.HTTPError):
        pool.request("GET", url, headers=simulator.auth_header())


def test_a_failure_inside_the_simulator_is_kept_in_errors_and_answered_as_klarnas_500(
    simulator: KlarnaSimulator,
) -> None:
    session_id = simulator.add_session(customer=object())["session_id"]  # a field JSON cannot carry
    assert_klarna_error(
        call(simulator, "GET", simulator.session_url(session_id)), 500, "INTERNAL_SERVER_ERROR"
    )
    (error,) = simulator.errors
    assert isinstance(error, TypeError)
    simulator.errors.clear()


def test_concurrent_creates_are_all_stored() -> None:
    pool = urllib3.PoolManager(retries=False, maxsize=8, timeout=5.0)
    results: list[int] = []
    lock = threading.Lock()
    with KlarnaSimulator(replace(MANUAL, create_rate_limit=1000)) as simulator:

        def worker() -> None:
            for _ in range(5):
                response = pool.request(
                    "POST",
                    simulator.url + SESSIONS_PATH,
                    json={"payment_session_url": KP_URL},
                    headers=simulator.auth_header(),
                )
                with lock:
                    results.append(response.status)

        threads = [threading.Thread(target=worker) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=10)
        assert results == [201] * 40
        assert len(set(simulator.session_ids())) == 40
        assert len(simulator.requests) == 40
        assert simulator.errors == []


# ------------------------------------------- Klarna's API as audited against its OpenAPI 1.1 and SDKs

KCO_URL = "https://api.playground.klarna.com/checkout/v3/orders/5a0b4c3e-2d1f-4e6a-9b8c-7d6e5f4a3b2c"
EMAIL = {"method": "email", "contact_information": {"email": "buyer@example.com"}}
SMS = {"method": "sms", "contact_information": {"phone": "+46701740633", "phone_country": "SE"}}


@pytest.mark.parametrize("status", [201, 204])
@pytest.mark.parametrize("body", [EMAIL, SMS], ids=["email", "sms"])
def test_distribution_sends_the_link_and_answers_201_or_204_as_configured(
    status: int, body: dict[str, Any]
) -> None:
    with KlarnaSimulator(replace(MANUAL, distribution_status=status)) as simulator:
        created = create(simulator)
        response = call(simulator, "POST", created["distribution_url"], body)
        assert response.status == status
        (sent,) = simulator.session_truth(created["session_id"])["distributions"]
        assert sent["method"] == body["method"]
        # The truth keeps the method and the time, never the consumer's contact data.
        assert set(sent) == {"method", "at"}
        assert "buyer@example.com" not in json.dumps(simulator.truth())


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"method": "fax", "contact_information": {}}, "method"),
        ({"method": "email"}, "contact_information"),
        ({"method": "email", "contact_information": {"email": ""}}, "contact_information.email"),
        ({"method": "email", "contact_information": {"email": "no-at-sign"}}, "contact_information.email"),
        ({"method": "sms", "contact_information": {"phone": "+46701740633"}}, "phone_country"),
        (
            {"method": "sms", "contact_information": {"phone": "+4670", "phone_country": "se"}},
            "phone_country",
        ),
        ({"method": "token", "contact_information": {}}, "access_id"),
        ([], "JSON object"),
    ],
)
def test_distribution_with_bad_contact_data_is_400_naming_the_field_not_the_value(
    simulator: KlarnaSimulator, body: Any, message: str
) -> None:
    created = create(simulator)
    error = assert_klarna_error(call(simulator, "POST", created["distribution_url"], body), 400, "BAD_VALUE")
    assert message in error["error_messages"][0]
    assert "no-at-sign" not in error["error_messages"][0]
    assert simulator.session_truth(created["session_id"])["distributions"] == []


def test_distribution_for_a_disabled_unknown_or_expired_session_is_refused(
    simulator: KlarnaSimulator,
) -> None:
    disabled, expired = create(simulator), create(simulator)
    assert call(simulator, "DELETE", disabled["session_url"]).status == 204
    error = assert_klarna_error(
        call(simulator, "POST", disabled["distribution_url"], EMAIL), 400, "INVALID_OPERATION"
    )
    assert "disabled by merchant" in error["error_messages"][0]
    simulator.expire(expired["session_id"])
    assert_klarna_error(call(simulator, "POST", expired["distribution_url"], EMAIL), 404, "NOT_FOUND")
    unknown = f"{SESSIONS_PATH}/6a1b0f5e-0000-4c1d-9e8f-000000000404/distribution"
    assert_klarna_error(call(simulator, "POST", unknown, EMAIL), 404, "NOT_FOUND")
    assert_klarna_error(call(simulator, "GET", disabled["distribution_url"]), 405, "METHOD_NOT_ALLOWED")


def test_every_answer_carries_klarnas_rate_limit_headers_in_klarnas_form(simulator: KlarnaSimulator) -> None:
    created = create(simulator)
    answers = [
        call(simulator, "POST", SESSIONS_PATH, {"payment_session_url": KP_URL}),  # 201
        call(simulator, "GET", created["session_url"]),  # 200
        call(simulator, "POST", created["distribution_url"], EMAIL),  # 201
        call(simulator, "DELETE", created["session_url"]),  # 204
        call(simulator, "GET", f"{SESSIONS_PATH}/nope"),  # 404
        call(simulator, "POST", SESSIONS_PATH, {}),  # 400
        call(simulator, "GET", created["session_url"], auth=False),  # 401
    ]
    assert [answer.status for answer in answers] == [201, 200, 201, 204, 404, 400, 401]
    for answer in answers:
        limit = answer.headers["X-Ratelimit-Limit"]
        assert limit in ("40, 40;w=1", "200, 200;w=1"), limit
        assert 0 <= int(answer.headers["X-Ratelimit-Remaining"]) <= int(limit.split(",")[0])
        assert int(answer.headers["X-Ratelimit-Reset"]) >= 1
    assert answers[0].headers["X-Ratelimit-Limit"] == "40, 40;w=1", "Create has its own budget"
    assert answers[1].headers["X-Ratelimit-Limit"] == "200, 200;w=1"


def test_create_returns_the_distribution_module_and_the_manual_identification_check_url(
    simulator: KlarnaSimulator,
) -> None:
    created = create(simulator)
    module = created["distribution_module"]
    assert set(module) == {"token", "standalone_url", "generation_url"}
    assert module["standalone_url"] == created["redirect_url"]
    assert created["manual_identification_check_url"].startswith(created["session_url"] + "/")


@pytest.mark.parametrize(
    "options",
    [
        {"place_order_mode": "CAPTURE_ORDER"},
        {"purchase_type": "SUBSCRIBE"},
        {"payment_method_categories": ["PAY_LATER", "PAY_OVER_TIME", "KLARNA"]},
        {"payment_method_category": "DIRECT_DEBIT"},
        {"show_subtotal_detail": "HIDE"},
        {"logo_url": "https://shop.example/logo.png", "page_title": "Shop"},
        {"background_images": [{"url": "https://shop.example/bg.png", "width": 1200}]},
        {"payment_fallback": True},
        {"an_option_klarna_adds_later": "anything"},
    ],
)
def test_create_takes_every_option_the_openapi_lists(simulator: KlarnaSimulator, options: dict) -> None:
    response = call(simulator, "POST", SESSIONS_PATH, {"payment_session_url": KP_URL, "options": options})
    assert response.status == 201, response.data


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"purchase_type": "LEASE"}, "options.purchase_type"),
        ({"payment_method_categories": ["klarna"]}, "options.payment_method_categories"),
        ({"payment_method_categories": "PAY_LATER"}, "options.payment_method_categories"),
        ({"payment_method_category": "CARD"}, "options.payment_method_category"),
        ({"show_subtotal_detail": "SHOW"}, "options.show_subtotal_detail"),
        ({"logo_url": 5}, "options.logo_url"),
        ({"page_title": ["x"]}, "options.page_title"),
        ({"background_images": [{"width": 10}]}, "options.background_images"),
        ({"background_images": [{"url": "u", "width": "wide"}]}, "options.background_images"),
        ({"payment_fallback": "yes"}, "options.payment_fallback"),
    ],
)
def test_create_refuses_an_option_value_the_openapi_does_not_list(
    simulator: KlarnaSimulator, options: dict, field: str
) -> None:
    body = {"payment_session_url": KP_URL, "options": options}
    error = assert_klarna_error(call(simulator, "POST", SESSIONS_PATH, body), 400, "BAD_VALUE")
    assert error["error_messages"] == [f"Bad value: {field}"]
    assert simulator.session_ids() == []


@pytest.mark.parametrize(
    "url",
    [
        "https://api.playground.klarna.com/payments/v1/sessions/",
        "https://api.playground.klarna.com/payments/v1/sessions/a/b",
        "https://api.playground.klarna.com/checkout/v3/orders",
        "https://shop.example/payments/v1/sessionsX/abc",
        "ftp://api.playground.klarna.com/payments/v1/sessions/abc",
    ],
)
def test_a_payment_session_url_must_name_a_payments_session_or_a_checkout_order(
    simulator: KlarnaSimulator, url: str
) -> None:
    error = assert_klarna_error(
        call(simulator, "POST", SESSIONS_PATH, {"payment_session_url": url}), 400, "BAD_VALUE"
    )
    assert error["error_messages"] == ["Bad value: payment_session_url"]


def test_a_klarna_checkout_order_is_accepted_and_completes_with_an_order_id(
    simulator: KlarnaSimulator,
) -> None:
    response = call(simulator, "POST", SESSIONS_PATH, {"payment_session_url": KCO_URL})
    assert response.status == 201, response.data
    completed = simulator.act(response.json()["session_id"], "COMPLETED", callback=False)
    assert completed["order_id"] and completed["klarna_reference"]
    assert "authorization_token" not in completed


def test_urls_under_another_path_are_served_there_and_only_there() -> None:
    with KlarnaSimulator(replace(MANUAL, session_url_path="/hpp/v2/s")) as simulator:
        created = create(simulator)
        session_id = created["session_id"]
        assert created["session_url"] == f"{simulator.url}/hpp/v2/s/{session_id}"
        assert created["distribution_url"] == f"{created['session_url']}/distribution"
        assert simulator.session_url(session_id) == created["session_url"]
        assert call(simulator, "GET", created["session_url"]).status == 200
        assert call(simulator, "POST", created["distribution_url"], EMAIL).status == 201
        # A client that rebuilds the URL from the documented pattern does not find the session.
        documented = f"{SESSIONS_PATH}/{session_id}"
        assert_klarna_error(call(simulator, "GET", documented), 404, "NOT_FOUND")
        assert_klarna_error(call(simulator, "DELETE", documented), 404, "NOT_FOUND")
        assert_klarna_error(call(simulator, "POST", f"{documented}/distribution", EMAIL), 404, "NOT_FOUND")
        assert call(simulator, "DELETE", created["session_url"]).status == 204
        # Seeded sessions (created elsewhere) live at the documented form; later creates move on.
        seeded = simulator.add_session()
        assert call(simulator, "GET", f"{SESSIONS_PATH}/{seeded['session_id']}").status == 200
        simulator.set_session_url_path(SESSIONS_PATH)
        assert create(simulator)["session_url"].startswith(f"{simulator.url}{SESSIONS_PATH}/")
        assert call(simulator, "GET", created["session_url"]).json()["status"] == "DISABLED"


@pytest.mark.parametrize(
    "path", ["hpp/v2", "/hpp/v2/", "/pay", "/pay/x", "/_simulator/x", "/hpp/v1/sessions/x", "/hpp"]
)
def test_a_session_url_path_that_would_clash_is_refused(path: str) -> None:
    with pytest.raises(ValueError, match="session_url_path"):
        SimulatorConfig(session_url_path=path)
    with KlarnaSimulator(MANUAL) as simulator, pytest.raises(ValueError, match="session_url_path"):
        simulator.set_session_url_path(path)


def test_a_consumer_can_reach_manual_id_check_which_is_not_final(simulator: KlarnaSimulator) -> None:
    created = create(simulator)
    page = call(simulator, "POST", created["redirect_url"], raw=b"action=MANUAL_ID_CHECK", auth=False)
    assert page.status == 303
    read = call(simulator, "GET", created["session_url"]).json()
    assert read["status"] == "MANUAL_ID_CHECK"
    simulator.act(created["session_id"], "COMPLETED", callback=False)  # not final: it can still complete
