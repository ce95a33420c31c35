"""The sessions API's domain logic: create, track, read, disable and distribute HPP sessions.

Plain functions over pydantic models; `functions/sessions` only parses the event and maps the results.
Klarna is always asked first and the table written second, so a Klarna failure stores nothing. Every
write goes through the one write path (or, for a new session, the create); each operation asks for
only the ports (hpp_core.ports) it uses. A tracked session's Klarna calls go to the URLs its create
returned (kept in the row); only a session tracked without them gets the documented form.
"""

import re
from collections.abc import Callable, Sequence
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
    ValidationInfo,
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
from hpp_core.klarna import (
    NO_RETRY,
    KlarnaBadResponse,
    KlarnaError,
    KlarnaNotFound,
    KlarnaRejected,
    RetryHook,
    RetryPolicy,
)
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
    KlarnaDistributor,
    KlarnaReader,
    SessionCreator,
    SessionLookup,
    SessionStore,
    StatusRecorder,
)
from hpp_core.request_body import body_bytes, json_value, validated_object
from hpp_core.settings import Settings
from hpp_core.statuses import Status, is_final
from hpp_core.timestamps import to_epoch_millis, utc_now

CALLBACK_PATH = "/callbacks/hpp"
SOURCE: UpdateSource = "sessions_api"
_MAX_URL_LENGTH = 2048
_REQUEST_BODY = "request body"


# -- settings -----------------------------------------------------------------------------------------


class SessionsSettings(Settings):
    """The sessions function's settings: the shared ones plus where callbacks go, how to retry, and
    where idempotent creates are remembered."""

    # Klarna requires an https status_update URL. Only the local stack, whose gateway serves plain http
    # on 127.0.0.1, sets this (never the template), so no deployment can inherit it.
    allow_http_callback_base_url: bool = Field(alias="ALLOW_HTTP_CALLBACK_BASE_URL", default=False)
    # The API's public base URL (stage or base path included) when it is served under a custom domain;
    # otherwise the callback URL is derived from the request (domain name + stage).
    callback_base_url: AnyHttpUrl | None = Field(alias="CALLBACK_BASE_URL", default=None)
    # Powertools idempotency's table for POST /sessions with an Idempotency-Key (template.yaml).
    idempotency_table_name: str = Field(alias="IDEMPOTENCY_TABLE_NAME", min_length=3, max_length=255)
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
    def _base_url_only(cls, value: AnyHttpUrl | None, info: ValidationInfo) -> AnyHttpUrl | None:
        if value is None:
            return value
        if value.query or value.fragment:
            raise ValueError("must be a base URL without query or fragment, e.g. https://pay.example.com/hpp")
        if value.scheme != "https" and not info.data.get("allow_http_callback_base_url"):
            raise ValueError("must be an https:// URL: Klarna sends status callbacks over HTTPS only")
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
    payload = _json_body(body, base64_encoded, required="Klarna's create-session JSON")
    return validated_object(CreateSessionRequest, payload, what=_REQUEST_BODY)


def _json_body(body: str | None, base64_encoded: bool, *, required: str) -> object:
    raw = body_bytes(body, what=_REQUEST_BODY, base64_encoded=base64_encoded)
    if not raw.strip():
        raise BadRequest(f"request body is required: {required}")
    try:
        return json_value(raw)
    except ValueError as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}") from None


# -- the idempotency key ------------------------------------------------------------------------------

IDEMPOTENCY_KEY_HEADER = "Idempotency-Key"
_IDEMPOTENCY_KEY = re.compile(r"[\x20-\x7e]{1,255}")


def idempotency_key(values: Sequence[str]) -> str | None:
    """The request's Idempotency-Key (all the values it sent for the header), or None without one.

    1 to 255 printable ASCII characters, sent once; anything else is a 400, so a client never believes
    a create idempotent that is not.
    """
    if not values:
        return None
    if len(values) > 1:
        raise BadRequest(f"header '{IDEMPOTENCY_KEY_HEADER}' must be sent once")
    if _IDEMPOTENCY_KEY.fullmatch(values[0]) is None:
        raise BadRequest(f"header '{IDEMPOTENCY_KEY_HEADER}' must be 1 to 255 printable ASCII characters")
    return values[0]


# -- the distribution request ---------------------------------------------------------------------

# Only the obviously wrong is refused here (Klarna is the judge of the rest, and its 400 comes back):
# no dependency on an e-mail or phone library for that. Messages name the field, never its value.
EmailAddress = Annotated[str, StringConstraints(max_length=254, pattern=r"^[^@\s]{1,64}@[^@\s]+\.[^@\s.]+$")]
PhoneNumber = Annotated[str, StringConstraints(pattern=r"^\+?[0-9][0-9 ()./-]{3,30}$")]
CountryCode = Annotated[str, StringConstraints(pattern=r"^[A-Z]{2}$")]


class EmailContact(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    email: EmailAddress


class SmsContact(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    phone: PhoneNumber
    # ISO 3166-1 alpha-2, e.g. SE.
    phone_country: CountryCode


class DistributionRequest(BaseModel):
    """Klarna's distribution body: how to send the payment link and to whom (personal data: it goes to
    Klarna and nowhere else, never logged, stored or echoed)."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    method: str
    contact_information: EmailContact | SmsContact
    # Klarna documents it as unused; passed on when given.
    template: Annotated[str, StringConstraints(min_length=1, max_length=64)] | None = None

    def klarna_body(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)


class EmailDistribution(DistributionRequest):
    method: Literal["email"]
    contact_information: EmailContact


class SmsDistribution(DistributionRequest):
    method: Literal["sms"]
    contact_information: SmsContact


_DISTRIBUTION_METHODS: dict[str, type[DistributionRequest]] = {
    "email": EmailDistribution,
    "sms": SmsDistribution,
}


def parse_distribution_request(body: str | None, *, base64_encoded: bool = False) -> DistributionRequest:
    """The distribution request: `{"method": "email" | "sms", "contact_information": {...}}`."""
    payload = _json_body(body, base64_encoded, required='{"method": ..., "contact_information": {...}}')
    method = payload.get("method") if isinstance(payload, dict) else None
    model = _DISTRIBUTION_METHODS.get(method) if isinstance(method, str) else None
    if model is None:
        raise BadRequest(f"{_REQUEST_BODY} is invalid", details=["method: must be 'email' or 'sms'"])
    return validated_object(model, payload, what=_REQUEST_BODY)


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
            links=session.links(),
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


# Create failures that say for good what Klarna did with this body, so an idempotent retry (same key,
# same body) gets the same answer instead of another Create Session: Klarna refused the body (its 4xx,
# including the 404 for an unknown payment session: nothing was created, and the same body would be
# refused again), or Klarna created a session the tracker could not store or read (a second create would
# make a second session). Everything else (429, 5xx, timeouts, credentials, storage) may go away: it is
# not remembered, so the same key can be retried.
SETTLED_CREATE_FAILURES: tuple[type[Exception], ...] = (
    KlarnaRejected,
    BadRequest,
    SessionNotTracked,
    KlarnaBadResponse,
)


@dataclass(frozen=True)
class TrackResult:
    outcome: WriteOutcome
    session: TrackedSession


def track_session(
    session_id: str, *, klarna: KlarnaReader, store: SessionStore, retry: RetryPolicy = NO_RETRY
) -> TrackResult:
    """Start (or refresh) tracking a session created elsewhere, from Klarna's own answer. Idempotent.

    A session already tracked is read at the URL on file (its create's); a new one at the documented form.
    """
    stored = store.get_session(valid_session_id(session_id))
    url = stored.session_url if stored is not None else None
    session = klarna.read_session(session_id, url=url, retry=retry)  # 404 -> 404
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
    url = stored.session_url if stored is not None else None
    try:
        klarna.disable_session(session_id, url=url, retry=retry)  # 404 -> 404
    except KlarnaRejected as refused:
        # Klarna's documented 400: the session is COMPLETED. Learn (and record) what it is now.
        observed, _ = _read_back(klarna, session_id, url, retry)
        if observed is not None:
            store.record_status(StatusUpdate(session=observed, source=SOURCE))
            if observed.status == Status.DISABLED:
                return DisableResult("already_disabled", "klarna_read")
        state = f": Klarna reports it {observed.status}" if observed is not None else ""
        raise Conflict(f"Klarna refused to disable the session{state}") from refused
    observed, read_error = _read_back(klarna, session_id, url, retry)
    recorded_from = _record_disabled(session_id, store, observed, stored, now)
    return DisableResult("disabled", recorded_from, read_error)


def _read_back(
    klarna: KlarnaReader, session_id: str, url: str | None, retry: RetryPolicy
) -> tuple[KlarnaSession | None, str | None]:
    try:
        return klarna.read_session(session_id, url=url, retry=retry), None
    except KlarnaError as exc:
        return None, str(exc)


def distribute_session(
    session_id: str,
    request: DistributionRequest,
    *,
    klarna: KlarnaDistributor,
    store: SessionStore,
    retry: RetryPolicy = NO_RETRY,
    timeout_seconds: float | None = None,
) -> None:
    """Have Klarna send the consumer the payment link (e-mail or SMS), at the session's distribution_url.

    Only for a tracked session that is not final (409 without a Klarna call). Klarna's 400 means a field
    broke its rules or the merchant disabled the session: the session is read back to tell which, and a
    final one recorded and answered 409. Klarna's messages may quote the contact data, so they are never
    passed on (its status, error code and correlation id are).
    """
    stored = tracked_session(session_id, store=store)
    if stored.is_final:
        raise Conflict(f"session is already {stored.status}: no payment link can be sent for it")
    try:
        klarna.distribute_session(
            session_id, request.klarna_body(), url=stored.distribution_url, timeout_seconds=timeout_seconds
        )
    except KlarnaRejected as refused:
        refused.error_messages = []
        observed, _ = _read_back(klarna, session_id, stored.session_url, retry)
        if observed is not None:
            store.record_status(StatusUpdate(session=observed, source=SOURCE))
            if is_final(observed.status):
                reason = f"Klarna refused to send the link: the session is {observed.status}"
                raise Conflict(reason) from refused
        raise
    except KlarnaError as failed:
        failed.error_messages = []
        raise


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
