"""A rate limiter shared by the poller's worker threads: a token bucket that holds a single token.

Holding one token means no bursts: grants are spaced at least 1/rate apart, so no one-second window
sees more than the rate. The spacing is measured from when the previous grant was actually handed out,
not from a slot planned in advance: a worker that wakes late (a stalled process, a busy interpreter)
never lets the ones planned after it go out in a clump. A 429 from Klarna pauses every worker until
its Retry-After / X-Ratelimit-Reset has passed and halves the rate for the rest of the run.
Hand-written because the two things the poller needs besides pacing, a shared pause and a deadline past
which a worker gives up waiting, are not what the rate-limit libraries offer.
"""

import threading
import time
from collections.abc import Callable

# A 429 without Retry-After / X-Ratelimit-Reset: wait this long (Klarna's limits are per second).
DEFAULT_PAUSE_SECONDS = 1.0
# Requests reach Klarna with a few milliseconds of jitter (threads, the network); pacing this much under
# the configured rate keeps every one-second window, as Klarna counts it, at or under that rate.
RATE_HEADROOM = 0.95


class RateLimiter:
    def __init__(
        self,
        rate_per_second: float,
        *,
        min_rate_per_second: float = 1.0,
        headroom: float = RATE_HEADROOM,
        clock: Callable[[], float] = time.monotonic,
        wait: Callable[[float], bool] | None = None,
    ) -> None:
        if rate_per_second <= 0:
            raise ValueError("rate_per_second must be positive")
        self._interval = 1.0 / (rate_per_second * headroom)
        self._max_interval = max(self._interval, 1.0 / (min(min_rate_per_second, rate_per_second) * headroom))
        self._clock = clock
        self._cancelled = threading.Event()
        # Returns True when the wait was cut short by cancel(); tests substitute a fake clock's sleep.
        self._wait = wait or self._cancelled.wait
        self._lock = threading.Lock()
        self._last_grant = float("-inf")
        self._paused_until = float("-inf")

    @property
    def rate_per_second(self) -> float:
        """The rate grants are currently spaced for (after any slow-down, before headroom)."""
        with self._lock:
            return 1.0 / self._interval

    def now(self) -> float:
        """The limiter's clock (deadlines given to `acquire` are on it)."""
        return self._clock()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def acquire(self, deadline: float) -> bool:
        """Wait for the next grant; False if it would come after `deadline` (clock time) or on cancel()."""
        while not self._cancelled.is_set():
            with self._lock:
                now = self._clock()
                ready_at = max(now, self._last_grant + self._interval, self._paused_until)
                if ready_at > deadline:
                    return False
                if ready_at <= now:
                    self._last_grant = now
                    return True
            # Then look again: another worker may have taken this grant, or a 429 paused everyone.
            if self._wait(ready_at - now):
                return False
        return False

    def slow_down(self, retry_after: float | None) -> None:
        """Klarna answered 429: everyone waits `retry_after` seconds; the rate halves once per pause."""
        with self._lock:
            now = self._clock()
            if now >= self._paused_until:
                # Several workers can be refused in the same burst: that is one signal, not several.
                self._interval = min(self._interval * 2, self._max_interval)
            pause = DEFAULT_PAUSE_SECONDS if retry_after is None else retry_after
            self._paused_until = max(self._paused_until, now + pause)

    def cancel(self) -> None:
        """Wake every waiting worker and refuse all further grants (the run is stopping)."""
        self._cancelled.set()
