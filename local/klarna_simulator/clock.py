"""Time for the simulator: Klarna's timestamp form, from a clock that never goes backwards.

The wall clock can jump (NTP, a suspended laptop); the simulator's default time is the wall time at
start plus the monotonic time elapsed since, so the order of timestamps is the order of events. Tests
can give their own source instead (a clock they move, shared with the code under test) and set an
`offset` (Klarna's clock running ahead of the tracker's). Each session also keeps its own last
timestamp, so two changes within one millisecond still get strictly later `updated_at`s.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta


def format_timestamp(moment: datetime) -> str:
    """Klarna's form: UTC, milliseconds, `Z` (e.g. `2019-05-13T14:54:04.675Z`)."""
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def parse_timestamp(value: datetime | str) -> datetime:
    """An ISO 8601 time (or a datetime) as an aware UTC datetime; naive means UTC."""
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def truncate_to_millis(moment: datetime) -> datetime:
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


class MonotonicClock:
    """UTC now, anchored to the wall clock once and advanced by `time.monotonic()`."""

    def __init__(self) -> None:
        self._wall_start = datetime.now(UTC)
        self._monotonic_start = time.monotonic()

    def __call__(self) -> datetime:
        return self._wall_start + timedelta(seconds=time.monotonic() - self._monotonic_start)


class SimulatorClock:
    """Klarna's "now", in milliseconds: `source()` (a MonotonicClock unless given) plus `offset`."""

    def __init__(self, source: Callable[[], datetime] | None = None) -> None:
        self.source = source or MonotonicClock()
        self.offset = timedelta(0)

    def now(self) -> datetime:
        return truncate_to_millis(parse_timestamp(self.source()) + self.offset)

    def after(self, previous: datetime | None) -> datetime:
        """Now, or one millisecond after `previous` if now is not later than it."""
        now = self.now()
        if previous is not None and now <= previous:
            return previous + timedelta(milliseconds=1)
        return now
