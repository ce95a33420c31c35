"""The reconciliation poller: read every not-final, due session from Klarna and record what it says.

Klarna gives up on a callback after four tries; this is the safety net. A run reads the due index
(only not-final sessions are in it, keyed by shard and due time), asks Klarna about each due session
through a small worker pool paced by a shared rate limiter, and records the answer through the one
conditional write (the `StatusRecorder` port), so a poll never overwrites a newer callback and a
callback never loses to an older poll. A session with nothing new is rescheduled with a growing interval;
a recorded change (from anywhere) resets it. Runs stop taking work before the Lambda's time runs out and
leave the rest due for the next run.

Expiry: Klarna answers 404 for an expired session and has no EXPIRED status. The tracker records its own
final EXPIRED when Klarna answers 404 after `expires_at`, or when a session is still not final
`expiry_grace_seconds` after `expires_at`. EXPIRED is stamped with `expires_at` (or the last known
update, if that is later), never with the tracker's clock: it must not look older than anything Klarna
said, or the conditional write would refuse it, and it must be the same in every run that writes it.
"""

import heapq
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
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
from hpp_core.models import DuePage, DueSession, KlarnaSession, PageKey, StatusUpdate, WriteOutcome
from hpp_core.ports import KlarnaReader, PollStore
from hpp_core.rate_limit import RateLimiter
from hpp_core.settings import Settings
from hpp_core.statuses import Status, is_final
from hpp_core.timestamps import to_epoch_millis, utc_now

# Index items fetched per Query; a run that stops early has read at most one page per shard too many.
PAGE_SIZE = 100
# Per-session problems kept for the run's log (counts are always complete; this only bounds log lines).
MAX_PROBLEMS_REPORTED = 50
# Sessions in hand per Klarna read in flight: the others write to DynamoDB or wait for a read slot.
WORKERS_PER_READ = 2
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class PollerSettings(Settings):
    """The poller function's environment: the table, Klarna, and how hard and how often to poll."""

    # Workers reading Klarna at once (the Klarna client keeps up to 16 connections).
    poll_concurrency: int = Field(alias="POLL_CONCURRENCY", default=10, ge=1, le=16)
    # The share of Klarna's read limit (200/s production, 50/s playground) this tracker may use.
    poll_rate_per_second: float = Field(alias="POLL_RATE_PER_SECOND", default=20.0, gt=0, le=200)
    # No new session is started with less than this left of the invocation's time.
    poll_time_margin_seconds: float = Field(alias="POLL_TIME_MARGIN_SECONDS", default=10.0, gt=0, le=300)
    # The backoff grows from FIRST_POLL_DELAY_SECONDS by doubling up to this interval.
    poll_max_interval_seconds: int = Field(alias="POLL_MAX_INTERVAL_SECONDS", default=900, ge=1, le=86_400)
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

    def policy(self) -> "PollPolicy":
        return PollPolicy(
            concurrency=self.poll_concurrency,
            rate_per_second=self.poll_rate_per_second,
            time_margin_seconds=self.poll_time_margin_seconds,
            first_interval_seconds=self.first_poll_delay_seconds,
            max_interval_seconds=self.poll_max_interval_seconds,
            not_found_attempts=self.poll_not_found_attempts,
            expiry_grace_seconds=self.expiry_grace_seconds,
        )


@dataclass(frozen=True)
class PollPolicy:
    concurrency: int = 10
    rate_per_second: float = 20.0
    time_margin_seconds: float = 10.0
    first_interval_seconds: int = 60
    max_interval_seconds: int = 900
    not_found_attempts: int = 3
    expiry_grace_seconds: int = 3600
    page_size: int = PAGE_SIZE


# -- pure rules -------------------------------------------------------------------------------------


def poll_interval_seconds(unchanged_polls: int, *, first: int = 60, maximum: int = 900) -> int:
    """Seconds from a poll to the next, after `unchanged_polls` polls in a row found nothing new.

    0 is the interval after a recorded change (the repository's FIRST_POLL_DELAY_SECONDS); each poll that
    finds nothing doubles it up to `maximum`: with the defaults 1, 2, 4, 8, then every 15 minutes.
    """
    return min(first * (1 << min(max(unchanged_polls, 0), 32)), maximum)


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


def poll_session(
    due: DueSession,
    *,
    store: PollStore,
    klarna: KlarnaReader,
    policy: PollPolicy,
    clock: Callable[[], datetime] = utc_now,
) -> SessionResult:
    """Ask Klarna about one due session and record what follows from the answer."""
    if due.status is not None and is_final(due.status):
        return SessionResult(due.session_id, PollOutcome.SUPERSEDED)  # a stale index copy
    try:
        try:
            session = klarna.read_session(due.session_id, url=due.session_url)
        except KlarnaNotFound:
            return _after_not_found(due, store, policy, to_epoch_millis(clock()))
        except KlarnaError as exc:
            return _after_klarna_error(due, exc, store, policy, to_epoch_millis(clock()))
        except DependencyError as exc:
            # The credentials could not be read (Secrets Manager): every other session would fail too.
            return SessionResult(due.session_id, PollOutcome.AUTH_FAILED, "CredentialsUnavailable", exc)
        return _after_answer(due, session, store, policy, to_epoch_millis(clock()))
    except StorageUnavailable as exc:
        # Not rescheduled (the write is what failed): it stays due for the next run.
        return SessionResult(due.session_id, PollOutcome.ERROR, "StorageUnavailable", exc)


def _after_klarna_error(
    due: DueSession, exc: KlarnaError, store: PollStore, policy: PollPolicy, now_ms: int
) -> SessionResult:
    if isinstance(exc, KlarnaRateLimited):
        return SessionResult(due.session_id, PollOutcome.THROTTLED, retry_after=exc.retry_after)
    if isinstance(exc, KlarnaAuthFailed):
        return SessionResult(due.session_id, PollOutcome.AUTH_FAILED, "KlarnaAuthFailed", exc)
    # 5xx, timeout, unreadable answer, another 4xx: back off like an unchanged poll, so one broken
    # session is not retried every run forever (the error counts say whether Klarna is down for all).
    kind = type(exc).__name__
    applied = _reschedule(due, store, policy, now_ms)
    return SessionResult(due.session_id, PollOutcome.ERROR if applied else PollOutcome.SUPERSEDED, kind, exc)


def _after_answer(
    due: DueSession, session: KlarnaSession, store: PollStore, policy: PollPolicy, now_ms: int
) -> SessionResult:
    result = store.record_status(StatusUpdate(session=session, source="poller"))
    applied = result.outcome is WriteOutcome.APPLIED
    if result.stored_final:
        return SessionResult(due.session_id, PollOutcome.CHANGED if applied else PollOutcome.SUPERSEDED)
    expires_at = session.expires_at or due.expires_at
    if expires_at is not None and now_ms >= to_epoch_millis(expires_at) + policy.expiry_grace_seconds * 1000:
        # Still not final an hour (by default) after expiry, whatever Klarna says: settle it.
        update = expired_update(
            due.session_id, expires_at, due.updated_at_ms, to_epoch_millis(session.updated_at)
        )
        return _expire(due, update, store)
    if applied:
        return SessionResult(due.session_id, PollOutcome.CHANGED)
    # STALE or DUPLICATE: Klarna has nothing newer than what is stored.
    if _reschedule(due, store, policy, now_ms):
        return SessionResult(due.session_id, PollOutcome.UNCHANGED)
    return SessionResult(due.session_id, PollOutcome.SUPERSEDED)


def _after_not_found(due: DueSession, store: PollStore, policy: PollPolicy, now_ms: int) -> SessionResult:
    if due.expires_at is not None and now_ms >= to_epoch_millis(due.expires_at):
        return _expire(due, expired_update(due.session_id, due.expires_at, due.updated_at_ms), store)
    not_found = due.poll_not_found + 1
    if not_found < policy.not_found_attempts:
        applied = _reschedule(due, store, policy, now_ms, not_found=not_found)
        return SessionResult(due.session_id, PollOutcome.NOT_FOUND if applied else PollOutcome.SUPERSEDED)
    if due.expires_at is None:
        # Nothing will ever settle it: stop spending Klarna calls (the row and its status stay).
        applied = store.stop_polling(due)
        return SessionResult(due.session_id, PollOutcome.GIVEN_UP if applied else PollOutcome.SUPERSEDED)
    # Klarna keeps saying it does not know the session: ask again only once it has expired, when a 404
    # means EXPIRED. A callback meanwhile (Klarna knew it after all) resets the schedule as usual.
    wake_at = to_epoch_millis(due.expires_at) + policy.expiry_grace_seconds * 1000
    applied = store.reschedule_poll(due, next_due_at_ms=max(wake_at, now_ms), not_found=not_found)
    return SessionResult(due.session_id, PollOutcome.PARKED if applied else PollOutcome.SUPERSEDED)


def _expire(due: DueSession, update: StatusUpdate, store: PollStore) -> SessionResult:
    result = store.record_status(update)
    expires_at = update.session.expires_at
    if result.outcome is WriteOutcome.STALE and result.session is not None and expires_at is not None:
        # The index copy was behind the session: stamp no earlier than what is actually stored, once.
        stored_ms = result.session.updated_at_ms
        update = expired_update(due.session_id, expires_at, update.updated_at_ms, stored_ms)
        result = store.record_status(update)
    if result.outcome is WriteOutcome.APPLIED:
        return SessionResult(due.session_id, PollOutcome.EXPIRED)
    return SessionResult(due.session_id, PollOutcome.SUPERSEDED)


def _reschedule(
    due: DueSession, store: PollStore, policy: PollPolicy, now_ms: int, *, not_found: int = 0
) -> bool:
    interval = poll_interval_seconds(
        due.poll_attempts + 1, first=policy.first_interval_seconds, maximum=policy.max_interval_seconds
    )
    return store.reschedule_poll(due, next_due_at_ms=now_ms + interval * 1000, not_found=not_found)


# -- one run ----------------------------------------------------------------------------------------


class StopReason(StrEnum):
    TIME_BUDGET = "time_budget"
    KLARNA_AUTH_FAILED = "klarna_auth_failed"


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

    @property
    def read_from_klarna(self) -> int:
        """Sessions Klarna answered about (with a session or a 404)."""
        answered = (
            PollOutcome.CHANGED,
            PollOutcome.UNCHANGED,
            PollOutcome.EXPIRED,
            PollOutcome.NOT_FOUND,
            PollOutcome.PARKED,
            PollOutcome.GIVEN_UP,
        )
        return sum(self.outcomes[outcome] for outcome in answered)

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
        }


class _Run:
    """The shared state of one run's workers."""

    def __init__(self, policy: PollPolicy, limiter: RateLimiter) -> None:
        self.policy = policy
        self.limiter = limiter
        self.report = PollRunReport()
        self.stop = threading.Event()
        self._lock = threading.Lock()

    def record(self, result: SessionResult) -> None:
        with self._lock:
            self.report.outcomes[result.outcome] += 1
            if result.outcome is PollOutcome.THROTTLED:
                self.report.throttles += 1
            if result.error_kind is not None and result.outcome is not PollOutcome.AUTH_FAILED:
                self.report.errors[result.error_kind] += 1
            if result.error is not None and len(self.report.problems) < MAX_PROBLEMS_REPORTED:
                self.report.problems.append(result)

    def halt(self, reason: StopReason, *, cancel_waits: bool) -> None:
        with self._lock:
            if self.report.stopped is None:
                self.report.stopped = reason
        self.stop.set()
        if cancel_waits:
            self.limiter.cancel()


def due_sessions(
    store: PollStore, *, due_by_ms: int, page_size: int, on_page: Callable[[DuePage], None] = lambda _: None
) -> Iterator[DueSession]:
    """Every due session over all shards, oldest first, read page by page only as the caller needs them."""

    def shard_sessions(shard: str) -> Iterator[DueSession]:
        start_key: PageKey | None = None
        while True:
            page = store.due_sessions_page(shard, due_by_ms=due_by_ms, limit=page_size, start_key=start_key)
            on_page(page)
            yield from page.sessions
            if page.next_start_key is None:
                return
            start_key = page.next_start_key

    shards = [shard_sessions(shard) for shard in store.poll_shard_ids]
    return heapq.merge(*shards, key=lambda due: due.poll_due_at)


class _NoGrant(Exception):
    """No Klarna read may start for this session: the run is stopping or out of time."""


class _PacedKlarna:
    """Klarna as the run's workers see it: at most `concurrency` reads in flight, each one paced.

    The slot is taken before the rate limiter's grant, so a read waiting for a slot never leaves
    with a grant that has aged into a burst; the DynamoDB writes around a read happen outside the slot,
    so they do not hold back the next read.
    """

    def __init__(
        self, klarna: KlarnaReader, run: _Run, deadline: Callable[[], float], concurrency: int
    ) -> None:
        self._klarna = klarna
        self._run = run
        self._deadline = deadline
        self._slots = threading.BoundedSemaphore(concurrency)

    def read_session(
        self, session_id: str, *, url: str | None = None, retry: RetryPolicy = NO_RETRY
    ) -> KlarnaSession:
        with self._slots:
            if self._run.stop.is_set():
                raise _NoGrant
            if not self._run.limiter.acquire(self._deadline()):
                if not self._run.stop.is_set():
                    # No grant before the margin: no later session would get one either.
                    self._run.halt(StopReason.TIME_BUDGET, cancel_waits=False)
                raise _NoGrant
            return self._klarna.read_session(session_id, url=url, retry=retry)


def run_poll(
    store: PollStore,
    klarna: KlarnaReader,
    *,
    policy: PollPolicy,
    remaining_time_ms: Callable[[], int],
    clock: Callable[[], datetime] = utc_now,
    limiter: RateLimiter | None = None,
    monotonic: Callable[[], float] = time.monotonic,
) -> PollRunReport:
    """One poller run: poll due sessions until none is left, the time budget is spent, or Klarna refuses
    the credentials. `remaining_time_ms` is the Lambda context's `get_remaining_time_in_millis`."""
    run = _Run(policy, limiter or RateLimiter(policy.rate_per_second, clock=monotonic))
    margin_ms = policy.time_margin_seconds * 1000
    started_ms = to_epoch_millis(clock())
    paced = _PacedKlarna(
        klarna,
        run,
        deadline=lambda: monotonic() + (remaining_time_ms() - margin_ms) / 1000,
        concurrency=policy.concurrency,
    )
    # Twice as many sessions in hand as reads in flight: one worker writes while another reads.
    threads = policy.concurrency * WORKERS_PER_READ
    workers = threading.BoundedSemaphore(threads)

    def out_of_time() -> bool:
        return remaining_time_ms() < margin_ms

    def work(due: DueSession) -> None:
        try:
            result = poll_session(due, store=store, klarna=paced, policy=policy, clock=clock)
            if result.outcome is PollOutcome.THROTTLED:
                run.limiter.slow_down(result.retry_after)
            elif result.outcome is PollOutcome.AUTH_FAILED:
                # Wrong credentials fail every call alike: hammering Klarna helps nobody.
                run.halt(StopReason.KLARNA_AUTH_FAILED, cancel_waits=True)
            run.record(result)
        except _NoGrant:
            run.record(SessionResult(due.session_id, PollOutcome.LEFT_DUE))
        except Exception as exc:  # a bug must cost one session, not the run
            run.record(SessionResult(due.session_id, PollOutcome.ERROR, "Unexpected", exc))
        finally:
            workers.release()

    def count_read(page: DuePage) -> None:
        run.report.index_items_read += page.scanned_count

    sessions = due_sessions(store, due_by_ms=started_ms, page_size=policy.page_size, on_page=count_read)
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="poll") as pool:
        while not run.stop.is_set():
            if out_of_time():
                # Workers already paced within the budget finish their session; nothing new starts.
                run.halt(StopReason.TIME_BUDGET, cancel_waits=False)
                break
            # A free worker before reading on, so the index is read only as fast as sessions are polled.
            if not workers.acquire(timeout=0.05):
                continue
            due = next(sessions, None)
            if due is None:
                workers.release()
                break
            if run.report.due == 0:  # sessions come oldest first: this one says how far behind the run is
                run.report.oldest_due_lag_seconds = max(0.0, (started_ms - due.poll_due_at) / 1000)
            run.report.due += 1
            pool.submit(work, due)
    return run.report
