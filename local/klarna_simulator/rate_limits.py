"""Klarna's rate limits (docs.klarna.com/api/rate-limit/): per merchant, per second, one budget for
creating sessions and one for every other call; only authenticated calls count. Every answer carries
`X-Ratelimit-Limit` (in Klarna's form, `40, 40;w=1`: the limit, then the policy of that many per one-second
window), `X-Ratelimit-Remaining` and `X-Ratelimit-Reset` (seconds); over a limit the answer is 429.

The limits can change while the simulator runs (a test turns one down, then back up).
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass

CREATE = "create"
OTHER = "other"  # Read, Disable, Distribution


def rate_limit_headers(limit: int, remaining: int = 0, reset: int = 1) -> dict[str, str]:
    """The headers Klarna sends with every answer (a 429's: `remaining` 0)."""
    return {
        "X-Ratelimit-Limit": f"{limit}, {limit};w=1",
        "X-Ratelimit-Remaining": str(remaining),
        "X-Ratelimit-Reset": str(reset),
    }


@dataclass(frozen=True)
class Quota:
    """What is left of a one-second window after a call was counted in it."""

    limit: int
    used: int
    reset: int  # whole seconds until the window ends (at least 1)

    @property
    def exceeded(self) -> bool:
        return self.used > self.limit

    def headers(self) -> list[tuple[str, str]]:
        return list(rate_limit_headers(self.limit, max(0, self.limit - self.used), self.reset).items())


class RateLimiter:
    def __init__(self, *, create: int, other: int) -> None:
        self._configured = {CREATE: create, OTHER: other}
        self._limits = dict(self._configured)
        self._windows: dict[str, tuple[int, int]] = {}  # kind -> (second, calls in it)
        self._lock = threading.Lock()

    def limit(self, kind: str) -> int:
        return self._limits[kind]

    def set_limits(self, *, create: int | None = None, other: int | None = None) -> None:
        """Change the per-second limits; one left out (None) goes back to the configured value."""
        with self._lock:
            self._limits[CREATE] = self._configured[CREATE] if create is None else create
            self._limits[OTHER] = self._configured[OTHER] if other is None else other

    def count(self, kind: str) -> Quota:
        """Count one call of this kind in the current one-second window."""
        return self._window(kind, calls=1)

    def peek(self, kind: str) -> Quota:
        """The current one-second window of this kind, counting nothing (for an answer's headers)."""
        return self._window(kind, calls=0)

    def _window(self, kind: str, *, calls: int) -> Quota:
        now = time.monotonic()
        second = math.floor(now)
        with self._lock:
            window, used = self._windows.get(kind, (second, 0))
            if window != second:
                used = 0
            used += calls
            self._windows[kind] = (second, used)
            limit = self._limits[kind]
        return Quota(limit, used, max(1, math.ceil(second + 1 - now)))
