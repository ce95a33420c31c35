"""What the core asks of storage and of Klarna: one narrow protocol per role, in domain models.

The adapters are `repository.SessionRepository` (the sessions table), `repository.StateRepository` (the
state table) and `klarna.KlarnaClient`; the unit tests share in-memory stores
(tests/support/memory_store.py) that implement the storage roles with the same rules
(hpp_core.lifecycle). A function asks for exactly the roles it uses; the two pairs that are used
together are named below them.
"""

from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any, Protocol

from hpp_core.klarna import NO_RETRY, RetryPolicy
from hpp_core.models import (
    ConsumerLinks,
    DuePage,
    DueSession,
    KlarnaCreated,
    KlarnaSession,
    PageKey,
    PollerState,
    StatusUpdate,
    TrackedSession,
    WriteResult,
)

# -- storage ------------------------------------------------------------------------------------------


class StatusRecorder(Protocol):
    """The one write path: callbacks, the poller and the sessions API record every status through it."""

    def record_status(
        self, update: StatusUpdate, *, callback_secret_hash: str | None = None
    ) -> WriteResult: ...


class SessionLookup(Protocol):
    def get_session(self, session_id: str) -> TrackedSession | None: ...


class SessionCreator(Protocol):
    """The sessions API's own write: start tracking a session the tracker just created at Klarna."""

    def create_session(
        self,
        session_id: str,
        *,
        expires_at: datetime | None,
        session_url: str | None,
        callback_secret_hash: str | None,
        links: ConsumerLinks | None = None,
    ) -> TrackedSession: ...


class DueQueue(Protocol):
    """The poller's view of the not-final sessions: what is due, and its schedule."""

    @property
    def poll_shard_ids(self) -> list[str]: ...

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
        """Sessions of one shard due at `due_by_ms` or earlier, oldest first, `limit` index items at a
        time; only those due after `due_after_ms`, and last updated at `active_since_ms` or later
        (`updated_at_ms`), when given. A page may hold fewer sessions than it read."""
        ...

    def reschedule_poll(self, due: DueSession, *, next_due_at_ms: int, not_found: int = 0) -> bool: ...

    def stop_polling(self, due: DueSession) -> bool: ...


class DueLookup(Protocol):
    """One named session's place in the due index, read from its row (the recovery CLI's reconcile)."""

    def due_session(self, session_id: str) -> DueSession | None: ...


class RecordedBetween(Protocol):
    """Sessions by when their last status was recorded: the recovery CLI's way back to sessions whose
    stream records have been trimmed (a scan: its cost is the table's size)."""

    def sessions_recorded_between(self, start: datetime, end: datetime) -> Iterator[TrackedSession]: ...


class PollerStateStore(Protocol):
    """The poller's own state across runs (the evidence of lost callbacks); one writer, the poller."""

    def poller_state(self) -> PollerState | None: ...

    def save_poller_state(self, state: PollerState) -> None: ...


class SessionStore(SessionLookup, StatusRecorder, Protocol):
    """Look a session up, then record a status: how a callback and a disable decide."""


class PollStore(DueQueue, StatusRecorder, Protocol):
    """The due queue and the one write path: what a poller run works with."""


class RecoveryStore(PollStore, SessionLookup, DueLookup, RecordedBetween, Protocol):
    """Everything the recovery CLI (hpp-tracker) asks of storage: the poller's roles to reconcile, and the
    reads that find the sessions to reconcile or republish."""


# -- state that is not a session (the state table) ---------------------------------------------------


class UnknownSessionState(Protocol):
    """What callbacks share, across every instance, about sessions the table does not have: a budget of
    Klarna reads per minute, and the ids Klarna recently answered 404 for."""

    def take_unknown_session_read(self, minute: datetime, *, limit: int) -> bool: ...

    def recently_not_found(self, session_id: str, *, now: datetime) -> bool: ...

    def remember_not_found(self, session_id: str, *, until: datetime) -> None: ...


# -- Klarna -------------------------------------------------------------------------------------------


# A session's own calls take the URL Klarna returned for it (None: the documented form).


class KlarnaReader(Protocol):
    def read_session(
        self, session_id: str, *, url: str | None = None, retry: RetryPolicy = NO_RETRY
    ) -> KlarnaSession: ...


class KlarnaCreator(Protocol):
    def create_session(
        self, body: Mapping[str, Any], *, timeout_seconds: float | None = None
    ) -> KlarnaCreated: ...


class KlarnaDisabler(KlarnaReader, Protocol):
    """Disable, and read the session back (Disable's 204 carries no state)."""

    def disable_session(
        self, session_id: str, *, url: str | None = None, retry: RetryPolicy = NO_RETRY
    ) -> None: ...


class KlarnaDistributor(KlarnaReader, Protocol):
    """Send the payment link, and read the session when Klarna refuses (was it disabled?)."""

    def distribute_session(
        self,
        session_id: str,
        body: Mapping[str, Any],
        *,
        url: str | None = None,
        timeout_seconds: float | None = None,
    ) -> None: ...
