"""The Klarna client's retries against the Klarna simulator over real HTTP (its rate limiter, faults, delays).

Timing is only ever checked as a lower bound that Klarna imposed ("not before the reset"), never as an
upper bound on how fast something ran.
"""

from collections.abc import Iterator

import pytest

from hpp_core.klarna import (
    KlarnaRateLimited,
    KlarnaTimeout,
    KlarnaUnavailable,
    RetryPolicy,
)
from local.klarna_simulator import KlarnaSimulator
from tests.support.klarna import klarna_client, simulated_klarna

SESSIONS_PATH = "/hpp/v1/sessions"


@pytest.fixture
def klarna() -> Iterator[KlarnaSimulator]:
    with simulated_klarna() as simulator:
        yield simulator


RETRY = RetryPolicy(max_attempts=4, budget_seconds=6.0, base_delay_seconds=0.05)


def test_by_default_a_read_is_one_attempt(klarna: KlarnaSimulator) -> None:
    """The callback function and the poller rely on this: they handle Klarna's failures themselves."""
    session = klarna.add_session()
    klarna.fail_next("GET", SESSIONS_PATH, status=503)
    with pytest.raises(KlarnaUnavailable):
        klarna_client(klarna).read_session(session["session_id"])
    assert len(klarna.requests) == 1


def test_reads_over_klarnas_rate_limit_wait_for_its_reset_and_all_succeed(klarna: KlarnaSimulator) -> None:
    klarna.set_rate_limits(other=1)
    sessions = [klarna.add_session()["session_id"] for _ in range(3)]
    client = klarna_client(klarna)
    assert [client.read_session(sid, retry=RETRY).session_id for sid in sessions] == sessions
    requests = klarna.requests
    limited = [i for i, r in enumerate(requests) if r.response_status == 429]
    assert limited, "the simulator's limiter was exercised"
    for i in limited:
        reset = 1.0  # the simulator's X-Ratelimit-Reset is whole seconds, at least 1
        assert requests[i + 1].monotonic - requests[i].monotonic >= reset - 0.01


def test_a_rate_limit_reset_longer_than_the_budget_is_not_waited_for(klarna: KlarnaSimulator) -> None:
    session = klarna.add_session()
    klarna.fail_always("GET", SESSIONS_PATH, status=429, headers={"X-Ratelimit-Reset": "60"})
    with pytest.raises(KlarnaRateLimited) as raised:
        klarna_client(klarna).read_session(session["session_id"], retry=RETRY)
    assert raised.value.retry_after == 60
    assert len(klarna.requests) == 1


def test_a_dropped_connection_and_a_slow_answer_are_retried(klarna: KlarnaSimulator) -> None:
    session = klarna.add_session(status="IN_PROGRESS")
    klarna.fail_next("GET", SESSIONS_PATH, status=None, disconnect=True)
    klarna.fail_next("GET", SESSIONS_PATH, status=None, delay=2.0)
    read = klarna_client(klarna, timeout=0.5).read_session(session["session_id"], retry=RETRY)
    assert read.status == "IN_PROGRESS"
    assert len(klarna.requests_to("GET")) == 3


def test_timeouts_stop_within_the_budget(klarna: KlarnaSimulator) -> None:
    session = klarna.add_session()
    klarna.fail_always("GET", SESSIONS_PATH, status=None, delay=3.0)
    budget = RetryPolicy(max_attempts=10, budget_seconds=1.2, base_delay_seconds=0.05)
    with pytest.raises(KlarnaTimeout):
        klarna_client(klarna, timeout=0.5).read_session(session["session_id"], retry=budget)
    # 0.5 + wait + 0.5 + wait: a third attempt would not fit with at least 0.2 s of its own.
    assert 2 <= len(klarna.requests) <= 3
    klarna.clear_faults()


def test_disable_is_retried_and_lands_once(klarna: KlarnaSimulator) -> None:
    session = klarna.add_session(status="WAITING")
    klarna.fail_next("DELETE", SESSIONS_PATH, status=503)
    klarna_client(klarna).disable_session(session["session_id"], retry=RETRY)
    assert klarna.read_body(session["session_id"])["status"] == "DISABLED"
    assert [r.response_status for r in klarna.requests] == [503, 204]


def test_create_is_never_retried_even_on_a_5xx(klarna: KlarnaSimulator) -> None:
    klarna.fail_next("POST", SESSIONS_PATH, status=503)
    body = {"payment_session_url": "https://api.playground.klarna.com/payments/v1/sessions/x"}
    with pytest.raises(KlarnaUnavailable):
        klarna_client(klarna).create_session(body)
    assert len(klarna.requests) == 1
    assert klarna.session_ids() == []
