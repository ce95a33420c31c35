"""What to do with one Klarna status callback: the domain logic behind `POST /callbacks/hpp`.

The normal path is one conditional write that also checks the URL's secret. Everything else (unknown
session, a body without a session, session tracked without a secret) is settled by asking Klarna (at the
session's own `session_url` when the tracker has it), never by trusting the body: an unsigned request can
only ever make the tracker *read* the truth, and reads for sessions the table does not have come out of
a budget shared by the whole deployment.
"""

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from pydantic import Field

from hpp_core.callback_secrets import MAX_SECRET_LENGTH, SECRET_PARAM, SESSION_ID_PARAM, hash_callback_secret
from hpp_core.errors import BadRequest, DependencyError, Forbidden, NotFound, UnknownSessionBudgetSpent
from hpp_core.klarna import NO_RETRY, KlarnaNotFound, KlarnaRejected, RetryPolicy
from hpp_core.models import (
    ACCEPTED_OUTCOMES,
    CallbackBody,
    KlarnaSession,
    StatusUpdate,
    TrackedSession,
    WriteOutcome,
    is_session_id,
)
from hpp_core.ports import KlarnaReader, SessionStore, UnknownSessionState
from hpp_core.request_body import body_bytes, json_value, validated_object
from hpp_core.settings import Settings, StateSettings
from hpp_core.timestamps import utc_now

_UNKNOWN_EVERYWHERE = "session is unknown to the tracker and to Klarna"
# How long Klarna's 404 for a session the table does not have is believed without asking again.
NOT_FOUND_REMEMBERED = timedelta(minutes=10)


# Klarna waits 3 s for an answer; API Gateway and Lambda take a little of it. The worst path, with the
# template's budget for each AWS call (AWS_CALL_*: 0.2 s to connect, 0.3 s to answer, one attempt: at
# most 0.5 s), is a session the table does not have, on a cold start, every call just under its budget:
# three DynamoDB calls (the write, the 404 item, the budget's counter), then the Klarna read, which first
# reads the credentials from Secrets Manager (one more call), then the write of Klarna's answer. So the
# read is over KLARNA_READ_ENDS_SECONDS after the handler starts (its timeout is cut to that, never under
# 0.2 s), which leaves a call for the secret and one for the write:
#   max(1.7, 3 x 0.5 + 0.2) + 0.5 + 0.5 = 2.7 s.
# With nothing slow, the read gets its whole KLARNA_TIMEOUT_SECONDS (1.5 s). A test holds these numbers
# to the template's (tests/integration/test_template_protection.py).
ANSWER_WITHIN_SECONDS = 2.7
KLARNA_READ_ENDS_SECONDS = 1.7


class CallbackSettings(Settings, StateSettings):
    """The callback function's settings: the shared ones, the state table and the unknown-session budget."""

    # Klarna reads a minute, for the whole deployment, on behalf of callbacks naming a session the table
    # does not have. Klarna's read limit (200/s production, 50/s playground) is shared with the poller
    # and the sessions API; forged callbacks must not spend it.
    unknown_session_reads_per_minute: int = Field(
        alias="UNKNOWN_SESSION_READS_PER_MINUTE", default=60, ge=1, le=12_000
    )


class UnknownSessionEvent(StrEnum):
    """What became of a callback naming a session the table does not have; each is a metric of its name."""

    # Klarna was read to confirm it.
    READ = "UnknownSessionReads"
    # Over this minute's budget: 503 with Retry-After, no read.
    REFUSED = "UnknownSessionReadsRefused"
    # Klarna answered 404 for it within NOT_FOUND_REMEMBERED: 404 again, no read.
    NOT_FOUND_REMEMBERED = "UnknownSessionNotFoundCached"


@dataclass(frozen=True)
class UnknownSessionReads:
    """Klarna reads for callbacks naming a session the table does not have, budgeted for the deployment.

    Anyone can send such a callback (there is no secret on file to check it against) and each would
    cost a read of the merchant's Klarna rate limit. So at most `per_minute` reads are made in each UTC
    minute by all instances together (a conditional counter in the state table); over it the answer is
    503 with Retry-After (the next minute), so Klarna retries a genuine callback while a flood costs no
    reads. An id Klarna answered 404 for is answered 404 again for NOT_FOUND_REMEMBERED without a read.
    """

    state: UnknownSessionState
    per_minute: int
    report: Callable[[UnknownSessionEvent], None]
    clock: Callable[[], datetime] = utc_now

    def read(self, session_id: str, klarna: KlarnaReader, retry: RetryPolicy) -> KlarnaSession:
        """Klarna's answer for `session_id`; NotFound if Klarna does not know it, or said so lately;
        UnknownSessionBudgetSpent (no read) when this minute's reads are used up."""
        now = self.clock()
        if self.state.recently_not_found(session_id, now=now):
            self.report(UnknownSessionEvent.NOT_FOUND_REMEMBERED)
            raise NotFound(_UNKNOWN_EVERYWHERE)
        minute = now.replace(second=0, microsecond=0)
        if not self.state.take_unknown_session_read(minute, limit=self.per_minute):
            self.report(UnknownSessionEvent.REFUSED)
            next_minute = (minute + timedelta(minutes=1) - now).total_seconds()
            raise UnknownSessionBudgetSpent(
                "too many callbacks for sessions the tracker does not know this minute: retry later",
                retry_after_seconds=max(1, math.ceil(next_minute)),
            )
        self.report(UnknownSessionEvent.READ)
        try:
            return klarna.read_session(session_id, retry=retry)
        except KlarnaNotFound:
            self.state.remember_not_found(session_id, until=now + NOT_FOUND_REMEMBERED)
            raise NotFound(_UNKNOWN_EVERYWHERE) from None


@dataclass(frozen=True)
class CallbackResult:
    session_id: str
    outcome: str
    # "callback" when the body was recorded, "klarna_read" when Klarna's own answer was.
    source: str
    status: str | None

    def response_body(self) -> dict[str, Any]:
        return {"session_id": self.session_id, "outcome": self.outcome, "source": self.source}


@dataclass(frozen=True)
class CallbackRequest:
    """A callback as the decision sees it: checked, with the secret already hashed."""

    session_id: str
    # The SHA-256 of the secret the URL presented; None when it presented none.
    presented_hash: str | None
    # The body's observation; None when only Klarna's own answer can settle the callback.
    callback: CallbackBody | None


def handle_callback(
    query: Mapping[str, str] | None,
    body: bytes | str | None,
    *,
    store: SessionStore,
    klarna: KlarnaReader,
    unknown: UnknownSessionReads,
    base64_encoded: bool = False,
    klarna_retry: RetryPolicy = NO_RETRY,
) -> CallbackResult:
    request = parse_callback_request(query or {}, body, base64_encoded=base64_encoded)
    confirm = _KlarnaConfirmation(store, klarna, unknown, klarna_retry)
    if request.callback is not None and request.presented_hash is not None:
        return _record_callback(request.session_id, request.callback, request.presented_hash, confirm)
    # No body to record, or no secret to fold into the write: decide from the stored session.
    stored = store.get_session(request.session_id)
    _check_secret_on_file(stored, request.presented_hash)
    return confirm(request.session_id, known=stored is not None, url=_session_url(stored))


def parse_callback_request(
    query: Mapping[str, str], body: bytes | str | None, *, base64_encoded: bool = False
) -> CallbackRequest:
    """The URL's session id and secret and the body, checked (400 for anything malformed)."""
    session_id = _session_id_from(query)
    presented_hash = _presented_secret_hash(query)
    callback = parse_callback_body(body, base64_encoded=base64_encoded)
    if callback is not None and callback.session.session_id != session_id:
        raise BadRequest("body session.session_id differs from the URL's session_id")
    if callback is not None and callback.session.lacks_completion_details:
        # Final is final: a COMPLETED stored without its token could never reach the order service.
        # Klarna's Read Session carries the details, so settle it like an empty body.
        callback = None
    return CallbackRequest(session_id, presented_hash, callback)


def _session_id_from(query: Mapping[str, str]) -> str:
    session_id = query.get(SESSION_ID_PARAM)
    if not session_id:
        raise BadRequest(f"query parameter '{SESSION_ID_PARAM}' is required")
    if not is_session_id(session_id):
        raise BadRequest(f"query parameter '{SESSION_ID_PARAM}' is not a valid session id")
    return session_id


def _presented_secret_hash(query: Mapping[str, str]) -> str | None:
    secret = query.get(SECRET_PARAM)
    if not secret:
        return None
    if len(secret) > MAX_SECRET_LENGTH:
        raise BadRequest(f"query parameter '{SECRET_PARAM}' is too long")
    return hash_callback_secret(secret)


def parse_callback_body(body: bytes | str | None, *, base64_encoded: bool = False) -> CallbackBody | None:
    """The callback body, or None when it carries no session to record: empty, not JSON, or a JSON
    object without `session` (`{}`, as a related HPP product sends its retries). The caller then asks
    Klarna: a 4xx might end Klarna's retries of the event.

    JSON that is not a valid callback (not an object, a `session` with wrong types) is a malformed
    request (400), whatever the Content-Type said. Not JSON includes what the strict reader refuses
    (`NaN`, a lone surrogate, too deep, 1e400).
    """
    raw = body_bytes(body, what="callback body", base64_encoded=base64_encoded)
    if not raw.strip():
        return None
    try:
        payload = json_value(raw)
    except ValueError:
        return None
    if isinstance(payload, dict) and payload.get("session") is None:
        return None
    return validated_object(CallbackBody, payload, what="callback body")


def _record_callback(
    session_id: str, callback: CallbackBody, presented_hash: str, confirm: "_KlarnaConfirmation"
) -> CallbackResult:
    """The normal path: one conditional write that also checks the secret."""
    update = StatusUpdate(session=callback.session, source="callback", event_id=callback.event_id)
    result = confirm.store.record_status(update, callback_secret_hash=presented_hash)
    if result.outcome in ACCEPTED_OUTCOMES:
        return CallbackResult(session_id, result.outcome, "callback", result.stored_status)
    if result.outcome is WriteOutcome.SECRET_MISMATCH:
        raise Forbidden("callback secret does not match this session")
    # Unknown, or tracked without a secret: nothing vouches for the body, so Klarna is asked.
    return confirm(session_id, known=result.session is not None, url=_session_url(result.session))


def _session_url(stored: TrackedSession | None) -> str | None:
    """Where Klarna said the session is read (None: the documented form)."""
    return stored.session_url if stored is not None else None


def _check_secret_on_file(stored: TrackedSession | None, presented_hash: str | None) -> None:
    """A session with a secret on file is settled only for a caller who presents that secret."""
    if stored is None or not stored.has_callback_secret:
        return
    if presented_hash is None:
        raise Forbidden(f"query parameter '{SECRET_PARAM}' is required for this session")
    if not stored.accepts_callback_secret(presented_hash):
        raise Forbidden("callback secret does not match this session")


@dataclass(frozen=True)
class _KlarnaConfirmation:
    """Settling a callback by Klarna's own answer: read the session, record what Klarna says."""

    store: SessionStore
    klarna: KlarnaReader
    unknown: UnknownSessionReads
    retry: RetryPolicy

    def __call__(self, session_id: str, *, known: bool, url: str | None) -> CallbackResult:
        try:
            if known:
                session = self.klarna.read_session(session_id, url=url, retry=self.retry)
            else:  # budgeted (and read at the documented URL); its NotFound is the answer
                session = self.unknown.read(session_id, self.klarna, self.retry)
        except KlarnaNotFound:
            # Tracked, but Klarna no longer has it (expired): nothing to record; the poller settles expiry.
            return CallbackResult(session_id, "klarna_not_found", "klarna_read", None)
        except KlarnaRejected as exc:
            # Klarna refusing the tracker's own read says nothing about the callback: a 4xx would tell
            # Klarna to stop retrying it. Answer 5xx, so Klarna retries and the poller has a chance meanwhile.
            raise DependencyError("Klarna refused the tracker's Read Session") from exc
        result = self.store.record_status(StatusUpdate(session=session, source="klarna_read"))
        return CallbackResult(session_id, result.outcome, "klarna_read", result.stored_status)
