"""From a sessions-table stream record to the events on the bus (docs/events.md).

The table's stream is the outbox: a stored status change becomes one `HPP Session Status Changed` event,
and a change into COMPLETED also one `HPP Session Completed` event carrying the `authorization_token`
(Klarna Payments) or the `order_id` and `klarna_reference` (PLACE_ORDER / CAPTURE_ORDER / Klarna
Checkout). Which events a record makes is decided here from its images alone, whatever the event source
mapping's filter let through (the filter is only an optimisation), and each event's id is derived from
the transition itself, so the same record delivered again yields the same ids.

An image is the row a read returns, so it is read into the one model of a session, `TrackedSession`,
by the repository's own mapping (`repository.session_from_image`); the events are built from that model
(`events_for_session`), and their timestamps are written in the one stored form (UTC, milliseconds, `Z`)
whatever wrote the row.

The images hold the token and the callback secret's hash: nothing here logs them or puts them in an
error message. The token stays a `SecretStr` until `BusEvent.detail_json()` writes the event's detail.
"""

import json
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final, Literal

from aws_lambda_powertools.utilities.data_classes.dynamo_db_stream_event import DynamoDBRecord, StreamRecord
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from hpp_core.models import TrackedSession, describe_validation_error
from hpp_core.repository import session_from_image, session_id_in_key
from hpp_core.settings import EnvironmentSettings
from hpp_core.statuses import Status
from hpp_core.timestamps import format_timestamp

STATUS_CHANGED: Final = "HPP Session Status Changed"
COMPLETED: Final = "HPP Session Completed"
DetailType = Literal["HPP Session Status Changed", "HPP Session Completed"]

# The detail's contract version (schemas/*.json). A change that could break a consumer is a new major.
SCHEMA_VERSION: Final = "1"

# Fixed for ever: every event id is a UUIDv5 in this namespace, so changing it would change every id.
EVENT_ID_NAMESPACE: Final = uuid.UUID("6f2b8a4e-3c1d-5e7f-9a0b-1c2d3e4f5a6b")


class PublisherSettings(EnvironmentSettings):
    """The publisher needs the bus and the source only: no table name, no Klarna credentials."""

    # A bus name or ARN, as PutEvents' EventBusName takes it.
    event_bus_name: str = Field(alias="EVENT_BUS_NAME", min_length=1, max_length=1600)
    # Consumers' rules match this exact value (the template's EventSource parameter has the same rule).
    event_source: str = Field(
        alias="EVENT_SOURCE", default="hpp-tracker", pattern=r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,255}$"
    )

    @field_validator("event_source")
    @classmethod
    def _not_reserved(cls, value: str) -> str:
        if value.startswith("aws."):
            raise ValueError("sources starting with 'aws.' are reserved by EventBridge")
        return value


class UnpublishableRecord(ValueError):
    """A stream record that cannot become events as it stands (a malformed or incomplete row).

    Its record is reported as failed like any other, so Lambda retries it within the mapping's bounds
    and then sends it to the on-failure queue, where the alarm makes it seen. The message names the
    session and what is wrong, never a value from the row.
    """


class SessionChange(BaseModel):
    """One stream record: the session as the row was (old) and as it is now (new)."""

    model_config = ConfigDict(frozen=True)

    event_name: Literal["INSERT", "MODIFY", "REMOVE"]
    old: TrackedSession | None
    new: TrackedSession | None
    # When DynamoDB wrote the change (the record's ApproximateCreationDateTime): the events' time.
    stored_at: datetime | None = None

    @property
    def previous_status(self) -> str | None:
        return self.old.status if self.old else None

    @property
    def status_changed(self) -> bool:
        """A new row, or a row whose status differs from before; never a removal (TTL)."""
        return self.new is not None and self.new.status != self.previous_status


class StatusChangedDetail(BaseModel):
    model_config = ConfigDict(frozen=True)

    event_id: str
    schema_version: str = SCHEMA_VERSION
    session_id: str
    status: str
    previous_status: str | None
    updated_at: str
    expires_at: str | None


class CompletedDetail(BaseModel):
    model_config = ConfigDict(frozen=True)

    event_id: str
    schema_version: str = SCHEMA_VERSION
    session_id: str
    status: str
    updated_at: str
    expires_at: str | None
    authorization_token: SecretStr | None = None
    order_id: str | None = None
    klarna_reference: str | None = None


class BusEvent(BaseModel):
    """One event to put on the bus. Its repr masks the token; `detail_json()` is the only way to it."""

    model_config = ConfigDict(frozen=True)

    detail_type: DetailType
    detail: StatusChangedDetail | CompletedDetail
    time: datetime | None = None

    @property
    def event_id(self) -> str:
        return self.detail.event_id

    @property
    def session_id(self) -> str:
        return self.detail.session_id

    @property
    def status(self) -> str:
        return self.detail.status

    def detail_json(self) -> str:
        """The event's Detail exactly as published (the token revealed, absent alternatives left out)."""
        data: dict[str, Any] = self.detail.model_dump(mode="json", exclude={"authorization_token"})
        if isinstance(self.detail, CompletedDetail):
            for name in ("order_id", "klarna_reference"):
                if data[name] is None:
                    del data[name]
            if self.detail.authorization_token is not None:
                data["authorization_token"] = self.detail.authorization_token.get_secret_value()
        return _compact_json(data)


def event_id(detail_type: str, session_id: str, status: str, transition_ms: int) -> str:
    """The same id whenever the same stored transition is published again (re-delivery, retry, replay
    of the stream), and a different one for any other transition: (session, status, updated_at) names
    one write, since the conditional write never stores the same status at the same instant twice."""
    return str(uuid.uuid5(EVENT_ID_NAMESPACE, f"{detail_type}\n{session_id}\n{status}\n{transition_ms}"))


def change_from_record(record: DynamoDBRecord) -> SessionChange:
    """Read a stream record (as Lambda delivers it) into a `SessionChange`, or say why it cannot be read.

    Each image is the row a read would return, so it becomes a `TrackedSession` through the repository's
    one row-to-model mapping.
    """
    stream = record.dynamodb
    if stream is None:
        raise UnpublishableRecord("stream record without its 'dynamodb' section")
    key = _session_key(stream)
    sessions, problems = _sessions_in_images(stream, key)
    stored_at = stream.approximate_creation_date_time
    try:
        change = SessionChange.model_validate(
            {
                "event_name": record.raw_event.get("eventName"),
                **sessions,
                "stored_at": datetime.fromtimestamp(stored_at, UTC) if stored_at is not None else None,
            }
        )
    except ValidationError as exc:
        problems += describe_validation_error(exc)
    if problems:
        raise UnpublishableRecord(f"session {key}: {'; '.join(problems)}")
    return change


def _sessions_in_images(stream: StreamRecord, key: str) -> tuple[dict[str, TrackedSession | None], list[str]]:
    """The record's old and new sessions (None for an image that holds none), and what is wrong with
    each image that holds no valid one."""
    try:
        images = {"old": stream.old_image, "new": stream.new_image}
    except (TypeError, ValueError, KeyError, ArithmeticError):  # a shape TypeDeserializer cannot read
        raise UnpublishableRecord(f"session {key}: an image holds an unreadable attribute") from None
    sessions: dict[str, TrackedSession | None] = {}
    problems: list[str] = []
    for name, image in images.items():
        try:
            sessions[name] = session_from_image(image)
        except ValidationError as exc:
            # describe_validation_error never echoes the input: the images hold the token.
            problems += describe_validation_error(exc, prefix=f"{name}.")
            sessions[name] = None
    return sessions, problems


def events_for_change(change: SessionChange) -> list[BusEvent]:
    """The events one stored change publishes: none unless the status changed, else those of
    `events_for_session` (a row first stored COMPLETED included)."""
    if change.new is None or not change.status_changed:
        return []
    return events_for_session(change.new, previous_status=change.previous_status, time=change.stored_at)


def events_for_record(record: DynamoDBRecord) -> list[BusEvent]:
    """The record handler's whole job: read the record, decide its events."""
    return events_for_change(change_from_record(record))


def events_for_session(
    session: TrackedSession, *, previous_status: str | None, time: datetime | None
) -> list[BusEvent]:
    """The events of a session's arrival at its stored status: Status Changed always, Completed too when
    it is COMPLETED. The ids depend on the stored transition alone, so building the events of the same
    stored session again yields the same ids.
    """
    events = [_status_changed(session, previous_status, time)]
    if session.status == Status.COMPLETED:
        events.append(_completed(session, time))
    return events


def _status_changed(session: TrackedSession, previous_status: str | None, time: datetime | None) -> BusEvent:
    detail = StatusChangedDetail(
        event_id=event_id(STATUS_CHANGED, session.session_id, session.status, session.updated_at_ms),
        session_id=session.session_id,
        status=session.status,
        previous_status=previous_status,
        updated_at=format_timestamp(session.updated_at),
        expires_at=_expires_at_text(session),
    )
    return BusEvent(detail_type=STATUS_CHANGED, detail=detail, time=time)


def _completed(session: TrackedSession, time: datetime | None) -> BusEvent:
    token = session.authorization_token
    has_token = token is not None and bool(token.get_secret_value())
    has_order = bool(session.order_id)
    if has_token == has_order:
        found = "both an authorization_token and an order_id" if has_token else "neither"
        raise UnpublishableRecord(
            f"session {session.session_id} is COMPLETED with {found}: a Completed event carries exactly "
            "one of authorization_token or order_id + klarna_reference"
        )
    if has_order and not session.klarna_reference:
        raise UnpublishableRecord(
            f"session {session.session_id} is COMPLETED with an order_id but no klarna_reference"
        )
    detail = CompletedDetail(
        event_id=event_id(COMPLETED, session.session_id, session.status, session.updated_at_ms),
        session_id=session.session_id,
        status=session.status,
        updated_at=format_timestamp(session.updated_at),
        expires_at=_expires_at_text(session),
        authorization_token=token if has_token else None,
        order_id=session.order_id if has_order else None,
        klarna_reference=session.klarna_reference if has_order else None,
    )
    return BusEvent(detail_type=COMPLETED, detail=detail, time=time)


def _expires_at_text(session: TrackedSession) -> str | None:
    return format_timestamp(session.expires_at) if session.expires_at else None


def _session_key(stream: StreamRecord) -> str:
    """The record's session id for messages, or '?' when its key holds none that can be read."""
    try:
        key = session_id_in_key(stream.keys)
    except (TypeError, ValueError, KeyError, ArithmeticError):
        key = None
    return key[:128] if key else "?"


def _compact_json(data: Mapping[str, Any]) -> str:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)
