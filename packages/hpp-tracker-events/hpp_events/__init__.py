"""The events hpp-tracker puts on its EventBridge bus, as pydantic models, and their parser.

For the services that consume them: `parse_event` takes an event as EventBridge delivers it (a Lambda
event from an EventBridge rule, or the body of an SQS message a rule filled) and returns it typed,
`SessionCompleted` or `SessionStatusChanged`, each Powertools' `EventBridgeModel` with its detail. What
is not the tracker's (another source or detail type, not an EventBridge event) raises `NotATrackerEvent`;
a tracker event whose detail breaks its schema raises `BrokenTrackerEvent`. Neither is worth retrying.

The models accept exactly what the tracker's JSON Schemas (schemas/*.json in its repository) accept;
its tests check that against the schemas and against what its publisher emits. The authorization token
is a `SecretStr`: it shows as `**********` in logs and reprs until you call `get_secret_value()`.
Error messages name fields and problems, never values.

This package depends on pydantic and Powertools only, not on the tracker's code.
"""

import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any, Final, Literal, overload

from aws_lambda_powertools.utilities.parser import parse
from aws_lambda_powertools.utilities.parser.models import EventBridgeModel
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

DEFAULT_SOURCE: Final = "hpp-tracker"
STATUS_CHANGED: Final = "HPP Session Status Changed"
COMPLETED: Final = "HPP Session Completed"
SCHEMA_VERSION: Final = "1"

_TIMESTAMP = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def _stored_timestamp(value: object) -> datetime:
    """The tracker's one timestamp form (UTC, milliseconds, `Z`), and nothing else, as a UTC datetime."""
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str) or not _TIMESTAMP.fullmatch(value):
        raise ValueError("must be a UTC timestamp with milliseconds, e.g. 2019-05-13T14:54:04.675Z")
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def _timestamp_text(moment: datetime) -> str:
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


Timestamp = Annotated[
    datetime,
    BeforeValidator(_stored_timestamp),
    PlainSerializer(_timestamp_text, return_type=str, when_used="json"),
]
EventId = Annotated[str, Field(pattern=f"^{_UUID.pattern}$")]
NonEmpty = Annotated[str, Field(min_length=1)]


class _Detail(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    event_id: EventId = Field(description="The same for every copy of this event: de-duplicate on it.")
    schema_version: Literal["1"]
    session_id: NonEmpty
    updated_at: Timestamp
    expires_at: Timestamp | None


class StatusChangedDetail(_Detail):
    """The detail of `HPP Session Status Changed`: a stored status change. Never the token."""

    status: NonEmpty
    previous_status: NonEmpty | None


class CompletedDetail(_Detail):
    """The detail of `HPP Session Completed`: the token (Klarna Payments, valid 60 minutes), or the order
    Klarna placed (`order_id` and `klarna_reference`)."""

    status: Literal["COMPLETED"]
    authorization_token: Annotated[SecretStr, Field(min_length=1)] | None = None
    order_id: NonEmpty | None = None
    klarna_reference: NonEmpty | None = None

    @field_validator("authorization_token", "order_id", "klarna_reference", mode="before")
    @classmethod
    def _absent_rather_than_null(cls, value: object) -> object:
        if value is None:
            raise ValueError("is left out when it does not apply, never null")
        return value

    @model_validator(mode="after")
    def _token_or_order(self) -> "CompletedDetail":
        has_order = self.order_id is not None or self.klarna_reference is not None
        if (self.authorization_token is None) != has_order:
            raise ValueError("carries either authorization_token or order_id + klarna_reference")
        if has_order and (self.order_id is None or self.klarna_reference is None):
            raise ValueError("order_id and klarna_reference come together")
        return self


class SessionStatusChanged(EventBridgeModel):
    detail_type: Literal["HPP Session Status Changed"] = Field(alias="detail-type")
    detail: StatusChangedDetail


class SessionCompleted(EventBridgeModel):
    detail_type: Literal["HPP Session Completed"] = Field(alias="detail-type")
    detail: CompletedDetail


TrackerEvent = SessionStatusChanged | SessionCompleted
_MODELS: Final[dict[str, type[TrackerEvent]]] = {
    STATUS_CHANGED: SessionStatusChanged,
    COMPLETED: SessionCompleted,
}


class NotATrackerEvent(ValueError):
    """Not an event of the tracker: another source, another detail type, or no EventBridge event at all."""


class BrokenTrackerEvent(ValueError):
    """An event with the tracker's source and detail type whose content breaks its schema."""


@overload
def parse_event(event: Mapping[str, Any] | str | bytes, *, source: str = DEFAULT_SOURCE) -> TrackerEvent: ...
@overload
def parse_event[E: (SessionStatusChanged, SessionCompleted)](
    event: Mapping[str, Any] | str | bytes, model: type[E], *, source: str = DEFAULT_SOURCE
) -> E: ...
def parse_event[E: (SessionStatusChanged, SessionCompleted)](
    event: Mapping[str, Any] | str | bytes,
    model: type[E] | None = None,
    *,
    source: str = DEFAULT_SOURCE,
) -> TrackerEvent:
    """The tracker's event in an EventBridge envelope (a dict, or its JSON text such as an SQS body).

    `model` limits it to one type (e.g. `SessionCompleted`: a Status Changed event is then not one of
    yours); `source` is the tracker's `EventSource` parameter.
    """
    try:
        data = json.loads(event) if isinstance(event, str | bytes) else dict(event)
        envelope = parse(event=data, model=EventBridgeModel)
    except (ValidationError, ValueError, TypeError) as exc:
        raise NotATrackerEvent(f"not an EventBridge event: {_problems(exc)}") from None
    if envelope.source != source:
        raise NotATrackerEvent(f"source {envelope.source[:64]!r} is not {source!r}")
    wanted = _MODELS if model is None else {_detail_type(model): model}
    typed = wanted.get(envelope.detail_type)
    if typed is None:
        raise NotATrackerEvent(f"detail-type {envelope.detail_type[:64]!r} is not {' or '.join(wanted)}")
    try:
        return parse(event=data, model=typed)
    except ValidationError as exc:
        raise BrokenTrackerEvent(f"{envelope.detail_type} breaks its schema: {_problems(exc)}") from None


def _detail_type(model: type[TrackerEvent]) -> str:
    return next(name for name, known in _MODELS.items() if known is model)


def _problems(error: Exception) -> str:
    """`field: problem` for each error, never the input (it may hold the token)."""
    if not isinstance(error, ValidationError):
        return type(error).__name__
    return "; ".join(
        f"{'.'.join(str(part) for part in item['loc']) or 'event'}: {item['msg']}"
        for item in error.errors(include_input=False, include_url=False, include_context=False)
    )


__all__ = [
    "COMPLETED",
    "DEFAULT_SOURCE",
    "SCHEMA_VERSION",
    "STATUS_CHANGED",
    "BrokenTrackerEvent",
    "CompletedDetail",
    "NotATrackerEvent",
    "SessionCompleted",
    "SessionStatusChanged",
    "StatusChangedDetail",
    "Timestamp",
    "TrackerEvent",
    "parse_event",
]
