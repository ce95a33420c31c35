"""The sessions API's domain logic: create, track, read and disable HPP sessions.

Plain functions over pydantic models; `functions/sessions` only parses the event and maps the results.
Klarna is always asked first and the table written second, so a Klarna failure stores nothing. Every
write goes through the one write path (or, for a new session, the create); each operation asks for
only the ports (hpp_core.ports) it uses.
"""

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    AnyHttpUrl,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
)

from hpp_core.callback_secrets import hash_callback_secret, new_callback_secret, status_update_url
from hpp_core.errors import (
    BadRequest,
    Conflict,
    Misconfigured,
    NotFound,
    SessionNotTracked,
    StorageUnavailable,
    TrackerError,
)
from hpp_core.klarna import NO_RETRY, KlarnaError, KlarnaNotFound, KlarnaRejected, RetryHook, RetryPolicy
from hpp_core.models import (
    KlarnaCreated,
    KlarnaSession,
    StatusUpdate,
    TrackedSession,
    UpdateSource,
    WriteOutcome,
    is_session_id,
)
from hpp_core.ports import (
    KlarnaCreator,
    KlarnaDisabler,
    KlarnaReader,
    SessionCreator,
    SessionLookup,
    SessionStore,
    StatusRecorder,
)
from hpp_core.request_body import body_bytes, json_value, validated_object
from hpp_core.settings import Settings
from hpp_core.statuses import Status
from hpp_core.timestamps import to_epoch_millis, utc_now

CALLBACK_PATH = "/callbacks/hpp"
SOURCE: UpdateSource = "sessions_api"
_MAX_URL_LENGTH = 2048
_REQUEST_BODY = "request body"


# -- settings -----------------------------------------------------------------------------------------


class SessionsSettings(Settings):
    """The sessions function's settings: the shared ones plus where callbacks go and how to retry."""

    # The API's public base URL (stage or base path included) when it is served under a custom domain;
    # otherwise the callback URL is derived from the request (domain name + stage).
    callback_base_url: AnyHttpUrl | None = Field(alias="CALLBACK_BASE_URL", default=None)
    # Read and Disable (idempotent) are retried on 429/5xx/timeouts within this many attempts and seconds.
    klarna_retry_attempts: int = Field(alias="KLARNA_RETRY_ATTEMPTS", default=4, ge=1, le=10)
    klarna_retry_budget_seconds: float = Field(alias="KLARNA_RETRY_BUDGET_SECONDS", default=8.0, gt=0, le=25)

    @field_validator("callback_base_url", mode="before")
    @classmethod
    def _empty_means_derive(cls, value: object) -> object:
        # CloudFormation cannot leave an environment variable out, only set it to "".
        return None if value == "" else value

    @field_validator("callback_base_url")
    @classmethod
    def _base_url_only(cls, value: AnyHttpUrl | None) -> AnyHttpUrl | None:
        if value is not None and (value.query or value.fragment):
            raise ValueError("must be a base URL without query or fragment, e.g. https://pay.example.com/hpp")
        return value

    @property
    def callback_base(self) -> str | None:
        return str(self.callback_base_url).rstrip("/") if self.callback_base_url else None

    def retry_policy(self, on_retry: RetryHook | None = None) -> RetryPolicy:
        return RetryPolicy(
            max_attempts=self.klarna_retry_attempts,
            budget_seconds=self.klarna_retry_budget_seconds,
            on_retry=on_retry,
        )


def callback_url(
    configured_base: str | None, *, domain_name: str | None, stage: str | None, api_id: str | None
) -> str:
    """The public URL of `POST /callbacks/hpp`, which Klarna will call.

    Derived from the request only when it came through the API's own execute-api domain: under a custom
    domain the stage is not part of the path (a base path mapping is), so guessing would give Klarna a
    URL that does not reach the tracker. Then CALLBACK_BASE_URL must say it.
    """
    if configured_base:
        return f"{configured_base}{CALLBACK_PATH}"
    if domain_name and stage and api_id and domain_name.startswith(f"{api_id}.execute-api."):
        return f"https://{domain_name}/{stage}{CALLBACK_PATH}"
    raise Misconfigured(
        "cannot tell the public callback URL from this request (custom domain?): "
        "set CALLBACK_BASE_URL to the API's public base URL"
    )


# -- the create request -------------------------------------------------------------------------------


def _absolute_url(*schemes: str) -> Callable[[str], str]:
    def check(value: str) -> str:
        try:
            parts = urlsplit(value)
        except ValueError:
            parts = None
        if parts is None or parts.scheme not in schemes or not parts.netloc:
            raise ValueError(f"must be an absolute {' or '.join(s + '://' for s in schemes)} URL")
        return value

    return check


UrlText = Annotated[str, StringConstraints(min_length=1, max_length=_MAX_URL_LENGTH)]
HttpsUrl = Annotated[UrlText, AfterValidator(_absolute_url("https"))]
# Merchant URLs may hold Klarna's placeholders ({{session_id}}, ...): checked as text, never normalised.
MerchantUrl = Annotated[UrlText, AfterValidator(_absolute_url("https", "http"))]


class MerchantUrls(BaseModel):
    """`merchant_urls` without `status_update`: that one is the tracker's own callback URL."""

    # Keys Klarna may add later pass through to Klarna, which validates them.
    model_config = ConfigDict(extra="allow", frozen=True)

    success: MerchantUrl | None = None
    cancel: MerchantUrl | None = None
    back: MerchantUrl | None = None
    failure: MerchantUrl | None = None
    error: MerchantUrl | None = None
    status_update: object = None

    @field_validator("status_update", mode="before")
    @classmethod
    def _tracker_owns_status_update(cls, value: object) -> object:
        # Runs only when the key is present (even as null): any value at all is refused.
        raise ValueError(
            "must be left out: the tracker sets status_update to its own callback URL "
            "with a per-session secret"
        )


class SessionOptions(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    # Checked here because it decides what a COMPLETED session carries (token or order id).
    place_order_mode: Literal["NONE", "PLACE_ORDER", "CAPTURE_ORDER"] | None = None


class CreateSessionRequest(BaseModel):
    """Klarna's Create Session body, minus `merchant_urls.status_update`.

    Known fields are type-checked here (messages name the field); unknown top-level fields and unknown
    keys inside `merchant_urls` / `options` pass through to Klarna unchanged, so a field Klarna adds
    later needs no tracker release, and Klarna's own 400 names anything it rejects.
    """

    model_config = ConfigDict(extra="allow", frozen=True)

    payment_session_url: HttpsUrl
    merchant_urls: MerchantUrls | None = None
    options: SessionOptions | None = None
    profile_id: Annotated[str, StringConstraints(min_length=1, max_length=1024)] | None = None

    def klarna_body(self, status_update: str) -> dict[str, Any]:
        body = self.model_dump(mode="json", exclude_unset=True, exclude_none=True)
        body["merchant_urls"] = {**body.get("merchant_urls", {}), "status_update": status_update}
        return body


def parse_create_request(body: str | None, *, base64_encoded: bool = False) -> CreateSessionRequest:
    """The create request from the event's body; the size is checked before anything is parsed."""
    raw = body_bytes(body, what=_REQUEST_BODY, base64_encoded=base64_encoded)
    if not raw.strip():
        raise BadRequest("request body is required: Klarna's create-session JSON")
    try:
        payload = json_value(raw)
    except ValueError as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}") from None
    return validated_object(CreateSessionRequest, payload, what=_REQUEST_BODY)


def valid_session_id(session_id: str) -> str:
    if not is_session_id(session_id):
        raise BadRequest("path parameter 'session_id' is not a valid session id")
    return session_id


# -- operations ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CreateResult:
    created: KlarnaCreated
    # The row existed already (the session's first callback was stored first): tracked, without our hash.
    already_tracked: bool

    @property
    def session_id(self) -> str:
        return self.created.session.session_id


def create_session(
    request: CreateSessionRequest,
    *,
    callback_url: str,
    klarna: KlarnaCreator,
    store: SessionCreator,
    timeout_seconds: float | None = None,
) -> CreateResult:
    """Create at Klarna with the tracker's callback URL and a fresh secret, then store it as WAITING.

    Klarna first: if it fails, nothing is stored. If the store fails after Klarna created the session,
    the error carries the session's id so the caller can disable it or track it with PUT.
    """
    secret = new_callback_secret()
    body = request.klarna_body(status_update_url(callback_url, secret))
    try:
        created = klarna.create_session(body, timeout_seconds=timeout_seconds)
    except KlarnaNotFound as exc:
        raise BadRequest(
            "payment_session_url: Klarna does not know this payment session, or it has expired"
        ) from exc
    session = created.session
    try:
        store.create_session(
            session.session_id,
            expires_at=session.expires_at,
            session_url=session.session_url,
            callback_secret_hash=hash_callback_secret(secret),
        )
    except Conflict:
        return CreateResult(created, already_tracked=True)
    except Exception as exc:  # whatever failed, the caller must learn the id of the session Klarna made
        reason = exc.message if isinstance(exc, TrackerError) else "unexpected error"
        raise SessionNotTracked(
            f"Klarna created session {session.session_id} but the tracker could not store it ({reason}): "
            "start tracking it with PUT /sessions/{session_id}, or disable it with DELETE",
            session_id=session.session_id,
            session_url=session.session_url,
        ) from exc
    return CreateResult(created, already_tracked=False)


@dataclass(frozen=True)
class TrackResult:
    outcome: WriteOutcome
    session: TrackedSession


def track_session(
    session_id: str, *, klarna: KlarnaReader, store: StatusRecorder, retry: RetryPolicy = NO_RETRY
) -> TrackResult:
    """Start (or refresh) tracking a session created elsewhere, from Klarna's own answer. Idempotent."""
    session = klarna.read_session(valid_session_id(session_id), retry=retry)  # 404 -> 404
    result = store.record_status(StatusUpdate(session=session, source=SOURCE))
    if result.session is None:  # a write without a secret creates a missing session, so this cannot be
        raise StorageUnavailable("session storage returned no session")
    return TrackResult(result.outcome, result.session)


def tracked_session(session_id: str, *, store: SessionLookup) -> TrackedSession:
    session = store.get_session(valid_session_id(session_id))
    if session is None:
        raise NotFound("session is not tracked")
    return session


def session_view(session: TrackedSession) -> dict[str, Any]:
    """The JSON answer for GET/PUT: the tracked state, with the authorization token revealed.

    TrackedSession excludes the secret hash and its ordering key from every dump and has no poll or TTL
    fields, so none of those can leak.
    """
    view = session.model_dump(mode="json", exclude_none=True)
    if session.authorization_token is not None:
        view["authorization_token"] = session.authorization_token.get_secret_value()
    return view


@dataclass(frozen=True)
class DisableResult:
    # "disabled" (by this call) or "already_disabled".
    outcome: str
    # Where the recorded DISABLED came from: Klarna's read-back, the tracker's clock (read-back failed or
    # lagged), or the table (already DISABLED there; Klarna not called).
    recorded_from: Literal["klarna_read", "tracker_clock", "table"]
    read_back_error: str | None = None


def disable_session(
    session_id: str,
    *,
    klarna: KlarnaDisabler,
    store: SessionStore,
    retry: RetryPolicy = NO_RETRY,
    now: Callable[[], datetime] = utc_now,
) -> DisableResult:
    """Disable at Klarna, then record DISABLED.

    Disable's 204 has no body, and Klarna's last `updated_at` may be ahead of this clock, so DISABLED
    stamped "now" could be refused as stale. The session is therefore read back and Klarna's own DISABLED
    (with Klarna's time) recorded; if the read fails or still shows the old status, DISABLED is stamped
    1 ms after the newest `updated_at` the tracker knows (or now, if later). That is safe: after a 204
    nothing can follow DISABLED, which is final.
    """
    stored = store.get_session(valid_session_id(session_id))
    if stored is not None and stored.status == Status.DISABLED:
        return DisableResult("already_disabled", "table")
    if stored is not None and stored.is_final:
        raise Conflict(
            f"session is already {stored.status}: only a session that is not final can be disabled"
        )
    try:
        klarna.disable_session(session_id, retry=retry)  # 404 -> 404
    except KlarnaRejected as refused:
        # Klarna's documented 400: the session is COMPLETED. Learn (and record) what it is now.
        observed, _ = _read_back(klarna, session_id, retry)
        if observed is not None:
            store.record_status(StatusUpdate(session=observed, source=SOURCE))
            if observed.status == Status.DISABLED:
                return DisableResult("already_disabled", "klarna_read")
        state = f": Klarna reports it {observed.status}" if observed is not None else ""
        raise Conflict(f"Klarna refused to disable the session{state}") from refused
    observed, read_error = _read_back(klarna, session_id, retry)
    recorded_from = _record_disabled(session_id, store, observed, stored, now)
    return DisableResult("disabled", recorded_from, read_error)


def _read_back(
    klarna: KlarnaReader, session_id: str, retry: RetryPolicy
) -> tuple[KlarnaSession | None, str | None]:
    try:
        return klarna.read_session(session_id, retry=retry), None
    except KlarnaError as exc:
        return None, str(exc)


def _record_disabled(
    session_id: str,
    store: StatusRecorder,
    observed: KlarnaSession | None,
    stored: TrackedSession | None,
    now: Callable[[], datetime],
) -> Literal["klarna_read", "tracker_clock"]:
    recorded_from: Literal["klarna_read", "tracker_clock"]
    if observed is not None and observed.status == Status.DISABLED:
        update, recorded_from = StatusUpdate(session=observed, source=SOURCE), "klarna_read"
    else:
        update, recorded_from = _disabled_after(session_id, observed, stored, now), "tracker_clock"
    for _ in range(3):
        result = store.record_status(update)
        if result.outcome is not WriteOutcome.STALE:
            return recorded_from
        # A newer observation was recorded meanwhile (a callback, the poller): stamp just after it.
        update, recorded_from = _disabled_after(session_id, observed, result.session, now), "tracker_clock"
    raise StorageUnavailable("could not record DISABLED: the session kept changing; try again")


def _disabled_after(
    session_id: str,
    observed: KlarnaSession | None,
    stored: TrackedSession | None,
    now: Callable[[], datetime],
) -> StatusUpdate:
    """DISABLED, stamped after everything known about the session (and no earlier than now)."""
    known = [to_epoch_millis(now())]
    if stored is not None:
        known.append(stored.updated_at_ms + 1)
    if observed is not None:
        known.append(to_epoch_millis(observed.updated_at) + 1)
    stamp = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=max(known))
    latest = observed if observed is not None else stored
    session = KlarnaSession(
        session_id=session_id,
        status=Status.DISABLED.value,
        updated_at=stamp,
        expires_at=latest.expires_at if latest is not None else None,
    )
    return StatusUpdate(session=session, source=SOURCE)
