"""The Klarna client's retries against the fake Klarna over real HTTP (its rate limiter, faults, delays).

Timing is only ever checked as a lower bound that Klarna imposed ("not before the reset"), never as an
upper bound on how fast something ran.
"""

from collections.abc import Iterator

import pytest

from hpp_core.klarna import (
    KlarnaClient,
    KlarnaCredentials,
    KlarnaRateLimited,
    KlarnaTimeout,
    KlarnaUnavailable,
    RetryPolicy,
)
from tests.support.fake_klarna import FakeKlarna

SESSIONS_PATH = "/hpp/v1/sessions"


@pytest.fixture
def klarna() -> Iterator[FakeKlarna]:
    with FakeKlarna() as fake:
        yield fake


def client_for(fake: FakeKlarna, timeout: float = 1.0) -> KlarnaClient:
    credentials = KlarnaCredentials(username=fake.username, password=fake.password)
    return KlarnaClient(fake.base_url, lambda: credentials, timeout_seconds=timeout)


RETRY = RetryPolicy(max_attempts=4, budget_seconds=6.0, base_delay_seconds=0.05)


def test_by_default_a_read_is_one_attempt(klarna: FakeKlarna) -> None:
    """The callback function and the poller rely on this: they handle Klarna's failures themselves."""
    session = klarna.add_session()
    klarna.fail_next("GET", SESSIONS_PATH, status=503)
    with pytest.raises(KlarnaUnavailable):
        client_for(klarna).read_session(session["session_id"])
    assert len(klarna.requests) == 1


def test_reads_over_klarnas_rate_limit_wait_for_its_reset_and_all_succeed(klarna: FakeKlarna) -> None:
    klarna.rate_limit_per_second = 1
    sessions = [klarna.add_session()["session_id"] for _ in range(3)]
    client = client_for(klarna)
    assert [client.read_session(sid, retry=RETRY).session_id for sid in sessions] == sessions
    requests = klarna.requests
    limited = [i for i, r in enumerate(requests) if r.response_status == 429]
    assert limited, "the fake's limiter was exercised"
    for i in limited:
        reset = 1.0  # the fake's X-Ratelimit-Reset is whole seconds, at least 1
        assert requests[i + 1].monotonic - requests[i].monotonic >= reset - 0.01


def test_a_rate_limit_reset_longer_than_the_budget_is_not_waited_for(klarna: FakeKlarna) -> None:
    session = klarna.add_session()
    klarna.fail_always("GET", SESSIONS_PATH, status=429, headers={"X-Ratelimit-Reset": "60"})
    with pytest.raises(KlarnaRateLimited) as raised:
        client_for(klarna).read_session(session["session_id"], retry=RETRY)
    assert raised.value.retry_after == 60
    assert len(klarna.requests) == 1


def test_a_dropped_connection_and_a_slow_answer_are_retried(klarna: FakeKlarna) -> None:
    session = klarna.add_session(status="IN_PROGRESS")
    klarna.fail_next("GET", SESSIONS_PATH, status=None, disconnect=True)
    klarna.fail_next("GET", SESSIONS_PATH, status=None, delay=2.0)
    read = client_for(klarna, timeout=0.5).read_session(session["session_id"], retry=RETRY)
    assert read.status == "IN_PROGRESS"
    assert len(klarna.requests_to("GET")) == 3


def test_timeouts_stop_within_the_budget(klarna: FakeKlarna) -> None:
    session = klarna.add_session()
    klarna.fail_always("GET", SESSIONS_PATH, status=None, delay=3.0)
    budget = RetryPolicy(max_attempts=10, budget_seconds=1.2, base_delay_seconds=0.05)
    with pytest.raises(KlarnaTimeout):
        client_for(klarna, timeout=0.5).read_session(session["session_id"], retry=budget)
    # 0.5 + wait + 0.5 + wait: a third attempt would not fit with at least 0.2 s of its own.
    assert 2 <= len(klarna.requests) <= 3
    klarna.clear_faults()


def test_disable_is_retried_and_lands_once(klarna: FakeKlarna) -> None:
    session = klarna.add_session(status="WAITING")
    klarna.fail_next("DELETE", SESSIONS_PATH, status=503)
    client_for(klarna).disable_session(session["session_id"], retry=RETRY)
    assert klarna.sessions[session["session_id"]]["status"] == "DISABLED"
    assert [r.response_status for r in klarna.requests] == [503, 204]


def test_create_is_never_retried_even_on_a_5xx(klarna: FakeKlarna) -> None:
    klarna.fail_next("POST", SESSIONS_PATH, status=503)
    body = {"payment_session_url": "https://api.playground.klarna.com/payments/v1/sessions/x"}
    with pytest.raises(KlarnaUnavailable):
        client_for(klarna).create_session(body)
    assert len(klarna.requests) == 1
    assert klarna.sessions == {}
