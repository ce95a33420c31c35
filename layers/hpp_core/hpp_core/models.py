"""pydantic models for what Klarna sends and what the tracker records.

Unknown fields Klarna may add are ignored (never stored: Read Session can carry personal data such as
`customer`), wrong types are rejected with a message naming the field, and the authorization token is a
`SecretStr` so that no repr, log line or error message can show it by accident.
"""

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, StringConstraints, ValidationError

from hpp_core.statuses import Status, is_final
from hpp_core.timestamps import KlarnaTimestamp, format_timestamp, to_epoch_millis

# Klarna's session ids are UUIDs; this allows any id Klarna might use while refusing anything that could
# change the meaning of a URL path or a log line (slashes, dots, spaces, control characters).
SESSION_ID_PATTERN = r"^[A-Za-z0-9_-]{1,128}$"
SessionId = Annotated[str, StringConstraints(pattern=SESSION_ID_PATTERN)]
StatusText = Annotated[str, StringConstraints(pattern=r"^[A-Z][A-Z0-9_]{0,63}$")]
ShortText = Annotated[str, StringConstraints(min_length=1, max_length=1024)]

UpdateSource = Literal["callback", "klarna_read", "sessions_api", "poller"]

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
    updated_at: KlarnaTimestamp
    expires_at: KlarnaTimestamp | None = None
    authorization_token: SecretStr | None = Field(default=None, min_length=1, max_length=4096)
    order_id: ShortText | None = None
    klarna_reference: ShortText | None = None

    @property
    def lacks_completion_details(self) -> bool:
        """COMPLETED without the authorization token or order id a downstream service needs to act."""
        return self.status == Status.COMPLETED and self.authorization_token is None and self.order_id is None


class KlarnaCreatedSession(BaseModel):
    """What the tracker needs from Create Session's answer (the caller gets Klarna's whole body)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    session_id: SessionId
    session_url: Annotated[str, StringConstraints(min_length=1, max_length=2048)] | None = None
    expires_at: KlarnaTimestamp | None = None


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


class TrackedSession(BaseModel):
    """A session as the tracker stores it (the public view: never the callback secret's hash)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    session_id: str
    status: str
    updated_at: str
    expires_at: str | None = None
    authorization_token: SecretStr | None = None
    order_id: str | None = None
    klarna_reference: str | None = None
    session_url: str | None = None
    last_event_id: str | None = None
    last_source: str | None = None
    recorded_at: str | None = None


def describe_validation_error(error: ValidationError, prefix: str = "") -> list[str]:
    """Readable `field: problem` lines that never echo the input (it may hold a token)."""
    lines = []
    for item in error.errors(include_input=False, include_url=False, include_context=False):
        location = ".".join(str(part) for part in item["loc"]) or "body"
        lines.append(f"{prefix}{location}: {item['msg']}")
    return lines


__all__ = [
    "CallbackBody",
    "KlarnaCreatedSession",
    "KlarnaSession",
    "SessionId",
    "StatusUpdate",
    "TrackedSession",
    "UpdateSource",
    "describe_validation_error",
    "is_session_id",
]
