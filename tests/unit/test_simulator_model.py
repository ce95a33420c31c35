"""The Klarna simulator's model, without HTTP: seeded journeys, chaos profiles, its clock, and its
in-process pool (Klarna's API served in memory, for unit tests)."""

from datetime import timedelta

import pytest
import urllib3

from local.klarna_simulator import IN_PROCESS_URL, KlarnaSimulator, SimulatorConfig
from local.klarna_simulator.chaos import CHAOS_PROFILES, ChaosProfile, chaos_profile
from local.klarna_simulator.clock import SimulatorClock, format_timestamp
from local.klarna_simulator.journeys import MERCHANT_DISABLE, JourneyModel, Outcome, session_rng

THINK = (0.5, 3.0)


def draw(seed: int, ordinal: int):
    return JourneyModel().draw(session_rng(seed, ordinal), THINK)


def test_the_same_seed_and_ordinal_give_the_same_journey_and_another_seed_does_not():
    first = [draw(7, n) for n in range(50)]
    again = [draw(7, n) for n in range(50)]
    other = [draw(8, n) for n in range(50)]

    assert first == again
    assert first != other


def test_journeys_reach_every_status_and_every_outcome():
    journeys = [draw(1, n) for n in range(300)]
    actions = {step.action for journey in journeys for step in journey.steps}
    outcomes = {journey.outcome for journey in journeys}

    assert actions == {"IN_PROGRESS", "FAILED", "BACK", "ERROR", "CANCELLED", "COMPLETED", MERCHANT_DISABLE}
    assert outcomes == set(Outcome)
    # A consumer who failed, went back or hit an error can try again and still complete.
    retried_then_completed = {
        journey.steps[-3].action
        for journey in journeys
        if len(journey.steps) >= 3
        and [step.action for step in journey.steps[-2:]] == ["IN_PROGRESS", "COMPLETED"]
    }
    assert {"FAILED", "BACK", "ERROR"} <= retried_then_completed
    # Some sessions are never opened and just expire.
    assert any(journey.steps == () and journey.outcome is Outcome.ABANDONED for journey in journeys)


def test_a_journey_ends_the_way_its_outcome_says():
    for n in range(300):
        journey = draw(3, n)
        last = journey.steps[-1].action if journey.steps else None
        match journey.outcome:
            case Outcome.COMPLETED | Outcome.CANCELLED:
                assert last == journey.outcome.value
            case Outcome.MERCHANT_DISABLED:
                assert last == MERCHANT_DISABLE
            case Outcome.ABANDONED:
                assert last in (None, "IN_PROGRESS", "FAILED", "BACK", "ERROR")
        assert all(THINK[0] <= step.delay <= THINK[1] for step in journey.steps)


def test_chaos_profiles_grow_from_none_to_heavy():
    none, default, heavy = (CHAOS_PROFILES[name] for name in ("none", "default", "heavy"))
    rates = [name for name in ChaosProfile.__dataclass_fields__ if name.endswith("_rate")]

    assert all(getattr(none, rate) == 0 for rate in rates)
    assert all(0 < getattr(default, rate) < getattr(heavy, rate) <= 1 for rate in rates)


def test_chaos_overrides_parse_command_line_values_and_reject_nonsense():
    profile = chaos_profile("default", {"callback_drop_rate": "0.5", "read_slow_seconds": "1:4"})
    assert (profile.callback_drop_rate, profile.read_slow_seconds) == (0.5, (1.0, 4.0))
    assert profile.name == "default+custom"

    with pytest.raises(ValueError, match="unknown chaos setting 'drop'"):
        chaos_profile("default", {"drop": "1"})
    with pytest.raises(ValueError, match="between 0 and 1"):
        chaos_profile("none", {"callback_drop_rate": "1.5"})
    with pytest.raises(ValueError, match="unknown chaos profile 'wild'"):
        chaos_profile("wild")


def test_the_clock_gives_strictly_later_times_even_within_one_millisecond():
    clock = SimulatorClock()
    first = clock.now()
    later = [clock.after(first)]
    for _ in range(50):
        later.append(clock.after(later[-1]))

    assert all(b >= a + timedelta(milliseconds=1) for a, b in zip([first, *later], later, strict=False))


def test_timestamps_are_klarnas_form():
    stamp = format_timestamp(SimulatorClock().now())
    assert len(stamp) == len("2019-05-13T14:54:04.675Z")
    assert stamp.endswith("Z")
    assert stamp[19] == "."


def test_the_in_process_pool_serves_klarnas_api_without_a_socket():
    simulator = KlarnaSimulator(SimulatorConfig(journeys="manual"))  # never started
    pool, auth = simulator.in_process_pool(), simulator.auth_header()
    body = {"payment_session_url": "https://api.playground.klarna.com/payments/v1/sessions/1"}
    created = pool.request("POST", f"{simulator.url}/hpp/v1/sessions", json=body, headers=auth)
    assert created.status == 201
    session_url = created.json()["session_url"]
    assert session_url.startswith(IN_PROCESS_URL)

    read = pool.request("GET", session_url, headers=auth)
    assert (read.status, read.headers["Content-Type"], read.json()["status"]) == (
        200,
        "application/json",
        "WAITING",
    )
    assert read.headers["Klarna-Correlation-Id"]
    assert pool.request("GET", session_url).status == 401
    simulator.fail_next("GET", None, disconnect=True)
    with pytest.raises(urllib3.exceptions.ProtocolError):
        pool.request("GET", session_url, headers=auth)
    with pytest.raises(urllib3.exceptions.ProtocolError, match="serves"):
        pool.request("GET", "https://api.klarna.com/hpp/v1/sessions/x", headers=auth)
    assert [request.response_status for request in simulator.requests] == [201, 200, 401, None]
