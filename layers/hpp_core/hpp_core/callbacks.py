"""What to do with one Klarna status callback: the domain logic behind `POST /callbacks/hpp`.

The normal path is one conditional write that also checks the URL's secret. Everything else (unknown
session, empty body, session tracked without a secret) is settled by asking Klarna, never by trusting the
body: an unsigned request can only ever make the tracker *read* the truth.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hpp_core.callback_secrets import MAX_SECRET_LENGTH, SECRET_PARAM, SESSION_ID_PARAM, hash_callback_secret
from hpp_core.errors import BadRequest, DependencyError, Forbidden, NotFound
from hpp_core.klarna import KlarnaNotFound, KlarnaRejected
from hpp_core.models import (
    ACCEPTED_OUTCOMES,
    CallbackBody,
    StatusUpdate,
    TrackedSession,
    WriteOutcome,
    is_session_id,
)
from hpp_core.ports import KlarnaReader, SessionStore
from hpp_core.request_body import body_bytes, json_value, validated_object


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
    base64_encoded: bool = False,
) -> CallbackResult:
    request = parse_callback_request(query or {}, body, base64_encoded=base64_encoded)
    if request.callback is not None and request.presented_hash is not None:
        return _record_callback(request.session_id, request.callback, request.presented_hash, store, klarna)
    # No body to record, or no secret to fold into the write: decide from the stored session.
    stored = store.get_session(request.session_id)
    _check_secret_on_file(stored, request.presented_hash)
    return _confirm_with_klarna(request.session_id, store, klarna, known=stored is not None)


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
    """The callback body, or None when it is empty or not JSON (the caller then asks Klarna).

    JSON that is not a valid callback is a malformed request (400), whatever the Content-Type said.
    Not JSON includes what the strict reader refuses (`NaN`, a lone surrogate, too deep, 1e400).
    """
    raw = body_bytes(body, what="callback body", base64_encoded=base64_encoded)
    if not raw.strip():
        return None
    try:
        payload = json_value(raw)
    except ValueError:
        return None
    return validated_object(CallbackBody, payload, what="callback body")


def _record_callback(
    session_id: str, callback: CallbackBody, presented_hash: str, store: SessionStore, klarna: KlarnaReader
) -> CallbackResult:
    """The normal path: one conditional write that also checks the secret."""
    update = StatusUpdate(session=callback.session, source="callback", event_id=callback.event_id)
    result = store.record_status(update, callback_secret_hash=presented_hash)
    if result.outcome in ACCEPTED_OUTCOMES:
        return CallbackResult(session_id, result.outcome, "callback", result.stored_status)
    if result.outcome is WriteOutcome.SECRET_MISMATCH:
        raise Forbidden("callback secret does not match this session")
    # Unknown, or tracked without a secret: nothing vouches for the body, so Klarna is asked.
    return _confirm_with_klarna(session_id, store, klarna, known=result.session is not None)


def _check_secret_on_file(stored: TrackedSession | None, presented_hash: str | None) -> None:
    """A session with a secret on file is settled only for a caller who presents that secret."""
    if stored is None or not stored.has_callback_secret:
        return
    if presented_hash is None:
        raise Forbidden(f"query parameter '{SECRET_PARAM}' is required for this session")
    if not stored.accepts_callback_secret(presented_hash):
        raise Forbidden("callback secret does not match this session")


def _confirm_with_klarna(
    session_id: str, store: SessionStore, klarna: KlarnaReader, *, known: bool
) -> CallbackResult:
    try:
        session = klarna.read_session(session_id)
    except KlarnaNotFound:
        if not known:
            raise NotFound("session is unknown to the tracker and to Klarna") from None
        # Tracked, but Klarna no longer has it (expired): nothing to record; the poller settles expiry.
        return CallbackResult(session_id, "klarna_not_found", "klarna_read", None)
    except KlarnaRejected as exc:
        # Klarna refusing the tracker's own read says nothing about the callback: a 4xx would tell Klarna
        # to stop retrying it. Answer 5xx, so Klarna retries and the poller has a chance meanwhile.
        raise DependencyError("Klarna refused the tracker's Read Session") from exc
    result = store.record_status(StatusUpdate(session=session, source="klarna_read"))
    return CallbackResult(session_id, result.outcome, "klarna_read", result.stored_status)
