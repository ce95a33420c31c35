"""The reconciliation poller: read every not-final, due session from Klarna and record what it says.

Klarna gives up on a callback after four tries; this is the safety net. A run reads the due index
(only not-final sessions are in it, keyed by shard and due time), asks Klarna about each due session
through a few reader threads paced by a shared rate limiter, and records each answer on writer threads
(so a DynamoDB write never holds up the next read) through the one conditional write (the
`StatusRecorder` port), so a poll never overwrites a newer callback and a callback never loses to an
older poll. A session with nothing new is rescheduled with a growing interval;
a recorded change (from anywhere) resets it. Runs stop taking work before the Lambda's time runs out and
leave the rest due for the next run.

Expiry: Klarna answers 404 for an expired session and has no EXPIRED status. The tracker records its own
final EXPIRED when Klarna answers 404 after `expires_at`, or when a session is still not final
`expiry_grace_seconds` after `expires_at`. EXPIRED is stamped with `expires_at` (or the last known
update, if that is later), never with the tracker's clock: it must not look older than anything Klarna
said, or the conditional write would refuse it, and it must be the same in every run that writes it.
"""

import heapq
import queue
import threading
from collections import Counter, deque
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, ThreadPoolExecutor, wait
from contextlib import ExitStack, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Self

from pydantic import Field, model_validator

from hpp_core.errors import DependencyError, StorageUnavailable
from hpp_core.klarna import (
    NO_RETRY,
    KlarnaAuthFailed,
    KlarnaError,
    KlarnaNotFound,
    KlarnaRateLimited,
    RetryPolicy,
)
from hpp_core.models import (
    DuePage,
    DueSession,
    KlarnaSession,
    PageKey,
    PollerState,
    StatusUpdate,
    WriteOutcome,
)
from hpp_core.poll_schedule import (
    EvidenceRule,
    PollSchedule,
    ScheduleKind,
    evidence_percent,
    next_poller_state,
)
from hpp_core.ports import KlarnaReader, PollerStateStore, PollStore
from hpp_core.rate_limit import RateLimiter
from hpp_core.settings import Settings, StateSettings
from hpp_core.statuses import Status, is_final
from hpp_core.timestamps import to_epoch_millis, utc_now

# Index items fetched per Query of due sessions; the next page of a shard is fetched while this one is
# polled, so a run that stops early has read at most two pages per shard too many.
PAGE_SIZE = 100
# Index items evaluated per Query of a catch-up scan (DynamoDB also stops a page at 1 MB).
CATCH_UP_PAGE_SIZE = 1000
# Per-session problems kept for the run's log (counts are always complete; this only bounds log lines).
MAX_PROBLEMS_REPORTED = 50
# Sessions in hand, not yet read, per Klarna read in flight.
SESSIONS_AHEAD_PER_READ = 2
# Threads recording Klarna's answers in DynamoDB, per Klarna read in flight.
WRITERS_PER_READER = 2
# Threads that read the due index ahead of need (the first page of every shard at once, then the next).
INDEX_THREADS = 4
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class PollerSettings(Settings, StateSettings):
    """The poller function's environment: the tables, Klarna, and how hard and how often to poll."""

    # Klarna reads in flight at once, one reader thread each (the Klarna client keeps up to 16 connections).
    poll_concurrency: int = Field(alias="POLL_CONCURRENCY", default=10, ge=1, le=16)
    # The share of Klarna's read limit (200/s production, 50/s playground) this tracker may use.
    poll_rate_per_second: float = Field(alias="POLL_RATE_PER_SECOND", default=20.0, gt=0, le=200)
    # No new session is started with less than this left of the invocation's time.
    poll_time_margin_seconds: float = Field(alias="POLL_TIME_MARGIN_SECONDS", default=10.0, gt=0, le=300)
    # `risk` (intervals follow each session's quiet time; tighter while callbacks are lost) or
    # `backoff` (the previous policy: doubling from FIRST_POLL_DELAY_SECONDS to POLL_MAX_INTERVAL_SECONDS).
    poll_schedule: ScheduleKind = Field(alias="POLL_SCHEDULE", default=ScheduleKind.RISK)
    # The backoff's longest interval (`backoff`, and sessions Klarna has not reported on yet).
    poll_max_interval_seconds: int = Field(alias="POLL_MAX_INTERVAL_SECONDS", default=900, ge=1, le=86_400)
    # While catching up, every session still likely to change is read at least this often.
    poll_tight_interval_seconds: int = Field(
        alias="POLL_TIGHT_INTERVAL_SECONDS", default=1200, ge=60, le=86_400
    )
    # Catching up starts when unreported changes reach this share of recent reads, ends below the other.
    poll_evidence_on_percent: float = Field(alias="POLL_EVIDENCE_ON_PERCENT", default=2.0, gt=0, le=100)
    poll_evidence_off_percent: float = Field(alias="POLL_EVIDENCE_OFF_PERCENT", default=1.0, gt=0, le=100)
    # The share of a run's reads catch-up may take while due sessions wait.
    poll_catch_up_share: float = Field(alias="POLL_CATCH_UP_SHARE", default=0.5, ge=0, le=1)
    # 404s before expires_at tolerated before the session is parked until it has expired.
    poll_not_found_attempts: int = Field(alias="POLL_NOT_FOUND_ATTEMPTS", default=3, ge=1, le=50)
    # A session still not final this long after expires_at is recorded EXPIRED whatever Klarna says.
    expiry_grace_seconds: int = Field(alias="EXPIRY_GRACE_SECONDS", default=3600, ge=0, le=7 * 86_400)

    @model_validator(mode="after")
    def _margin_outlasts_a_klarna_call(self) -> Self:
        if self.poll_time_margin_seconds <= self.klarna_timeout_seconds:
            raise ValueError(
                "POLL_TIME_MARGIN_SECONDS must be larger than KLARNA_TIMEOUT_SECONDS, so that a Klarna call "
                "started just before the margin still ends before the function's timeout"
            )
        return self

    @model_validator(mode="after")
    def _evidence_thresholds_in_order(self) -> Self:
        if self.poll_evidence_off_percent > self.poll_evidence_on_percent:
            raise ValueError(
                "POLL_EVIDENCE_OFF_PERCENT must not be larger than POLL_EVIDENCE_ON_PERCENT, or catching up "
                "would stop as soon as it started"
            )
        return self

    def policy(self) -> "PollPolicy":
        schedule = PollSchedule(
            kind=self.poll_schedule,
            first_interval_seconds=self.first_poll_delay_seconds,
            max_interval_seconds=self.poll_max_interval_seconds,
            tight_cap_seconds=self.poll_tight_interval_seconds,
            catch_up_share=self.poll_catch_up_share,
            evidence=EvidenceRule(
                on_percent=self.poll_evidence_on_percent, off_percent=self.poll_evidence_off_percent
            ),
        )
        return PollPolicy(
            concurrency=self.poll_concurrency,
            rate_per_second=self.poll_rate_per_second,
            time_margin_seconds=self.poll_time_margin_seconds,
            not_found_attempts=self.poll_not_found_attempts,
            expiry_grace_seconds=self.expiry_grace_seconds,
            schedule=schedule,
        )


@dataclass(frozen=True)
class PollPolicy:
    concurrency: int = 10
    rate_per_second: float = 20.0
    time_margin_seconds: float = 10.0
    not_found_attempts: int = 3
    expiry_grace_seconds: int = 3600
    page_size: int = PAGE_SIZE
    schedule: PollSchedule = field(default_factory=PollSchedule)


# -- pure rules -------------------------------------------------------------------------------------


def expired_stamp_ms(expires_at_ms: int, *known_updates_ms: int | None) -> int:
    """The `updated_at` of a tracker-recorded EXPIRED: `expires_at`, or the last known update if later.

    Never the tracker's clock: a stamp older than something Klarna reported would make the conditional
    write refuse EXPIRED as stale (and the session would be polled forever); one taken from data makes
    every run that expires the session write the same value.
    """
    return max([expires_at_ms, *(known for known in known_updates_ms if known is not None)])


def from_epoch_millis(ms: int) -> datetime:
    return _EPOCH + timedelta(milliseconds=ms)


def expired_update(session_id: str, expires_at: datetime, *known_updates_ms: int | None) -> StatusUpdate:
    stamp = from_epoch_millis(expired_stamp_ms(to_epoch_millis(expires_at), *known_updates_ms))
    session = KlarnaSession(
        session_id=session_id, status=Status.EXPIRED.value, updated_at=stamp, expires_at=expires_at
    )
    return StatusUpdate(session=session, source="poller")


# -- one session ------------------------------------------------------------------------------------


class PollOutcome(StrEnum):
    CHANGED = "changed"  # Klarna's answer was newer and is recorded (the repository reset the schedule)
    UNCHANGED = "unchanged"  # nothing new: the next poll is pushed out (backoff)
    EXPIRED = "expired"  # the tracker recorded EXPIRED (final)
    NOT_FOUND = "not_found"  # 404 before expires_at: asked again later
    PARKED = "parked"  # 404 too often before expires_at: next asked once it has expired
    GIVEN_UP = "given_up"  # 404 too often and no expires_at on file: no longer polled
    SUPERSEDED = "superseded"  # the row changed meanwhile (callback, other run): its own schedule stands
    ERROR = "error"  # Klarna or DynamoDB failed for this session: backed off, or left due
    THROTTLED = "throttled"  # 429: left due; the whole run slowed down
    AUTH_FAILED = "auth_failed"  # 401/403 or unreadable credentials: the run stops
    LEFT_DUE = "left_due"  # not polled: the run stopped first (time budget, credentials)


@dataclass(frozen=True)
class SessionResult:
    session_id: str
    outcome: PollOutcome
    error_kind: str | None = None
    error: KlarnaError | Exception | None = None
    retry_after: float | None = None
    # The poll found a status no callback had reported: evidence that callbacks are being lost.
    unreported_change: bool = False


def poll_session(
    due: DueSession,
    *,
    store: PollStore,
    klarna: KlarnaReader,
    policy: PollPolicy,
    clock: Callable[[], datetime] = utc_now,
    tight: bool = False,
) -> SessionResult:
    """Ask Klarna about one due session and record what follows from the answer.

    `tight`: the run is catching up (callbacks are being lost), so an unchanged session is rescheduled
    on the tight schedule.
    """
    read = read_due_session(due, klarna)
    if isinstance(read, SessionResult):
        return read
    return record_read(read, store=store, policy=policy, clock=clock, tight=tight)


@dataclass(frozen=True)
class KlarnaRead:
    """What Klarna answered about a due session: the session, or the error it answered with."""

    due: DueSession
    answer: KlarnaSession | KlarnaError


def read_due_session(due: DueSession, klarna: KlarnaReader) -> KlarnaRead | SessionResult:
    """The first half of a poll: Klarna's answer, or the result when there is nothing to record."""
    if due.status is not None and is_final(due.status):
        return SessionResult(due.session_id, PollOutcome.SUPERSEDED)  # a stale index copy
    try:
        return KlarnaRead(due, klarna.read_session(due.session_id, url=due.session_url))
    except KlarnaRateLimited as exc:
        return SessionResult(due.session_id, PollOutcome.THROTTLED, retry_after=exc.retry_after)
    except KlarnaAuthFailed as exc:
        return SessionResult(due.session_id, PollOutcome.AUTH_FAILED, "KlarnaAuthFailed", exc)
    except KlarnaError as exc:
        return KlarnaRead(due, exc)
    except DependencyError as exc:
        # The credentials could not be read (Secrets Manager): every other session would fail too.
        return SessionResult(due.session_id, PollOutcome.AUTH_FAILED, "CredentialsUnavailable", exc)


def record_read(
    read: KlarnaRead,
    *,
    store: PollStore,
    policy: PollPolicy,
    clock: Callable[[], datetime] = utc_now,
    tight: bool = False,
) -> SessionResult:
    """The second half of a poll: record what follows from Klarna's answer."""
    poll = _SessionPoll(read.due, store, policy, tight)
    now_ms = to_epoch_millis(clock())
    try:
        if isinstance(read.answer, KlarnaSession):
            return poll.after_answer(read.answer, now_ms)
        if isinstance(read.answer, KlarnaNotFound):
            return poll.after_not_found(now_ms)
        return poll.after_klarna_error(read.answer, now_ms)
    except StorageUnavailable as exc:
        # Not rescheduled (the write is what failed): it stays due for the next run.
        return SessionResult(read.due.session_id, PollOutcome.ERROR, "StorageUnavailable", exc)


@dataclass(frozen=True)
class _SessionPoll:
    """One due session being polled: what follows from each kind of answer."""

    due: DueSession
    store: PollStore
    policy: PollPolicy
    tight: bool

    def after_klarna_error(self, exc: KlarnaError, now_ms: int) -> SessionResult:
        # 5xx, timeout, unreadable answer, another 4xx: back off like an unchanged poll, so one broken
        # session is not retried every run forever (the error counts say whether Klarna is down for all).
        applied = self.reschedule(now_ms)
        outcome = PollOutcome.ERROR if applied else PollOutcome.SUPERSEDED
        return SessionResult(self.due.session_id, outcome, type(exc).__name__, exc)

    def after_answer(self, session: KlarnaSession, now_ms: int) -> SessionResult:
        due = self.due
        result = self.store.record_status(StatusUpdate(session=session, source="poller"))
        applied = result.outcome is WriteOutcome.APPLIED
        # When applied: a status the index did not show, recorded by this read, that no callback reported.
        unreported = due.status is not None and session.status != due.status
        changed = SessionResult(due.session_id, PollOutcome.CHANGED, unreported_change=unreported)
        if result.stored_final:
            return changed if applied else SessionResult(due.session_id, PollOutcome.SUPERSEDED)
        expires_at = session.expires_at or due.expires_at
        overdue = self._overdue_expiry(session, expires_at, now_ms)
        if overdue is not None:
            return self.expire(overdue)
        if applied:
            return changed
        # STALE or DUPLICATE: Klarna has nothing newer than what is stored.
        expires_ms = None if expires_at is None else to_epoch_millis(expires_at)
        rescheduled = self.reschedule(now_ms, expires_at_ms=expires_ms)
        return SessionResult(due.session_id, PollOutcome.UNCHANGED if rescheduled else PollOutcome.SUPERSEDED)

    def _overdue_expiry(
        self, session: KlarnaSession, expires_at: datetime | None, now_ms: int
    ) -> StatusUpdate | None:
        """EXPIRED, when the session is still not final an hour (by default) after its expiry, whatever
        Klarna says."""
        if (
            expires_at is None
            or now_ms < to_epoch_millis(expires_at) + self.policy.expiry_grace_seconds * 1000
        ):
            return None
        return expired_update(
            self.due.session_id, expires_at, self.due.updated_at_ms, to_epoch_millis(session.updated_at)
        )

    def after_not_found(self, now_ms: int) -> SessionResult:
        due = self.due
        if due.expires_at is not None and now_ms >= to_epoch_millis(due.expires_at):
            return self.expire(expired_update(due.session_id, due.expires_at, due.updated_at_ms))
        not_found = due.poll_not_found + 1
        if not_found < self.policy.not_found_attempts:
            applied = self.reschedule(now_ms, not_found=not_found)
            return SessionResult(due.session_id, PollOutcome.NOT_FOUND if applied else PollOutcome.SUPERSEDED)
        if due.expires_at is None:
            # Nothing will ever settle it: stop spending Klarna calls (the row and its status stay).
            applied = self.store.stop_polling(due)
            return SessionResult(due.session_id, PollOutcome.GIVEN_UP if applied else PollOutcome.SUPERSEDED)
        # Klarna keeps saying it does not know the session: ask again only once it has expired, when a
        # 404 means EXPIRED. A callback meanwhile (Klarna knew it after all) resets the schedule as usual.
        wake_at = to_epoch_millis(due.expires_at) + self.policy.expiry_grace_seconds * 1000
        applied = self.store.reschedule_poll(due, next_due_at_ms=max(wake_at, now_ms), not_found=not_found)
        return SessionResult(due.session_id, PollOutcome.PARKED if applied else PollOutcome.SUPERSEDED)

    def expire(self, update: StatusUpdate) -> SessionResult:
        due = self.due
        result = self.store.record_status(update)
        expires_at = update.session.expires_at
        if result.outcome is WriteOutcome.STALE and result.session is not None and expires_at is not None:
            # The index copy was behind the session: stamp no earlier than what is actually stored, once.
            stored_ms = result.session.updated_at_ms
            update = expired_update(due.session_id, expires_at, update.updated_at_ms, stored_ms)
            result = self.store.record_status(update)
        if result.outcome is WriteOutcome.APPLIED:
            return SessionResult(due.session_id, PollOutcome.EXPIRED)
        return SessionResult(due.session_id, PollOutcome.SUPERSEDED)

    def reschedule(self, now_ms: int, *, not_found: int = 0, expires_at_ms: int | None = None) -> bool:
        """Polled and nothing recorded: the next poll as the schedule has it (conditional on the row)."""
        due = self.due
        if expires_at_ms is None and due.expires_at is not None:
            expires_at_ms = to_epoch_millis(due.expires_at)
        next_due = self.policy.schedule.next_due_at_ms(
            due, now_ms, tight=self.tight, expires_at_ms=expires_at_ms
        )
        return self.store.reschedule_poll(due, next_due_at_ms=next_due, not_found=not_found)


# -- one run ----------------------------------------------------------------------------------------


class StopReason(StrEnum):
    TIME_BUDGET = "time_budget"
    KLARNA_AUTH_FAILED = "klarna_auth_failed"


# Outcomes of a session Klarna answered about (with a session or a 404).
ANSWERED = frozenset(
    {
        PollOutcome.CHANGED,
        PollOutcome.UNCHANGED,
        PollOutcome.EXPIRED,
        PollOutcome.NOT_FOUND,
        PollOutcome.PARKED,
        PollOutcome.GIVEN_UP,
    }
)


@dataclass
class PollRunReport:
    """What a run did. Counts are per session; `index_items_read` is what DynamoDB read for the run."""

    due: int = 0  # due sessions taken from the index
    index_items_read: int = 0
    outcomes: Counter[PollOutcome] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    throttles: int = 0
    oldest_due_lag_seconds: float = 0.0
    stopped: StopReason | None = None
    problems: list[SessionResult] = field(default_factory=list)
    # Whether the run caught up (the evidence it started with said callbacks were being lost), and
    # how many of its Klarna reads were catch-up reads of sessions not yet due.
    catching_up: bool = False
    catch_up_reads: int = 0
    # Changes this run's reads recorded that no callback had reported.
    unreported_changes: int = 0
    # The poller's state after the run, and the evidence level it holds; None when the state could not
    # be read or written (the run then polls on the normal schedule and leaves the stored state alone).
    state: PollerState | None = None
    evidence_percent: float | None = None

    @property
    def read_from_klarna(self) -> int:
        """Sessions Klarna answered about (with a session or a 404)."""
        return sum(self.outcomes[outcome] for outcome in ANSWERED)

    def summary(self) -> dict[str, Any]:
        return {
            "due": self.due,
            "index_items_read": self.index_items_read,
            "read_from_klarna": self.read_from_klarna,
            "outcomes": {str(outcome): count for outcome, count in sorted(self.outcomes.items())},
            "errors": dict(sorted(self.errors.items())),
            "throttles": self.throttles,
            "oldest_due_lag_seconds": round(self.oldest_due_lag_seconds, 3),
            "stopped": self.stopped,
            "catching_up": self.catching_up,
            "catch_up_reads": self.catch_up_reads,
            "unreported_changes": self.unreported_changes,
            "evidence_percent": None if self.evidence_percent is None else round(self.evidence_percent, 3),
        }


class _Run:
    """The shared state of one run's readers and writers."""

    def __init__(self, policy: PollPolicy, limiter: RateLimiter, *, tight: bool) -> None:
        self.policy = policy
        self.limiter = limiter
        self.tight = tight
        self.report = PollRunReport(catching_up=tight)
        self.stop = threading.Event()
        self._lock = threading.Lock()

    def record(self, result: SessionResult, *, catch_up: bool = False) -> None:
        with self._lock:
            report = self.report
            report.outcomes[result.outcome] += 1
            if result.outcome is PollOutcome.THROTTLED:
                report.throttles += 1
            if catch_up and result.outcome in ANSWERED:
                report.catch_up_reads += 1
            report.unreported_changes += result.unreported_change
            if result.error_kind is not None and result.outcome is not PollOutcome.AUTH_FAILED:
                report.errors[result.error_kind] += 1
            if result.error is not None and len(report.problems) < MAX_PROBLEMS_REPORTED:
                report.problems.append(result)

    def count_index_items(self, page: DuePage) -> None:
        with self._lock:
            self.report.index_items_read += page.scanned_count

    def count_error(self, kind: str) -> None:
        with self._lock:
            self.report.errors[kind] += 1

    def halt(self, reason: StopReason, *, cancel_waits: bool) -> None:
        with self._lock:
            if self.report.stopped is None:
                self.report.stopped = reason
        self.stop.set()
        if cancel_waits:
            self.limiter.cancel()


def _completed[T](call: Callable[..., T], *args: Any) -> "Future[T]":
    """`call(*args)` run here and now, as a finished Future (a reader without an executor)."""
    future: Future[T] = Future()
    try:
        future.set_result(call(*args))
    except Exception as exc:
        future.set_exception(exc)
    return future


def due_sessions(
    store: PollStore,
    *,
    due_by_ms: int,
    page_size: int,
    on_page: Callable[[DuePage], None] = lambda _: None,
    prefetch: Executor | None = None,
    due_after_ms: int | None = None,
    active_since_ms: int | None = None,
) -> Iterator[DueSession]:
    """Every session due at `due_by_ms` or earlier over all shards, oldest first, read page by page
    only as the caller needs them (`due_after_ms`, `active_since_ms`: only those due later than that,
    last updated then or since). With `prefetch`, the first page of every shard is read at once and
    each next page while the one before is being used."""

    def page(shard: str, start_key: PageKey | None) -> DuePage:
        return store.due_sessions_page(
            shard,
            due_by_ms=due_by_ms,
            limit=page_size,
            start_key=start_key,
            due_after_ms=due_after_ms,
            active_since_ms=active_since_ms,
        )

    submit = prefetch.submit if prefetch is not None else _completed

    def shard_sessions(shard: str, first: "Future[DuePage]") -> Iterator[DueSession]:
        pending: Future[DuePage] | None = first
        while pending is not None:
            current = pending.result()
            on_page(current)
            next_key = current.next_start_key
            pending = None if next_key is None else submit(page, shard, next_key)
            yield from current.sessions

    firsts = [(shard, submit(page, shard, None)) for shard in store.poll_shard_ids]
    return heapq.merge(
        *(shard_sessions(shard, first) for shard, first in firsts), key=lambda d: d.poll_due_at
    )


def catch_up_candidates(
    store: PollStore,
    schedule: PollSchedule,
    *,
    now_ms: int,
    on_page: Callable[[DuePage], None] = lambda _: None,
    prefetch: Executor | None = None,
) -> list[DueSession]:
    """The sessions a catch-up reads, most recently active first: young, and scheduled later than the
    tight schedule would have them.

    They are found in the due index itself (due within the longest interval the normal schedule gives
    a young session, filtered on the last update), not in a second index: finding them costs read units
    only while catching up, where an index by activity would cost a write for every poll, always.
    """
    found = due_sessions(
        store,
        due_after_ms=now_ms,
        due_by_ms=now_ms + schedule.catch_up_lookahead_ms,
        active_since_ms=now_ms - schedule.young_for_at_most_ms,
        page_size=CATCH_UP_PAGE_SIZE,
        on_page=on_page,
        prefetch=prefetch,
    )
    wanted = [due for due in found if schedule.wants_sooner(due, now_ms)]
    return sorted(wanted, key=lambda due: due.updated_at_ms or 0, reverse=True)


class _Feed:
    """The sessions a run polls, in order: the due ones oldest first and, while catching up, the
    catch-up candidates, which take at most `share` of the sessions while due ones wait, and all
    the run has left once none does. The candidates are found in the background, meanwhile due
    sessions go first."""

    def __init__(
        self, due: Iterator[DueSession], candidates: "Future[list[DueSession]] | None", share: float
    ) -> None:
        self._due: Iterator[DueSession] | None = due
        self._candidates = candidates
        self._queue: deque[DueSession] | None = None
        self._share = share
        self._taken = 0
        self._catch_ups = 0

    def next(self) -> tuple[DueSession, bool] | None:
        """The next session to poll and whether it is a catch-up read; None when there is none."""
        if self._catch_up_turn():
            candidate = self._candidate(wait=self._due is None)
            if candidate is not None:
                return self._took(candidate, catch_up=True)
        if self._due is not None:
            due = next(self._due, None)
            if due is not None:
                return self._took(due, catch_up=False)
            self._due = None
        candidate = self._candidate(wait=True)
        return None if candidate is None else self._took(candidate, catch_up=True)

    def _catch_up_turn(self) -> bool:
        if self._candidates is None:
            return False
        return self._due is None or self._catch_ups < self._share * (self._taken + 1)

    def _candidate(self, *, wait: bool) -> DueSession | None:
        if self._queue is None:
            if self._candidates is None or not (wait or self._candidates.done()):
                return None
            self._queue = deque(self._candidates.result())
        return self._queue.popleft() if self._queue else None

    def _took(self, due: DueSession, *, catch_up: bool) -> tuple[DueSession, bool]:
        self._taken += 1
        self._catch_ups += catch_up
        return due, catch_up


class _NoGrant(Exception):
    """No Klarna read may start for this session: the run is stopping or out of time."""


class _PacedKlarna:
    """Klarna as the run's readers see it: each read paced by the run's rate limiter, none once the run
    is stopping or past its time budget."""

    def __init__(self, klarna: KlarnaReader, run: _Run, deadline: Callable[[], float]) -> None:
        self._klarna = klarna
        self._run = run
        self._deadline = deadline

    def read_session(
        self, session_id: str, *, url: str | None = None, retry: RetryPolicy = NO_RETRY
    ) -> KlarnaSession:
        if self._run.stop.is_set():
            raise _NoGrant
        if not self._run.limiter.acquire(self._deadline()):
            if not self._run.stop.is_set():
                # No grant before the margin: no later session would get one either.
                self._run.halt(StopReason.TIME_BUDGET, cancel_waits=False)
            raise _NoGrant
        return self._klarna.read_session(session_id, url=url, retry=retry)


class PollThreads:
    """The threads runs poll with. The function keeps one for the life of its execution environment (a
    warm Lambda reuses them, as it reuses its clients); a run given none makes its own for itself.

    One reader per Klarna read in flight, each reading session after session from the run's inbox, so a
    read starts the moment the one before it ends; the DynamoDB writes that follow go to the writers,
    twice as many, so a slow write never holds up a read. The index threads read the due index ahead of
    need (the first page of every shard at once) and run the catch-up's scan.
    """

    def __init__(self, concurrency: int) -> None:
        self.concurrency = concurrency
        self.readers = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="poll-read")
        self.writers = ThreadPoolExecutor(
            max_workers=concurrency * WRITERS_PER_READER, thread_name_prefix="poll-write"
        )
        self.index = ThreadPoolExecutor(max_workers=INDEX_THREADS, thread_name_prefix="poll-index")

    @staticmethod
    def dynamodb_connections(concurrency: int) -> int:
        """Connections a DynamoDB client needs for runs of `concurrency` (one per thread that writes or
        reads the index), so that botocore never drops one it could have reused."""
        return concurrency * WRITERS_PER_READER + INDEX_THREADS

    def close(self) -> None:
        for pool in (self.readers, self.writers, self.index):
            pool.shutdown(cancel_futures=True)


def run_poll(
    store: PollStore,
    klarna: KlarnaReader,
    *,
    policy: PollPolicy,
    remaining_time_ms: Callable[[], int],
    clock: Callable[[], datetime] = utc_now,
    limiter: RateLimiter | None = None,
    state: PollerStateStore | None = None,
    threads: PollThreads | None = None,
) -> PollRunReport:
    """One poller run: poll due sessions until none is left, the time budget is spent, or Klarna refuses
    the credentials; while the poller's state says callbacks are being lost, catch up too, and leave the
    state as this run's reads say. `remaining_time_ms` is the Lambda context's
    `get_remaining_time_in_millis`; without `state` (or on the backoff schedule) the run never catches
    up. `threads` must have been made for `policy.concurrency`; `limiter` (for tests and the benchmark:
    its clock) paces at `policy.rate_per_second`."""
    schedule = policy.schedule
    before = _load_state(state) if state is not None and schedule.catches_up else None
    run = _Run(
        policy,
        limiter or RateLimiter(policy.rate_per_second),
        tight=before is not None and before.catching_up,
    )
    with ExitStack() as own:
        if threads is None:
            threads = PollThreads(policy.concurrency)
            own.callback(threads.close)
        _Pipeline(store, klarna, run, threads, clock=clock).poll(remaining_time_ms)
    if state is not None and before is not None:
        _save_state(state, before, run.report, now_ms=to_epoch_millis(clock()), rule=schedule.evidence)
    return run.report


class _Pipeline:
    """One run's sessions on their way: the feed puts them in the inbox, the readers ask Klarna about
    them one after the other, the writers record the answers."""

    def __init__(
        self,
        store: PollStore,
        klarna: KlarnaReader,
        run: _Run,
        threads: PollThreads,
        *,
        clock: Callable[[], datetime],
    ) -> None:
        self.store = store
        self.klarna = klarna
        self.run = run
        self.threads = threads
        self.clock = clock
        # Sessions in hand, not yet read: twice the reads in flight, so a reader never waits for one.
        self.inbox: queue.Queue[tuple[DueSession, bool] | None] = queue.Queue(
            maxsize=run.policy.concurrency * SESSIONS_AHEAD_PER_READ
        )
        self.writes: queue.SimpleQueue[Future[None]] = queue.SimpleQueue()
        # Answers being recorded: a reader waits for a writer before it reads on, so that writes slower
        # than reads slow the reads down rather than pile up past the time budget.
        self.writing = threading.BoundedSemaphore(run.policy.concurrency * WRITERS_PER_READER)

    def poll(self, remaining_time_ms: Callable[[], int]) -> None:
        run, policy = self.run, self.run.policy
        margin_ms = policy.time_margin_seconds * 1000
        paced = _PacedKlarna(
            self.klarna, run, deadline=lambda: run.limiter.now() + (remaining_time_ms() - margin_ms) / 1000
        )
        readers = [self.threads.readers.submit(self._read_all, paced) for _ in range(policy.concurrency)]
        try:
            self._fill_inbox(lambda: remaining_time_ms() < margin_ms)
        finally:
            # Even when the due index failed: readers left waiting would hold the threads of every
            # later run. What is in the inbox is read and recorded; the error then ends the run.
            for _ in readers:
                self.inbox.put(None)
            wait(readers)
            while not self.writes.empty():
                self.writes.get().result()

    def _fill_inbox(self, out_of_time: Callable[[], bool]) -> None:
        run = self.run
        started_ms = to_epoch_millis(self.clock())
        feed = _run_feed(self.store, run, started_ms=started_ms, index=self.threads.index)
        taken: tuple[DueSession, bool] | None = None
        while not run.stop.is_set():
            if out_of_time():
                # Readers already paced within the budget finish their session; nothing new starts.
                run.halt(StopReason.TIME_BUDGET, cancel_waits=False)
                break
            if taken is None:
                taken = feed.next()
                if taken is None:
                    return
                _count_taken(run.report, taken, started_ms)
            # The index is read on only as fast as sessions are read: wait for room in the inbox.
            with suppress(queue.Full):
                self.inbox.put(taken, timeout=0.05)
                taken = None
        if taken is not None:
            self._not_read(*taken)

    def _read_all(self, paced: _PacedKlarna) -> None:
        while (taken := self.inbox.get()) is not None:
            due, catch_up = taken
            try:
                read = read_due_session(due, paced)
            except _NoGrant:
                self._not_read(due, catch_up)
                continue
            except Exception as exc:  # a bug must cost one session, not the run
                self.run.record(SessionResult(due.session_id, PollOutcome.ERROR, "Unexpected", exc))
                continue
            if isinstance(read, SessionResult):
                self._settle(read, catch_up)
            else:
                self.writing.acquire()
                self.writes.put(self.threads.writers.submit(self._write, read, catch_up))

    def _write(self, read: KlarnaRead, catch_up: bool) -> None:
        try:
            result = record_read(
                read, store=self.store, policy=self.run.policy, clock=self.clock, tight=self.run.tight
            )
        except Exception as exc:  # a bug must cost one session, not the run
            result = SessionResult(read.due.session_id, PollOutcome.ERROR, "Unexpected", exc)
        finally:
            self.writing.release()
        self.run.record(result, catch_up=catch_up)

    def _settle(self, result: SessionResult, catch_up: bool) -> None:
        """A read with nothing to record: refused (429, credentials) or a stale index copy."""
        if result.outcome is PollOutcome.THROTTLED:
            self.run.limiter.slow_down(result.retry_after)
        elif result.outcome is PollOutcome.AUTH_FAILED:
            # Wrong credentials fail every call alike: hammering Klarna helps nobody.
            self.run.halt(StopReason.KLARNA_AUTH_FAILED, cancel_waits=True)
        self.run.record(result, catch_up=catch_up)

    def _not_read(self, due: DueSession, catch_up: bool) -> None:
        if not catch_up:  # a catch-up candidate not read is not due: nothing is left behind
            self.run.record(SessionResult(due.session_id, PollOutcome.LEFT_DUE))


def _load_state(state: PollerStateStore) -> PollerState | None:
    try:
        return state.poller_state() or PollerState()
    except StorageUnavailable:
        # No evidence to go by: poll on the normal schedule, and leave the stored state as it is.
        return None


def _save_state(
    state: PollerStateStore, before: PollerState, report: PollRunReport, *, now_ms: int, rule: EvidenceRule
) -> None:
    after = next_poller_state(
        before,
        unreported_changes=report.unreported_changes,
        reads=report.read_from_klarna,
        now_ms=now_ms,
        rule=rule,
    )
    try:
        state.save_poller_state(after)
    except StorageUnavailable:
        report.errors["StateUnavailable"] += 1
        return
    report.state = after
    report.evidence_percent = evidence_percent(after, rule)


def _run_feed(store: PollStore, run: _Run, *, started_ms: int, index: Executor) -> _Feed:
    schedule = run.policy.schedule
    due = due_sessions(
        store,
        due_by_ms=started_ms,
        page_size=run.policy.page_size,
        on_page=run.count_index_items,
        prefetch=index,
    )
    candidates = None
    if run.tight:
        candidates = index.submit(_candidates_or_none, store, run, started_ms)
    return _Feed(due, candidates, schedule.catch_up_share)


def _candidates_or_none(store: PollStore, run: _Run, now_ms: int) -> list[DueSession]:
    # Found in the background while due sessions are polled; a storage failure costs the catch-up only.
    try:
        return catch_up_candidates(store, run.policy.schedule, now_ms=now_ms, on_page=run.count_index_items)
    except StorageUnavailable:
        run.count_error("StorageUnavailable")
        return []


def _count_taken(report: PollRunReport, taken: tuple[DueSession, bool], started_ms: int) -> None:
    due, catch_up = taken
    if catch_up:
        return
    if report.due == 0:  # sessions come oldest first: this one says how far behind the run is
        report.oldest_due_lag_seconds = max(0.0, (started_ms - due.poll_due_at) / 1000)
    report.due += 1
