"""The stores the unit tests share: every storage port (hpp_core.ports), in memory, with the rules.

Writes are decided by hpp_core.lifecycle's `write_outcome`, the rule the repository's condition
expressions enforce in DynamoDB, and the due index behaves as the repository's does: creating or
changing a not-final session puts it back at the first delay, a final status takes it out, and a
reschedule or stop applies only while the session is as the poller saw it. The contract suite
(tests/integration/test_session_store_contract.py) runs the same tests against this store and against
the repository on DynamoDB Local and moto, so the two cannot drift apart.

For tests it also logs the writes it was asked for, fails an operation once on request, and lets a
concurrent writer's update land just before the next writes. The due index is kept sorted per shard, so
the poll_policy benchmark can run the poller over a merchant's whole population on it.
"""

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime

from sortedcontainers import SortedList

from hpp_core.errors import Conflict
from hpp_core.lifecycle import poll_shard, poll_shard_ids, write_outcome
from hpp_core.models import (
    ConsumerLinks,
    DuePage,
    DueSession,
    PageKey,
    PollerState,
    StatusUpdate,
    TrackedSession,
    WriteOutcome,
    WriteResult,
)
from hpp_core.statuses import Status
from hpp_core.timestamps import parse_timestamp, to_epoch_millis, utc_now


@dataclass(frozen=True)
class RecordedWrite:
    """One `record_status` call the code under test made, and what came of it."""

    update: StatusUpdate
    callback_secret_hash: str | None
    outcome: WriteOutcome


@dataclass(frozen=True)
class _Schedule:
    """A not-final session's place in the due index."""

    shard: str
    due_at_ms: int
    attempts: int = 0
    not_found: int = 0


class MemorySessionStore:
    def __init__(
        self,
        *,
        poll_shards: int = 8,
        first_poll_delay_seconds: int = 60,
        clock: Callable[[], datetime] = utc_now,
        log_writes: bool = True,
    ) -> None:
        # Public so a test can move time between writes.
        self.clock = clock
        self.writes: list[RecordedWrite] = []
        self._log_writes = log_writes
        self._poll_shards = poll_shards
        self._first_poll_delay_ms = first_poll_delay_seconds * 1000
        self._sessions: dict[str, TrackedSession] = {}
        self._schedules: dict[str, _Schedule] = {}
        # The due index: per shard, (due_at_ms, session_id) in order, as DynamoDB keeps its sort key.
        self._index: dict[str, SortedList[tuple[int, str]]] = {
            shard: SortedList() for shard in poll_shard_ids(poll_shards)
        }
        self._failures: dict[str, Exception] = {}
        self._concurrent: list[StatusUpdate] = []
        # The poller's workers write from several threads.
        self._lock = threading.Lock()

    # -- for tests ----------------------------------------------------------------------------------

    def fail_next(self, operation: str, error: Exception) -> None:
        """The next call of `operation` (a method name, e.g. "create_session") raises `error`."""
        self._failures[operation] = error

    def before_next_writes(self, *updates: StatusUpdate) -> None:
        """Each of the next `record_status` calls first lets one of `updates` land (not logged), as a
        callback or the poller writing at the same moment would."""
        self._concurrent.extend(updates)

    def session_ids(self) -> list[str]:
        """Every session the store holds, e.g. to show that nothing was stored."""
        with self._lock:
            return list(self._sessions)

    # -- StatusRecorder -----------------------------------------------------------------------------

    def record_status(self, update: StatusUpdate, *, callback_secret_hash: str | None = None) -> WriteResult:
        with self._lock:
            self._fail_if_asked("record_status")
            if self._concurrent:
                self._write(self._concurrent.pop(0), None)
            result = self._write(update, callback_secret_hash)
            if self._log_writes:
                self.writes.append(RecordedWrite(update, callback_secret_hash, result.outcome))
            return result

    def _write(self, update: StatusUpdate, callback_secret_hash: str | None) -> WriteResult:
        stored = self._sessions.get(update.session_id)
        outcome = write_outcome(update, stored, callback_secret_hash=callback_secret_hash)
        if outcome is not WriteOutcome.APPLIED:
            return WriteResult(outcome, stored)
        session = self._sessions[update.session_id] = _recorded(update, stored, self._now())
        if update.is_final:
            self._set_schedule(update.session_id, None)
        else:  # a recorded change resets the backoff and forgets the 404 count
            self._set_schedule(update.session_id, self._first_schedule(update.session_id))
        return WriteResult(WriteOutcome.APPLIED, session)

    # -- SessionLookup, SessionCreator --------------------------------------------------------------

    def get_session(self, session_id: str) -> TrackedSession | None:
        with self._lock:
            self._fail_if_asked("get_session")
            return self._sessions.get(session_id)

    def create_session(
        self,
        session_id: str,
        *,
        expires_at: datetime | None,
        session_url: str | None,
        callback_secret_hash: str | None,
        links: ConsumerLinks | None = None,
    ) -> TrackedSession:
        created = {"session_url": session_url, **dict(links.links() if links else ConsumerLinks())}
        with self._lock:
            self._fail_if_asked("create_session")
            stored = self._sessions.get(session_id)
            if stored is not None:
                # The first callback won the race: its state stays, the secret goes on file (never replaced),
                # with what the create returned where the row has nothing.
                if callback_secret_hash is not None and not stored.has_callback_secret:
                    attached: dict[str, object] = {"callback_secret_hash": callback_secret_hash}
                    attached |= {k: v for k, v in created.items() if getattr(stored, k) is None}
                    self._sessions[session_id] = stored.model_copy(update=attached)
                raise Conflict(f"session {session_id} is already tracked")
            now = self._now()
            session = TrackedSession(
                **created,
                session_id=session_id,
                status=Status.WAITING.value,
                updated_at=now,
                updated_at_ms=0,
                expires_at=expires_at,
                last_source="sessions_api",
                recorded_at=now,
                callback_secret_hash=callback_secret_hash,
            )
            self._sessions[session_id] = session
            self._set_schedule(session_id, self._first_schedule(session_id))
            return session

    # -- DueQueue -----------------------------------------------------------------------------------

    @property
    def poll_shard_ids(self) -> list[str]:
        return poll_shard_ids(self._poll_shards)

    def due_sessions_page(
        self,
        shard: str,
        *,
        due_by_ms: int,
        limit: int,
        start_key: PageKey | None = None,
        due_after_ms: int | None = None,
        active_since_ms: int | None = None,
    ) -> DuePage:
        """Like a Query of the due index: oldest first, after `start_key`, `limit` items read before the
        filter on `active_since_ms`, and like DynamoDB a page that read `limit` items says where to go on
        even if nothing follows."""
        with self._lock:
            self._fail_if_asked("due_sessions_page")
            index = self._index[shard]
            if start_key is not None:
                start = index.bisect_right((start_key["due_at_ms"], start_key["session_id"]))
            else:
                start = 0 if due_after_ms is None else index.bisect_left((due_after_ms + 1, ""))
            stop = min(index.bisect_left((due_by_ms + 1, "")), start + limit)
            read = list(index.islice(start, stop)) if stop > start else []
            page = [
                self._due_session(session_id, self._schedules[session_id])
                for _, session_id in read
                if active_since_ms is None or self._sessions[session_id].updated_at_ms >= active_since_ms
            ]
        next_key = None
        if len(read) == limit:
            next_key = {"due_at_ms": read[-1][0], "session_id": read[-1][1]}
        return DuePage(page, len(read), next_key)

    def reschedule_poll(self, due: DueSession, *, next_due_at_ms: int, not_found: int = 0) -> bool:
        with self._lock:
            self._fail_if_asked("reschedule_poll")
            schedule = self._schedule_as_seen(due)
            if schedule is None:
                return False
            self._set_schedule(
                due.session_id,
                replace(
                    schedule, due_at_ms=next_due_at_ms, attempts=due.poll_attempts + 1, not_found=not_found
                ),
            )
            return True

    def stop_polling(self, due: DueSession) -> bool:
        with self._lock:
            self._fail_if_asked("stop_polling")
            if self._schedule_as_seen(due) is None:
                return False
            self._set_schedule(due.session_id, None)
            return True

    # -- the recovery CLI's reads (hpp-tracker) -----------------------------------------------------

    def due_session(self, session_id: str) -> DueSession | None:
        """The session as the due index shows it; None when it is not in the index."""
        with self._lock:
            schedule = self._schedules.get(session_id)
            return None if schedule is None else self._due_session(session_id, schedule)

    def sessions_recorded_between(self, start: datetime, end: datetime) -> Iterator[TrackedSession]:
        with self._lock:
            found = [
                session
                for session in self._sessions.values()
                if session.recorded_at is not None and start <= session.recorded_at <= end
            ]
        return iter(found)

    # -- internals ----------------------------------------------------------------------------------

    def _now(self) -> datetime:
        return parse_timestamp(self.clock())  # milliseconds, as the table keeps timestamps

    def _set_schedule(self, session_id: str, schedule: _Schedule | None) -> None:
        """Put the session in the due index at `schedule`, or take it out (None)."""
        old = self._schedules.pop(session_id, None)
        if old is not None:
            self._index[old.shard].remove((old.due_at_ms, session_id))
        if schedule is not None:
            self._schedules[session_id] = schedule
            self._index[schedule.shard].add((schedule.due_at_ms, session_id))

    def _first_schedule(self, session_id: str) -> _Schedule:
        due_at_ms = to_epoch_millis(self._now()) + self._first_poll_delay_ms
        return _Schedule(poll_shard(session_id, self._poll_shards), due_at_ms)

    def _schedule_as_seen(self, due: DueSession) -> _Schedule | None:
        """The session's schedule if it still is what the poller saw (no change recorded since)."""
        schedule = self._schedules.get(due.session_id)
        if schedule is None or (schedule.due_at_ms, schedule.attempts) != (
            due.poll_due_at,
            due.poll_attempts,
        ):
            return None
        return schedule

    def _due_session(self, session_id: str, schedule: _Schedule) -> DueSession:
        session = self._sessions[session_id]
        return DueSession(
            session_id=session_id,
            poll_shard=schedule.shard,
            poll_due_at=schedule.due_at_ms,
            poll_attempts=schedule.attempts,
            poll_not_found=schedule.not_found,
            status=session.status,
            updated_at_ms=session.updated_at_ms,
            expires_at=session.expires_at,
            session_url=session.session_url,
        )

    def _fail_if_asked(self, operation: str) -> None:
        error = self._failures.pop(operation, None)
        if error is not None:
            raise error


def _recorded(update: StatusUpdate, stored: TrackedSession | None, now: datetime) -> TrackedSession:
    """The session after `update` applied: like the repository's write, it sets what the update
    carries and keeps what it leaves out (a token on file, the secret, the session URL)."""
    observed = update.session
    changes: dict[str, object] = {
        "status": update.status,
        "updated_at": observed.updated_at,
        "updated_at_ms": update.updated_at_ms,
        "recorded_at": now,
        "last_source": update.source,
    }
    optional = {
        "authorization_token": observed.authorization_token,
        "order_id": observed.order_id,
        "klarna_reference": observed.klarna_reference,
        "last_event_id": update.event_id,
        "expires_at": observed.expires_at,
    }
    changes |= {name: value for name, value in optional.items() if value is not None}
    if stored is None:
        return TrackedSession.model_validate({"session_id": update.session_id, **changes})
    return stored.model_copy(update=changes)


class MemoryStateStore:
    """The state table's roles in memory, as hpp_core.repository.StateRepository plays them, with its
    rules: the unknown-session budget (hpp_core.ports.UnknownSessionState: a per-minute counter that never
    passes its limit, 404s remembered to the second, as the table's TTL is in epoch seconds) and the
    poller's own state (hpp_core.ports.PollerStateStore), which can fail on request. The contract suite
    (tests/integration/test_state_store_contract.py) holds the budget to the repository's behaviour on
    DynamoDB Local and moto."""

    def __init__(self, poller_state: PollerState | None = None) -> None:
        self.reads_by_minute: dict[datetime, int] = {}
        self._not_found_until: dict[str, int] = {}
        self._lock = threading.Lock()
        self.state = poller_state
        self.saved: list[PollerState] = []
        self._failures: dict[str, Exception] = {}

    # -- UnknownSessionState ------------------------------------------------------------------------

    def take_unknown_session_read(self, minute: datetime, *, limit: int) -> bool:
        with self._lock:
            taken = self.reads_by_minute.get(minute, 0)
            if taken >= limit:
                return False
            self.reads_by_minute[minute] = taken + 1
            return True

    def recently_not_found(self, session_id: str, *, now: datetime) -> bool:
        with self._lock:
            until = self._not_found_until.get(session_id)
        return until is not None and until > to_epoch_millis(now) // 1000

    def remember_not_found(self, session_id: str, *, until: datetime) -> None:
        with self._lock:
            self._not_found_until[session_id] = to_epoch_millis(until) // 1000

    # -- PollerStateStore ---------------------------------------------------------------------------

    def fail_next(self, operation: str, error: Exception) -> None:
        """The next call of `operation` ("poller_state" or "save_poller_state") raises `error`."""
        self._failures[operation] = error

    def poller_state(self) -> PollerState | None:
        self._fail_if_asked("poller_state")
        return self.state

    def save_poller_state(self, state: PollerState) -> None:
        self._fail_if_asked("save_poller_state")
        self.state = state
        self.saved.append(state)

    def _fail_if_asked(self, operation: str) -> None:
        error = self._failures.pop(operation, None)
        if error is not None:
            raise error
