"""The retry loop for idempotent Klarna calls, on a fake clock: no test here waits for real time."""

from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from hpp_core.klarna import (
    NO_RETRY,
    KlarnaAuthFailed,
    KlarnaBadResponse,
    KlarnaError,
    KlarnaNotFound,
    KlarnaRateLimited,
    KlarnaRejected,
    KlarnaTimeout,
    KlarnaUnavailable,
    RetryPolicy,
    call_with_retry,
)


@dataclass
class FakeTime:
    now: float = 1000.0
    sleeps: list[float] = field(default_factory=list)

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@dataclass
class ScriptedCall:
    """Answers each attempt from a script: an exception to raise, or a value to return.

    A KlarnaTimeout uses up the attempt's whole timeout on the fake clock; anything else `cost` seconds.
    """

    time: FakeTime
    script: list[object]
    cost: float = 0.01
    timeouts: list[float] = field(default_factory=list)

    def __call__(self, timeout: float) -> object:
        self.timeouts.append(timeout)
        outcome = self.script.pop(0)
        if isinstance(outcome, KlarnaTimeout):
            self.time.now += timeout
            raise outcome
        self.time.now += self.cost
        if isinstance(outcome, Exception):
            raise outcome
        return outcome


def policy(time: FakeTime, jitter: float = 1.0, **kwargs: object) -> RetryPolicy:
    fields: dict[str, object] = {"max_attempts": 4, "budget_seconds": 10.0, "base_delay_seconds": 0.1}
    fields.update(kwargs)
    return RetryPolicy(sleep=time.sleep, clock=time.clock, jitter=lambda: jitter, **fields)  # type: ignore[arg-type]


def run(call: Callable[[float], object], retry: RetryPolicy, timeout: float = 1.5) -> object:
    return call_with_retry(call, timeout_seconds=timeout, policy=retry)


def unavailable(status: int = 503) -> KlarnaUnavailable:
    return KlarnaUnavailable("Klarna read session failed", http_status=status)


def test_no_retry_is_one_attempt_with_the_clients_timeout() -> None:
    time = FakeTime()
    call = ScriptedCall(time, [unavailable()])
    with pytest.raises(KlarnaUnavailable):
        run(call, NO_RETRY)
    assert call.timeouts == [1.5]
    assert time.sleeps == []


def test_5xx_then_success_backs_off_exponentially() -> None:
    time = FakeTime()
    call = ScriptedCall(time, [unavailable(500), unavailable(502), "session"])
    assert run(call, policy(time, jitter=1.0)) == "session"
    assert time.sleeps == pytest.approx([0.1, 0.2])
    assert len(call.timeouts) == 3


@pytest.mark.parametrize("jitter", [0.0, 0.25, 0.999])
def test_full_jitter_spreads_the_wait_over_zero_to_the_capped_backoff(jitter: float) -> None:
    time = FakeTime()
    call = ScriptedCall(time, [unavailable()] * 5 + ["ok"])
    retry = policy(
        time,
        jitter=jitter,
        max_attempts=6,
        budget_seconds=30.0,
        base_delay_seconds=1.0,
        max_delay_seconds=3.0,
    )
    assert run(call, retry, timeout=0.5) == "ok"
    caps = [1.0, 2.0, 3.0, 3.0, 3.0]  # 1, 2, 4 -> capped at 3
    assert time.sleeps == pytest.approx([jitter * cap for cap in caps])


def test_timeouts_and_connection_failures_are_retried() -> None:
    time = FakeTime()
    dropped = KlarnaUnavailable("Klarna read session: connection failed")
    call = ScriptedCall(time, [KlarnaTimeout("no answer"), dropped, "ok"])
    assert run(call, policy(time), timeout=1.0) == "ok"
    assert len(call.timeouts) == 3


@pytest.mark.parametrize(("jitter", "expected"), [(0.0, 1.5), (1.0, 1.6)])
def test_rate_limit_waits_at_least_what_klarna_said(jitter: float, expected: float) -> None:
    time = FakeTime()
    call = ScriptedCall(time, [KlarnaRateLimited("rate limited", http_status=429, retry_after=1.5), "ok"])
    assert run(call, policy(time, jitter=jitter)) == "ok"
    assert time.sleeps == pytest.approx([expected])


def test_rate_limit_without_a_header_uses_the_backoff() -> None:
    time = FakeTime()
    call = ScriptedCall(time, [KlarnaRateLimited("rate limited", http_status=429), "ok"])
    assert run(call, policy(time, jitter=0.5)) == "ok"
    assert time.sleeps == pytest.approx([0.05])


@pytest.mark.parametrize(
    "error",
    [
        KlarnaNotFound("gone", http_status=404),
        KlarnaRejected("no", http_status=400),
        KlarnaAuthFailed("creds", http_status=401),
        KlarnaBadResponse("garbage", http_status=200),
    ],
)
def test_answers_are_not_retried(error: KlarnaError) -> None:
    time = FakeTime()
    call = ScriptedCall(time, [error, "never reached"])
    with pytest.raises(type(error)) as raised:
        run(call, policy(time))
    assert raised.value is error
    assert len(call.timeouts) == 1
    assert time.sleeps == []


def test_attempts_exhausted_raises_the_last_error() -> None:
    time = FakeTime()
    errors = [unavailable(500), unavailable(502), unavailable(503), unavailable(504)]
    call = ScriptedCall(time, list(errors))
    with pytest.raises(KlarnaUnavailable) as raised:
        run(call, policy(time, max_attempts=4))
    assert raised.value is errors[-1]
    assert len(call.timeouts) == 4
    assert len(time.sleeps) == 3


def test_each_attempt_gets_at_most_the_time_left_and_the_loop_stays_within_its_budget() -> None:
    time = FakeTime()
    start = time.now
    call = ScriptedCall(time, [KlarnaTimeout("slow")] * 10)
    retry = policy(time, jitter=1.0, max_attempts=10, budget_seconds=2.0, min_attempt_seconds=0.2)
    with pytest.raises(KlarnaTimeout):
        run(call, retry, timeout=0.8)
    # 0.8 (t=0.8), wait 0.1, 0.8 (t=1.7)... then 0.2 left is not enough for a 0.4 wait plus an attempt.
    assert call.timeouts == pytest.approx([0.8, 0.8])
    assert time.now - start <= 2.0
    # With the same script but a larger budget, the last attempt is cut to what remains.
    time2 = FakeTime()
    call2 = ScriptedCall(time2, [KlarnaTimeout("slow")] * 10)
    retry2 = policy(time2, jitter=1.0, max_attempts=3, budget_seconds=2.0, base_delay_seconds=0.05)
    with pytest.raises(KlarnaTimeout):
        run(call2, retry2, timeout=0.8)
    assert call2.timeouts == pytest.approx([0.8, 0.8, 2.0 - 0.8 - 0.05 - 0.8 - 0.1])


def test_a_retry_after_beyond_the_budget_gives_up_at_once_with_the_429() -> None:
    time = FakeTime()
    limited = KlarnaRateLimited("rate limited", http_status=429, retry_after=30.0)
    call = ScriptedCall(time, [limited, "never reached"])
    with pytest.raises(KlarnaRateLimited) as raised:
        run(call, policy(time, budget_seconds=5.0))
    assert raised.value.retry_after == 30.0  # the caller can pass it on as Retry-After
    assert time.sleeps == []


def test_within_bounds_the_loop_by_an_absolute_deadline_too() -> None:
    time = FakeTime()
    call = ScriptedCall(time, [KlarnaTimeout("slow")] * 10)
    retry = policy(time, max_attempts=10, budget_seconds=60.0).within(1.0)
    with pytest.raises(KlarnaTimeout):
        run(call, retry, timeout=1.5)
    assert call.timeouts == pytest.approx([1.0])


def test_the_first_attempt_runs_even_past_the_deadline() -> None:
    time = FakeTime()
    retry = policy(time, min_attempt_seconds=0.25).within(-5.0)
    call = ScriptedCall(time, ["ok"])
    assert run(call, retry) == "ok"
    assert call.timeouts == [0.25]


def test_on_retry_hears_each_retry_before_the_wait() -> None:
    time = FakeTime()
    heard: list[tuple[int | None, int, float, int]] = []
    retry = RetryPolicy(
        max_attempts=3,
        budget_seconds=10.0,
        sleep=time.sleep,
        clock=time.clock,
        jitter=lambda: 1.0,
        on_retry=lambda error, attempt, delay: heard.append(
            (error.http_status, attempt, delay, len(time.sleeps))
        ),
    )
    call = ScriptedCall(time, [unavailable(500), unavailable(503), "ok"])
    assert run(call, retry) == "ok"
    assert [(status, attempt, round(delay, 6), sleeps) for status, attempt, delay, sleeps in heard] == [
        (500, 1, 0.1, 0),
        (503, 2, 0.2, 1),
    ]
