"""The poller's shared rate limiter: pacing without bursts, a shared pause on 429, deadlines, cancel."""

import itertools
import threading
import time

import pytest

from hpp_core.rate_limit import DEFAULT_PAUSE_SECONDS, RATE_HEADROOM, RateLimiter


class FakeTime:
    """A clock that only moves when someone waits."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.waits: list[float] = []

    def clock(self) -> float:
        return self.now

    def wait(self, seconds: float) -> bool:
        self.waits.append(seconds)
        self.now += seconds
        return False


def limiter(rate: float, fake: FakeTime, **kwargs: float) -> RateLimiter:
    return RateLimiter(rate, clock=fake.clock, wait=fake.wait, **kwargs)


def grant_times(limit: RateLimiter, fake: FakeTime, count: int) -> list[float]:
    times = []
    for _ in range(count):
        assert limit.acquire(deadline=float("inf"))
        times.append(fake.now)
    return times


def test_grants_are_spaced_evenly_with_no_initial_burst() -> None:
    fake = FakeTime()
    times = grant_times(limiter(20, fake), fake, 41)
    interval = 1 / (20 * RATE_HEADROOM)
    assert times[0] == 1000.0, "the first grant is immediate"
    assert all(b - a == pytest.approx(interval) for a, b in itertools.pairwise(times))
    # Any one-second window holds at most the rate.
    assert max(sum(1 for t in times if start <= t < start + 1) for start in times) <= 20


def test_time_not_used_is_not_saved_up_for_a_burst() -> None:
    fake = FakeTime()
    limit = limiter(10, fake)
    grant_times(limit, fake, 1)
    fake.now += 60  # a minute without requests
    times = grant_times(limit, fake, 5)
    assert times[1] - times[0] == pytest.approx(1 / (10 * RATE_HEADROOM))


def test_a_late_worker_does_not_let_the_next_ones_catch_up() -> None:
    fake = FakeTime()
    limit = limiter(10, fake)
    grant_times(limit, fake, 2)
    fake.now += 0.35  # the process stalled for a few intervals
    times = grant_times(limit, fake, 4)
    interval = 1 / (10 * RATE_HEADROOM)
    assert all(b - a == pytest.approx(interval) for a, b in itertools.pairwise(times)), "no clump after"


def test_a_grant_past_the_deadline_is_refused_and_costs_nothing() -> None:
    fake = FakeTime()
    limit = limiter(1, fake)
    assert limit.acquire(deadline=fake.now)
    assert not limit.acquire(deadline=fake.now + 0.5), "the next grant is ~1.05 s away"
    assert fake.waits == [], "a refused grant does not wait"
    assert limit.acquire(deadline=fake.now + 2)


def test_429_pauses_everyone_for_retry_after_and_halves_the_rate() -> None:
    fake = FakeTime()
    limit = limiter(20, fake)
    grant_times(limit, fake, 3)
    refused_at = fake.now
    limit.slow_down(retry_after=3)
    (next_grant,) = grant_times(limit, fake, 1)
    assert next_grant >= refused_at + 3
    assert limit.rate_per_second == pytest.approx(20 * RATE_HEADROOM / 2)


def test_429_without_retry_after_pauses_the_default() -> None:
    fake = FakeTime()
    limit = limiter(20, fake)
    grant_times(limit, fake, 1)
    limit.slow_down(retry_after=None)
    (next_grant,) = grant_times(limit, fake, 1)
    assert next_grant >= 1000.0 + DEFAULT_PAUSE_SECONDS


def test_429s_of_one_burst_halve_the_rate_once() -> None:
    fake = FakeTime()
    limit = limiter(20, fake)
    for _ in range(5):
        limit.slow_down(retry_after=1)
    assert limit.rate_per_second == pytest.approx(20 * RATE_HEADROOM / 2)
    fake.now += 2
    limit.slow_down(retry_after=1)  # a new pause: a new signal
    assert limit.rate_per_second == pytest.approx(20 * RATE_HEADROOM / 4)


def test_the_rate_never_drops_below_the_floor() -> None:
    fake = FakeTime()
    limit = limiter(20, fake, min_rate_per_second=2)
    for _ in range(10):
        fake.now += 10
        limit.slow_down(retry_after=0)
    assert limit.rate_per_second == pytest.approx(2 * RATE_HEADROOM)


def test_cancel_refuses_grants_and_wakes_waiters() -> None:
    limit = RateLimiter(0.1)  # real clock: the second grant is ~10 s away
    assert limit.acquire(deadline=time.monotonic() + 60)
    results: list[bool] = []
    waiter = threading.Thread(target=lambda: results.append(limit.acquire(deadline=time.monotonic() + 60)))
    waiter.start()
    time.sleep(0.05)
    limit.cancel()
    waiter.join(timeout=5)
    assert not waiter.is_alive(), "cancel() woke the waiting worker"
    assert results == [False]
    assert not limit.acquire(deadline=float("inf"))


def test_grants_stay_paced_across_threads() -> None:
    limit = RateLimiter(100)
    grants: list[float] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(8):
            assert limit.acquire(deadline=time.monotonic() + 30)
            with lock:
                grants.append(time.monotonic())

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    grants.sort()
    assert len(grants) == 48
    # Each grant has its own slot: 48 grants span 47 intervals (thread wake-ups add a little jitter
    # to each recorded time, so single gaps are not compared; a race handing out a slot twice would
    # shorten the span by whole intervals).
    interval = 1 / (100 * RATE_HEADROOM)
    assert grants[-1] - grants[0] >= 47 * interval - 0.02


def test_a_pause_during_a_wait_sends_the_waiter_after_the_pause() -> None:
    limit = RateLimiter(4)  # real clock, slots ~0.26 s apart
    assert limit.acquire(deadline=time.monotonic() + 10)
    granted: list[float] = []

    def wait_for_grant() -> None:
        assert limit.acquire(time.monotonic() + 10)
        granted.append(time.monotonic())

    waiter = threading.Thread(target=wait_for_grant)
    waiter.start()
    time.sleep(0.05)
    paused_at = time.monotonic()
    limit.slow_down(retry_after=0.6)
    waiter.join(timeout=10)
    assert granted and granted[0] >= paused_at + 0.6, "the slot planned before the 429 was not used"


def test_rate_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        RateLimiter(0)
