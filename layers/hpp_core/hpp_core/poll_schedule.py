"""How often the poller reads a session, and when it reads more: the schedule's rules as plain functions.

Principle 5 (docs/architecture.md): the poller's cost follows the risk, not the table. How likely a
session is to have changed unseen depends on how long it has been quiet, i.e. the time since Klarna last
reported a change (its `updated_at`: the creation, for a session nobody opened). So after a poll that
found nothing new, the next one comes after a fraction of that quiet time: a small fraction while a
change is still likely (consumers open the page late, with a long tail; once they have, they finish
within minutes), a large one after, never less than a minute, and never much past `expires_at`, so that
EXPIRED is recorded promptly. Reads then grow with the logarithm of a session's life rather than with
its length: a session nobody opens costs about a dozen reads over its 47 hours, where the previous
backoff (1, 2, 4, 8, then every 15 minutes, still available as `ScheduleKind.BACKOFF`) cost about 190.

The poller also watches its own reads. A read that finds a change no callback reported is evidence that
Klarna's callbacks are not arriving; the evidence is a decaying share of recent reads, kept across runs
(`PollerState`). While it is high, the schedule is tight: every session still young (quiet for less than
its curve's `young_seconds`, so still likely to change) is read at least every `tight_cap_seconds`, and
each run catches up, reading the young sessions scheduled later than that (most recently active first)
with a share of its reads, until the evidence falls.
"""

import math
from dataclasses import dataclass, field
from enum import StrEnum

from hpp_core.models import DueSession, PollerState
from hpp_core.statuses import Status

MINUTE_MS = 60_000


class ScheduleKind(StrEnum):
    RISK = "risk"  # the default: intervals follow the quiet time; tighter while callbacks are lost
    BACKOFF = "backoff"  # the previous policy: doubling from the first interval to the maximum, always


def backoff_interval_seconds(unchanged_polls: int, *, first: int = 60, maximum: int = 900) -> int:
    """Seconds from a poll to the next, after `unchanged_polls` polls in a row found nothing new.

    0 is the interval after a recorded change (the repository's FIRST_POLL_DELAY_SECONDS); each poll that
    finds nothing doubles it up to `maximum`: with the defaults 1, 2, 4, 8, then every 15 minutes.
    """
    return min(first * (1 << min(max(unchanged_polls, 0), 32)), maximum)


@dataclass(frozen=True)
class QuietCurve:
    """The interval after an unchanged poll, as a function of how long the session has been quiet."""

    # While quiet for less than this, the session is young (a change is still likely): read at
    # `young_fraction` of the quiet time, at most `young_cap_seconds` apart.
    young_seconds: int
    young_fraction: float
    young_cap_seconds: int
    # After that, at `old_fraction` of the quiet time.
    old_fraction: float

    def is_young(self, quiet_ms: int) -> bool:
        return quiet_ms < self.young_seconds * 1000

    def interval_ms(self, quiet_ms: int) -> float:
        if self.is_young(quiet_ms):
            return min(self.young_fraction * quiet_ms, self.young_cap_seconds * 1000)
        return self.old_fraction * quiet_ms

    @property
    def longest_young_interval_ms(self) -> float:
        return min(self.young_fraction * self.young_seconds * 1000, self.young_cap_seconds * 1000)


@dataclass(frozen=True)
class EvidenceRule:
    """When the poller's own reads say callbacks are being lost, and when they say so no more."""

    # How fast old reads stop counting: the weight of a run's counts halves every this many seconds.
    half_life_seconds: float = 300.0
    # The tight schedule starts when unreported changes reach this share of recent reads ...
    on_percent: float = 2.0
    # ... and ends when they fall below this one (lower, so that it does not flap).
    off_percent: float = 1.0
    # Fewer recent reads than this count as this many: in a quiet deployment one change among a few
    # reads (a poll that beat its callback by a second) is no evidence.
    min_reads: float = 100.0


# The curves, from the journey model the poll_policy benchmark uses (bench/poll_policy.py): a consumer
# opens the page after a median 5 minutes with a long tail (97% within ~85 minutes, 99.7% within 5
# hours), and completes a median 2 minutes later (99.9% within an hour). Young, the interval doubles
# (from the minute after a change) up to an hour or half an hour; old, it grows fivefold a read.
WAITING_CURVE = QuietCurve(
    young_seconds=5 * 3600, young_fraction=1.0, young_cap_seconds=3600, old_fraction=4.0
)
HEARD_FROM_CURVE = QuietCurve(
    young_seconds=3600, young_fraction=1.0, young_cap_seconds=1800, old_fraction=4.0
)


@dataclass(frozen=True)
class PollSchedule:
    kind: ScheduleKind = ScheduleKind.RISK
    # The shortest interval (and the backoff's first step).
    first_interval_seconds: int = 60
    # The backoff's longest interval (BACKOFF, and sessions Klarna has not reported on yet).
    max_interval_seconds: int = 900
    # A session nobody has opened yet, and one that has been opened (any other status that is not final).
    waiting: QuietCurve = WAITING_CURVE
    heard_from: QuietCurve = HEARD_FROM_CURVE
    # While catching up, every young session is read at least this often.
    tight_cap_seconds: int = 1200
    # While catching up and due sessions wait, catch-up reads take at most this share of a run's reads.
    catch_up_share: float = 0.5
    # A session is read this long after its expires_at at the latest (then Klarna's 404 means EXPIRED).
    expiry_read_delay_seconds: int = 60
    evidence: EvidenceRule = field(default_factory=EvidenceRule)

    @property
    def catches_up(self) -> bool:
        """Whether the poller watches for lost callbacks at all (the previous backoff did not)."""
        return self.kind is ScheduleKind.RISK

    def next_due_at_ms(
        self, due: DueSession, now_ms: int, *, tight: bool, expires_at_ms: int | None = None
    ) -> int:
        """When to read `due` next, after a poll at `now_ms` that recorded nothing new."""
        if self.kind is ScheduleKind.BACKOFF:
            return now_ms + self._backoff_ms(due)
        next_due = now_ms + self.interval_ms(due, now_ms, tight=tight)
        if expires_at_ms is not None:
            # Not much past the expiry, so EXPIRED is recorded soon after it (at least a minute ahead).
            latest = expires_at_ms + self.expiry_read_delay_seconds * 1000
            next_due = min(next_due, max(latest, now_ms + self.first_interval_seconds * 1000))
        return next_due

    def interval_ms(self, due: DueSession, now_ms: int, *, tight: bool) -> int:
        """The interval after an unchanged poll of `due` at `now_ms` (before the expiry clamp)."""
        if not due.updated_at_ms:
            # Klarna has not reported on it yet (the tracker's own WAITING): no quiet time to go by.
            return self._backoff_ms(due)
        quiet_ms = max(0, now_ms - due.updated_at_ms)
        curve = self._curve(due.status)
        interval = curve.interval_ms(quiet_ms)
        if tight and curve.is_young(quiet_ms):
            interval = min(interval, self.tight_cap_seconds * 1000)
        return max(int(interval), self.first_interval_seconds * 1000)

    def wants_sooner(self, due: DueSession, now_ms: int) -> bool:
        """While catching up: `due` is young and scheduled later than the tight schedule would have it."""
        if not due.updated_at_ms or not self._curve(due.status).is_young(max(0, now_ms - due.updated_at_ms)):
            return False
        return due.poll_due_at > now_ms + self.interval_ms(due, now_ms, tight=True)

    @property
    def catch_up_lookahead_ms(self) -> int:
        """How far ahead a young session can be due on the normal schedule: where a catch-up looks."""
        longest = max(curve.longest_young_interval_ms for curve in self._curves)
        return max(int(longest), self.first_interval_seconds * 1000)

    @property
    def young_for_at_most_ms(self) -> int:
        """The longest a session stays young (the catch-up looks at sessions updated since then)."""
        return max(curve.young_seconds for curve in self._curves) * 1000

    @property
    def _curves(self) -> tuple[QuietCurve, QuietCurve]:
        return self.waiting, self.heard_from

    def _curve(self, status: str | None) -> QuietCurve:
        return self.waiting if status == Status.WAITING else self.heard_from

    def _backoff_ms(self, due: DueSession) -> int:
        seconds = backoff_interval_seconds(
            due.poll_attempts + 1, first=self.first_interval_seconds, maximum=self.max_interval_seconds
        )
        return seconds * 1000


# -- the evidence of lost callbacks -----------------------------------------------------------------


def evidence_percent(state: PollerState, rule: EvidenceRule) -> float:
    """Unreported changes as a share of recent reads, in percent."""
    return 100.0 * state.unreported_changes / max(state.reads, rule.min_reads)


def next_poller_state(
    state: PollerState, *, unreported_changes: int, reads: int, now_ms: int, rule: EvidenceRule
) -> PollerState:
    """The state after a run that read `reads` sessions and found `unreported_changes` among them."""
    elapsed_ms = max(0, now_ms - state.updated_at_ms)
    keep = math.pow(0.5, elapsed_ms / (rule.half_life_seconds * 1000)) if state.updated_at_ms else 0.0
    aged = PollerState(
        unreported_changes=state.unreported_changes * keep + unreported_changes,
        reads=state.reads * keep + reads,
        updated_at_ms=now_ms,
    )
    # Hysteresis: once catching up, it goes on until the evidence is clearly down again.
    threshold = rule.off_percent if state.catching_up else rule.on_percent
    return aged.model_copy(update={"catching_up": evidence_percent(aged, rule) >= threshold})
