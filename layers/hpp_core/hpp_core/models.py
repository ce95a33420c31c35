"""pydantic models for what Klarna sends and what the tracker records, and the results of storing it.

Unknown fields Klarna may add are ignored (never stored: Read Session can carry personal data such as
`customer`), wrong types are rejected with a message naming the field, and the authorization token is a
`SecretStr` so that no repr, log line or error message can show it by accident. These are what the ports
(hpp_core.ports) take and return; how they are stored is the repository's business alone.
"""

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from functools import cached_property
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    StringConstraints,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WrapValidator,
)

from hpp_core.callback_secrets import hashes_match
from hpp_core.statuses import Status, is_final
from hpp_core.timestamps import Timestamp, format_timestamp, to_epoch_millis

# Klarna's session ids are UUIDs; this allows any id Klarna might use while refusing anything that could
# change the meaning of a URL path or a log line (slashes, dots, spaces, control characters).
SESSION_ID_PATTERN = r"^[A-Za-z0-9_-]{1,128}$"
SessionId = Annotated[str, StringConstraints(pattern=SESSION_ID_PATTERN)]
StatusText = Annotated[str, StringConstraints(pattern=r"^[A-Z][A-Z0-9_]{0,63}$")]
ShortText = Annotated[str, StringConstraints(min_length=1, max_length=1024)]

UpdateSource = Literal["callback", "klarna_read", "sessions_api", "poller"]
KlarnaUrl = Annotated[str, StringConstraints(min_length=1, max_length=2048)]

_SESSION_ID = re.compile(SESSION_ID_PATTERN)


def is_session_id(value: str) -> bool:
    """The check `SessionId` makes, for ids that arrive outside a model (a query string, a path)."""
    # fullmatch: `$` alone would also accept a trailing newline.
    return _SESSION_ID.fullmatch(value) is not None


class KlarnaSession(BaseModel):
    """The session object of Read Session and of a status callback's `session` field."""

    model_config = ConfigDict(extra="ignore", strict=False, frozen=True)

    session_id: SessionId
    status: StatusText
    updated_at: Timestamp
    expires_at: Timestamp | None = None
    authorization_token: SecretStr | None = Field(default=None, min_length=1, max_length=4096)
    order_id: ShortText | None = None
    klarna_reference: ShortText | None = None

    @property
    def lacks_completion_details(self) -> bool:
        """COMPLETED without the authorization token or order id a downstream service needs to act."""
        return self.status == Status.COMPLETED and self.authorization_token is None and self.order_id is None


def _none_if_invalid(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    # A consumer link Klarna sent in an unexpected shape is dropped: it must not fail a create that
    # Klarna has already carried out.
    try:
        return handler(value)
    except ValidationError:
        return None


ConsumerLink = Annotated[KlarnaUrl | None, WrapValidator(_none_if_invalid)]


class DistributionModule(BaseModel):
    """Create's `distribution_module`, kept without its `token`.

    The token lets whoever holds it drive the session's distribution module: a bearer value the tracker
    never uses. The caller got it in the create answer; keeping it would put a credential-like value in
    the table, its stream and every tool that reads rows. The two URLs are consumer links like the rest.
    """

    model_config = ConfigDict(extra="ignore", frozen=True, defer_build=True)

    standalone_url: ConsumerLink = None
    generation_url: ConsumerLink = None


class ConsumerLinks(BaseModel):
    """The links Create Session returns once, kept with the session so that `GET` can give them again
    (docs/klarna-hpp.md: they cannot be rebuilt). `distribution_url` is also where distribution goes.

    Built when first used (`defer_build`, inherited by TrackedSession and KlarnaCreatedSession): the
    callback's normal path validates none of them, and its cold start is what Klarna's 3 seconds wait for.
    """

    model_config = ConfigDict(extra="ignore", frozen=True, defer_build=True)

    redirect_url: ConsumerLink = None
    qr_code_url: ConsumerLink = None
    distribution_url: ConsumerLink = None
    manual_identification_check_url: ConsumerLink = None
    distribution_module: Annotated[DistributionModule | None, WrapValidator(_none_if_invalid)] = None

    def links(self) -> "ConsumerLinks":
        """Only the consumer links (of a model that has more fields)."""
        return ConsumerLinks.model_validate(self.model_dump(include=set(ConsumerLinks.model_fields)))


class KlarnaCreatedSession(ConsumerLinks):
    """What the tracker needs from Create Session's answer (the caller gets Klarna's whole body)."""

    session_id: SessionId
    session_url: KlarnaUrl | None = None
    expires_at: Timestamp | None = None


@dataclass(frozen=True)
class KlarnaCreated:
    """Create Session's answer: the fields the tracker needs, and the body as Klarna sent it."""

    session: KlarnaCreatedSession
    body: dict[str, Any]


class CallbackBody(BaseModel):
    """Klarna's status callback: `{"event_id": ..., "session": {...}}`."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    event_id: ShortText | None = None
    session: KlarnaSession


class StatusUpdate(BaseModel):
    """One observation of a session's status, from wherever it came, ready to be recorded."""

    model_config = ConfigDict(frozen=True)

    session: KlarnaSession
    source: UpdateSource
    event_id: str | None = None

    @property
    def session_id(self) -> str:
        return self.session.session_id

    @property
    def status(self) -> str:
        return self.session.status

    @property
    def is_final(self) -> bool:
        return is_final(self.session.status)

    @property
    def updated_at_ms(self) -> int:
        return to_epoch_millis(self.session.updated_at)

    @property
    def updated_at(self) -> str:
        return format_timestamp(self.session.updated_at)

    @property
    def expires_at(self) -> str | None:
        return format_timestamp(self.session.expires_at) if self.session.expires_at else None


class TrackedSession(ConsumerLinks):
    """A session as the tracker stores it: every read of a row, and every stream image of one, becomes
    this (the repository's one row-to-model mapping). The consumer links are those of its create (none
    for a session created elsewhere).

    Two fields are for the core's own decisions and excluded from every dump, so the public view
    (`sessions.session_view`) cannot show them: the callback secret's hash and the ordering key.
    """

    session_id: str = Field(min_length=1, max_length=256)
    status: str = Field(min_length=1, max_length=64)
    updated_at: Timestamp
    # The one write path's ordering key: `updated_at` in epoch milliseconds, or 0 for a session the
    # tracker created that Klarna has not reported on yet (so that any observation from Klarna wins).
    updated_at_ms: int = Field(default=0, exclude=True)
    expires_at: Timestamp | None = None
    authorization_token: SecretStr | None = None
    order_id: str | None = None
    klarna_reference: str | None = None
    session_url: str | None = None
    last_event_id: str | None = None
    last_source: str | None = None
    recorded_at: Timestamp | None = None
    # The SHA-256 of the secret in the session's status_update URL; None when it was tracked without one
    # (PUT /sessions, or first seen through Klarna's own answer).
    callback_secret_hash: str | None = Field(default=None, exclude=True, repr=False)

    @property
    def is_final(self) -> bool:
        return is_final(self.status)

    @property
    def has_callback_secret(self) -> bool:
        return bool(self.callback_secret_hash)

    def accepts_callback_secret(self, presented_hash: str) -> bool:
        """A secret is on file and `presented_hash` is its hash (compared in constant time)."""
        return self.callback_secret_hash is not None and hashes_match(
            self.callback_secret_hash, presented_hash
        )


class WriteOutcome(StrEnum):
    APPLIED = "applied"
    STALE = "stale"
    DUPLICATE = "duplicate"
    ALREADY_FINAL = "already_final"
    # Callback writes only: the presented secret does not match the one on file.
    SECRET_MISMATCH = "secret_mismatch"
    # Callback writes only: the session is not tracked.
    UNKNOWN_SESSION = "unknown_session"
    # Callback writes only: the session was tracked without a callback secret (PUT /sessions, adopted).
    NO_SECRET_ON_FILE = "no_secret_on_file"


# A stale, duplicate or post-final update is a successful no-op, never an error.
ACCEPTED_OUTCOMES = frozenset(
    {WriteOutcome.APPLIED, WriteOutcome.STALE, WriteOutcome.DUPLICATE, WriteOutcome.ALREADY_FINAL}
)


@dataclass(frozen=True)
class WriteResult:
    """What the one write path did with an update."""

    outcome: WriteOutcome
    # The session after the write when applied, as it stood when not (None for an unknown session). Given
    # as a function, it is built when first asked for: the callback answers with the status it wrote
    # and never asks, so an applied write's answer is read into a model only when someone uses it.
    stored: "TrackedSession | Callable[[], TrackedSession] | None"
    # The stored status when it is known without the session (an applied write's is the one it wrote).
    known_status: str | None = None

    @cached_property
    def session(self) -> TrackedSession | None:
        return self.stored() if callable(self.stored) else self.stored

    @property
    def stored_status(self) -> str | None:
        if self.known_status is not None:
            return self.known_status
        return None if self.session is None else self.session.status

    @property
    def stored_final(self) -> bool:
        status = self.stored_status
        return status is not None and is_final(status)


@dataclass(frozen=True)
class DueSession:
    """A not-final session as the poller's due index shows it (possibly a little behind the session)."""

    session_id: str
    poll_shard: str
    # When it is due (epoch ms), and how many polls in a row found nothing new since the last change.
    poll_due_at: int
    poll_attempts: int
    # Consecutive polls Klarna answered 404 before expires_at.
    poll_not_found: int
    status: str | None
    updated_at_ms: int | None
    expires_at: datetime | None
    # Where Klarna said the session is read (None: the documented form).
    session_url: str | None = None


# Where the next page of a due query starts: the store's own bookmark, handed back unchanged.
PageKey = Mapping[str, Any]


class PollerState(BaseModel):
    """The poller's own memory across runs (one item in the state table): how much of what it reads
    lately were changes no callback had reported, and whether that has it catching up.

    Both counts are exponentially decaying sums (each run's counts added, older ones fading with time),
    so the share follows the last few minutes whatever the runs' sizes, and a gap between runs ages it.
    """

    model_config = ConfigDict(frozen=True, extra="ignore", defer_build=True)  # the poller's alone

    unreported_changes: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    reads: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    updated_at_ms: int = Field(default=0, ge=0)
    catching_up: bool = False


@dataclass(frozen=True)
class DuePage:
    """One page of a due query: the sessions, how many items the store read for it, where to go on."""

    sessions: list[DueSession]
    scanned_count: int
    next_start_key: PageKey | None


def describe_validation_error(error: ValidationError, prefix: str = "") -> list[str]:
    """Readable `field: problem` lines that never echo the input (it may hold a token)."""
    lines = []
    for item in error.errors(include_input=False, include_url=False, include_context=False):
        location = ".".join(str(part) for part in item["loc"]) or "body"
        lines.append(f"{prefix}{location}: {item['msg']}")
    return lines


__all__ = [
    "ACCEPTED_OUTCOMES",
    "SESSION_ID_PATTERN",
    "CallbackBody",
    "ConsumerLinks",
    "DistributionModule",
    "DuePage",
    "DueSession",
    "KlarnaCreated",
    "KlarnaCreatedSession",
    "KlarnaSession",
    "PageKey",
    "PollerState",
    "SessionId",
    "StatusUpdate",
    "TrackedSession",
    "UpdateSource",
    "WriteOutcome",
    "WriteResult",
    "describe_validation_error",
    "is_session_id",
]
